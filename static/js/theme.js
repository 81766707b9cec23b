// Light, dark, or following the system: applied server-side as <html data-theme>, switched here
// and remembered for the member (/api/account/).
import { api } from "./api.js";

const ORDER = ["", "light", "dark"];

export function setupThemeToggle(button) {
  if (!button) return;
  const label = (choice) => button.dataset[`label${choice ? choice[0].toUpperCase() + choice.slice(1) : "System"}`];
  const show = (choice) => {
    button.dataset.themeChoice = choice;
    button.title = label(choice);
    button.setAttribute("aria-label", label(choice));
  };
  show(button.dataset.themeChoice || "");
  // Saves go one after another, so quick clicks end on the server where they end on screen.
  let saving = Promise.resolve();
  button.addEventListener("click", () => {
    const before = document.documentElement.dataset.theme || "";
    const next = ORDER[(ORDER.indexOf(before) + 1) % ORDER.length];
    document.documentElement.dataset.theme = next;
    show(next);
    saving = saving.then(() => api.saveAccount({ theme: next })).catch(() => {
      if (document.documentElement.dataset.theme === next) { // not changed again meanwhile
        document.documentElement.dataset.theme = before;
        show(before);
      }
    });
  });
}

export function setupLanguageSwitch(form) {
  if (!form) return;
  const go = form.querySelector(".language-go");
  if (go) go.hidden = true; // the choice applies as soon as it is made
  form.querySelector("select").addEventListener("change", () => form.submit());
}
