// A conversation's export menu: JSON (every branch, which imports back) or Markdown (the branch
// on screen), downloaded from /api/conversations/<id>/export. Closes on a choice, a click
// elsewhere, or Escape (focus goes back to its button).
import { api } from "./api.js";

export function setupExportMenu({ root, button, menu }) {
  const links = [...menu.querySelectorAll("a[data-format]")];

  function setOpen(open) {
    menu.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) links[0].focus();
  }

  button.addEventListener("click", () => setOpen(menu.hidden));
  for (const link of links) link.addEventListener("click", () => setOpen(false));
  document.addEventListener("pointerdown", (event) => {
    if (!menu.hidden && !root.contains(event.target)) setOpen(false);
  });
  root.addEventListener("keydown", (event) => {
    if (menu.hidden) return;
    if (event.key === "Escape") {
      event.preventDefault();
      setOpen(false);
      button.focus();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const at = links.indexOf(document.activeElement);
      const step = event.key === "ArrowDown" ? 1 : -1;
      links[(at + step + links.length) % links.length].focus();
    }
  });
  root.addEventListener("focusout", (event) => {
    if (!menu.hidden && event.relatedTarget && !root.contains(event.relatedTarget)) setOpen(false);
  });

  return {
    /** The conversation to export (null on a new chat: no menu). */
    show(conversationId) {
      root.hidden = !conversationId;
      if (!conversationId) { setOpen(false); return; }
      for (const link of links) link.href = api.exportUrl(conversationId, link.dataset.format);
    },
  };
}
