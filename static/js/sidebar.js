// The member's conversations: newest first, grouped by day, searched on the server (?q=,
// debounced), renamed inline and deleted after a confirmation; live from the member frames.
import { api } from "./api.js";
import { errorText, gettext } from "./i18n.js";

const SEARCH_DELAY_MS = 250;
const DAY_MS = 86400000;

function groupOf(updatedAt, now) {
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const when = new Date(updatedAt).getTime();
  if (when >= startOfToday) return "today";
  if (when >= startOfToday - DAY_MS) return "yesterday";
  if (when >= startOfToday - 7 * DAY_MS) return "week";
  return "older";
}

const GROUP_NAMES = {
  today: () => gettext("Today"),
  yesterday: () => gettext("Yesterday"),
  week: () => gettext("Previous 7 days"),
  older: () => gettext("Older"),
};

export function setupSidebar({ root, listEl, search, toggle, backdrop, confirmDialog, currentId, initial, onError }) {
  let conversations = new Map(initial.map((c) => [c.id, c]));
  let current = currentId;
  let query = "";
  let searchTimer = null;
  let searchSeq = 0;

  const sorted = () => [...conversations.values()].sort((a, b) => (a.updated_at < b.updated_at ? 1 : -1));

  function draw() {
    const now = new Date();
    const groups = new Map();
    for (const c of sorted()) {
      const key = groupOf(c.updated_at, now);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(c);
    }
    const parts = [];
    for (const key of ["today", "yesterday", "week", "older"]) {
      if (!groups.has(key)) continue;
      const section = document.createElement("section");
      section.className = "conversation-group";
      const heading = document.createElement("h2");
      heading.textContent = GROUP_NAMES[key]();
      const ul = document.createElement("ul");
      for (const c of groups.get(key)) ul.append(item(c));
      section.append(heading, ul);
      parts.push(section);
    }
    if (!parts.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = query ? gettext("No conversation matches.") : gettext("No conversations yet.");
      parts.push(empty);
    }
    listEl.replaceChildren(...parts);
  }

  function item(c) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    if (c.id === current) li.className = "current";
    const link = document.createElement("a");
    link.href = `/c/${c.id}/`;
    link.className = "conversation-link";
    link.textContent = c.title || gettext("New chat"); // titles are text, never HTML
    if (c.id === current) link.setAttribute("aria-current", "page");
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "rename";
    rename.title = gettext("Rename");
    rename.setAttribute("aria-label", `${gettext("Rename")}: ${c.title || gettext("New chat")}`);
    rename.textContent = "✎";
    rename.addEventListener("click", () => startRename(li, c));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.title = gettext("Delete");
    remove.setAttribute("aria-label", `${gettext("Delete")}: ${c.title || gettext("New chat")}`);
    remove.textContent = "✕";
    remove.addEventListener("click", () => confirmDelete(c));
    li.append(link, rename, remove);
    return li;
  }

  function startRename(li, c) {
    const box = document.createElement("input");
    box.type = "text";
    box.className = "rename-box";
    box.value = c.title;
    box.maxLength = 200;
    box.setAttribute("aria-label", gettext("New title"));
    li.replaceChildren(box);
    box.focus();
    box.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = box.value.trim();
      if (save && title && title !== c.title) {
        try {
          upsert(await api.updateConversation(c.id, { title }));
        } catch (error) {
          onError(errorText(error.code, null, error.message));
        }
      }
      draw();
    };
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing && event.keyCode !== 229) { event.preventDefault(); finish(true); }
      if (event.key === "Escape") finish(false);
    });
    box.addEventListener("blur", () => finish(true));
  }

  function confirmDelete(c) {
    confirmDialog.querySelector(".confirm-name").textContent = c.title || gettext("New chat");
    confirmDialog.returnValue = "";
    confirmDialog.addEventListener("close", async () => {
      if (confirmDialog.returnValue !== "delete") return;
      try {
        await api.deleteConversation(c.id);
        remove(c.id);
        if (c.id === current) location.assign("/");
      } catch (error) {
        onError(errorText(error.code, null, error.message));
      }
    }, { once: true });
    confirmDialog.showModal();
  }

  function upsert(c) {
    if (query) { refreshSearch(); return; }
    conversations.set(c.id, c);
    draw();
  }

  function remove(id) {
    conversations.delete(id);
    draw();
  }

  async function refreshSearch() {
    const seq = ++searchSeq;
    try {
      const found = await api.listConversations(query);
      if (seq !== searchSeq) return; // a newer search answered first
      conversations = new Map(found.map((c) => [c.id, c]));
      draw();
    } catch (error) {
      onError(errorText(error.code, null, error.message));
    }
  }

  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      query = search.value.trim();
      refreshSearch();
    }, SEARCH_DELAY_MS);
  });

  // On a phone the list is a drawer.
  const setOpen = (open) => {
    document.body.classList.toggle("sidebar-open", open);
    toggle.setAttribute("aria-expanded", String(open));
    backdrop.hidden = !open;
  };
  toggle.addEventListener("click", () => setOpen(!document.body.classList.contains("sidebar-open")));
  backdrop.addEventListener("click", () => setOpen(false));
  root.addEventListener("keydown", (event) => { if (event.key === "Escape") setOpen(false); });

  draw();
  return {
    upsert,
    remove,
    setCurrent(id) { current = id; draw(); },
    close: () => setOpen(false),
  };
}
