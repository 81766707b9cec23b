// What every page has: the theme switch and the language switch.
import { setupLanguageSwitch, setupThemeToggle } from "./theme.js";

setupThemeToggle(document.getElementById("theme-toggle"));
setupLanguageSwitch(document.querySelector(".language-switch"));
