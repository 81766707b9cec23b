// The account page's script: the member's presets (make one the default, delete their own),
// and importing a file of conversations (the server's words for a bad file, links to what came in).
import { api } from "./api.js";
import { errorText, fill, gettext, ngettext } from "./i18n.js";

const $ = (id) => document.getElementById(id);

function say(box, text) {
  box.textContent = text || "";
  box.hidden = !text;
}

function button(label, className, title) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.textContent = label;
  if (title) el.setAttribute("aria-label", title);
  return el;
}

function setupPresets() {
  const list = $("preset-list");
  const empty = $("preset-empty");
  const problem = $("preset-error");
  const confirm = $("confirm-preset-delete");
  let presets = [];
  let defaultId = null;

  function item(preset) {
    const li = document.createElement("li");
    li.dataset.id = preset.id;
    const name = document.createElement("span");
    name.className = "preset-name";
    name.textContent = preset.name; // names are text
    const meta = document.createElement("span");
    meta.className = "preset-meta";
    const params = Object.keys(preset.params || {}).join(", ");
    meta.textContent = [preset.model || gettext("your default model"), params].filter(Boolean).join(" · ");
    li.append(name);
    if (preset.team) {
      const team = document.createElement("span");
      team.className = "badge";
      team.textContent = gettext("Team");
      li.append(team);
    }
    if (preset.id === defaultId) {
      const badge = document.createElement("span");
      badge.className = "badge default-badge";
      badge.textContent = gettext("Default");
      li.append(badge);
    }
    li.append(meta);
    const actions = document.createElement("span");
    actions.className = "preset-actions";
    if (preset.id === defaultId) {
      const clear = button(gettext("No longer default"), "clear-default",
        fill(gettext("Stop starting new chats from %(name)s"), { name: preset.name }));
      clear.addEventListener("click", () => makeDefault(null));
      actions.append(clear);
    } else {
      const make = button(gettext("Make default"), "make-default",
        fill(gettext("Start new chats from %(name)s"), { name: preset.name }));
      make.addEventListener("click", () => makeDefault(preset.id));
      actions.append(make);
    }
    if (!preset.team) {
      const remove = button(gettext("Delete"), "delete", fill(gettext("Delete %(name)s"), { name: preset.name }));
      remove.addEventListener("click", () => askToDelete(preset));
      actions.append(remove);
    }
    li.append(actions);
    return li;
  }

  function draw() {
    list.replaceChildren(...presets.map(item));
    empty.hidden = presets.length > 0;
  }

  async function makeDefault(id) {
    say(problem, "");
    try {
      const account = await api.saveAccount({ default_preset: id });
      defaultId = account.default_preset;
      draw();
    } catch (error) {
      say(problem, errorText(error.code, error.detail, error.message));
    }
  }

  function askToDelete(preset) {
    confirm.querySelector(".confirm-name").textContent = preset.name;
    confirm.returnValue = "";
    confirm.addEventListener("close", async () => {
      if (confirm.returnValue !== "delete") return;
      say(problem, "");
      try {
        await api.deletePreset(preset.id);
        presets = presets.filter((p) => p.id !== preset.id);
        if (defaultId === preset.id) defaultId = null; // the server forgot it too
        draw();
      } catch (error) {
        say(problem, errorText(error.code, error.detail, error.message));
      }
    }, { once: true });
    confirm.showModal();
  }

  Promise.all([api.presets(), api.account()]).then(([list, account]) => {
    presets = list;
    defaultId = account.default_preset;
    draw();
  }).catch((error) => say(problem, errorText(error.code, error.detail, error.message)));
}

function setupImport() {
  const form = $("import-form");
  const file = $("import-file");
  const submit = $("import-submit");
  const result = $("import-result");
  const problem = $("import-error");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(problem, "");
    result.hidden = true;
    const chosen = file.files && file.files[0];
    if (!chosen) { say(problem, gettext("Choose a file to import.")); return; }
    submit.disabled = true;
    try {
      const answer = await api.importFile(chosen);
      const count = answer.imported.length;
      const heading = document.createElement("p");
      heading.textContent = fill(ngettext("Imported %(count)s conversation:", "Imported %(count)s conversations:", count), { count });
      const links = document.createElement("ul");
      for (const conversation of answer.imported) {
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = `/c/${conversation.id}/`;
        link.textContent = conversation.title || gettext("New chat"); // titles are text
        const messages = document.createElement("span");
        messages.className = "hint";
        messages.textContent = ` (${fill(ngettext("%(count)s message", "%(count)s messages", conversation.messages), { count: conversation.messages })})`;
        li.append(link, messages);
        links.append(li);
      }
      result.replaceChildren(heading, links);
      result.hidden = false;
      form.reset();
    } catch (error) {
      // The server says what is wrong and where ("conversation 3, message 12: …"), in the member's language.
      const words = error.code === "invalid" || error.code === "too_large"
        ? error.serverMessage || errorText(error.code, error.detail, error.message)
        : errorText(error.code, error.detail, error.message);
      say(problem, fill(gettext("Nothing was imported: %(reason)s"), { reason: words }));
    } finally {
      submit.disabled = false;
    }
  });
}

setupPresets();
setupImport();
