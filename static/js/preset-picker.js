// The preset picker of a new chat: the member's presets and the team's (/api/presets/), the
// member's default preset (/api/account/) chosen to begin with. Choosing one applies its model,
// system prompt and parameters to the chat the first send creates (POST takes `preset`).
import { api } from "./api.js";
import { errorText, gettext } from "./i18n.js";

/**
 * root: the picker's box (shown once there is something to pick); select: its <select>.
 * onPick(preset or null, initial): the member chose (initial: the default preset, or none, once
 * the lists arrive); null is "no preset".
 */
export function setupPresetPicker({ root, select, onPick, onError }) {
  let presets = [];
  let loaded = false;

  function option(preset) {
    const el = document.createElement("option");
    el.value = preset.id;
    el.textContent = preset.name; // a name is text
    return el;
  }

  function draw(chosen) {
    const none = document.createElement("option");
    none.value = "";
    none.textContent = gettext("No preset");
    const groups = [none];
    const own = presets.filter((p) => !p.team);
    const team = presets.filter((p) => p.team);
    for (const [label, members] of [[gettext("Your presets"), own], [gettext("Team presets"), team]]) {
      if (!members.length) continue;
      const group = document.createElement("optgroup");
      group.label = label;
      group.append(...members.map(option));
      groups.push(group);
    }
    select.replaceChildren(...groups);
    select.value = chosen || "";
    root.hidden = presets.length === 0;
  }

  const byId = (id) => presets.find((p) => p.id === id) || null;

  select.addEventListener("change", () => onPick(byId(select.value), false));

  Promise.all([api.presets(), api.account()]).then(([list, account]) => {
    presets = list;
    loaded = true;
    const preset = account.default_preset ? byId(account.default_preset) : null;
    draw(preset ? preset.id : "");
    onPick(preset, true);
  }).catch((error) => {
    root.hidden = true;
    onError(errorText(error.code, error.detail, error.message));
  });

  return {
    /** A preset saved meanwhile (from the settings panel) joins the list. */
    add(preset) {
      if (!loaded) return;
      presets = [...presets.filter((p) => p.id !== preset.id), preset]
        .sort((a, b) => (a.team - b.team) || a.name.localeCompare(b.name));
      draw(select.value);
    },
    hide() { root.hidden = true; },
  };
}
