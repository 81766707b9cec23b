// The model picker (fed by /api/models/) and the conversation's settings panel: system prompt
// and the Chat Completions parameters (token probabilities and logit bias among them), each
// validated here first and then by the server, whose words appear next to the field they are
// about; and "Save as preset", which keeps them as one of the member's presets.
import { api } from "./api.js";
import { errorText, fill, gettext } from "./i18n.js";

const NUMBERS = {
  temperature: { min: 0, max: 2, integer: false },
  top_p: { min: 0, max: 1, integer: false },
  presence_penalty: { min: -2, max: 2, integer: false },
  frequency_penalty: { min: -2, max: 2, integer: false },
  max_tokens: { min: 1, max: 1000000, integer: true },
  seed: { min: -(2 ** 63), max: 2 ** 63 - 1, integer: true },
  top_logprobs: { min: 0, max: 5, integer: true },
};

/** The logit bias box: "" (none), or {token id: bias} checked the way the server checks it. */
function readLogitBias(raw) {
  if (!raw.trim()) return { value: null };
  let value;
  try { value = JSON.parse(raw); } catch { value = undefined; }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return { error: gettext("Logit bias must be a JSON object, e.g. {\"50256\": -100}.") };
  }
  for (const [token, bias] of Object.entries(value)) {
    if (!/^[0-9]+$/.test(token)) return { error: gettext("Logit bias keys must be token ids (whole numbers).") };
    if (typeof bias !== "number" || bias < -100 || bias > 100) {
      return { error: fill(gettext("The bias of token %(token)s must be a number from -100 to 100."), { token }) };
    }
  }
  return { value };
}

/** Read the form into {system_prompt, params} or {errors: {field: message}}; null removes a parameter. */
export function readSettings(form) {
  const errors = {};
  const params = {};
  for (const [name, rule] of Object.entries(NUMBERS)) {
    const raw = form.elements[name].value.trim();
    if (raw === "") { params[name] = null; continue; }
    const value = Number(raw);
    if (!Number.isFinite(value) || value < rule.min || value > rule.max || (rule.integer && !Number.isInteger(value))) {
      errors[`params.${name}`] = fill(rule.integer ? gettext("A whole number from %(min)s to %(max)s.") : gettext("A number from %(min)s to %(max)s."),
        { min: rule.min, max: rule.max });
      continue;
    }
    params[name] = value;
  }
  const stops = form.elements.stop.value.split("\n").filter((line) => line !== "");
  if (stops.length > 4) errors["params.stop"] = gettext("At most 4 stop sequences.");
  else if (stops.some((s) => s.length > 100)) errors["params.stop"] = gettext("A stop sequence has at most 100 characters.");
  else params.stop = stops.length === 0 ? null : stops.length === 1 ? stops[0] : stops;
  const format = form.elements.response_format.value;
  if (!format) params.response_format = null;
  else if (format !== "json_schema") params.response_format = { type: format };
  else {
    try {
      const schema = JSON.parse(form.elements.json_schema.value);
      if (!schema || typeof schema !== "object" || Array.isArray(schema)) throw new Error("not an object");
      params.response_format = { type: "json_schema", json_schema: schema };
    } catch {
      errors["params.response_format"] = gettext("The JSON schema must be a JSON object.");
    }
  }
  params.logprobs = form.elements.logprobs.checked ? true : null;
  if (params.top_logprobs && !params.logprobs) {
    errors["params.top_logprobs"] = gettext("Alternatives need the token probabilities kept.");
  }
  const bias = readLogitBias(form.elements.logit_bias.value);
  if (bias.error) errors["params.logit_bias"] = bias.error; else params.logit_bias = bias.value;
  return { system_prompt: form.elements.system_prompt.value, params, errors };
}

function fillForm(form, conversation) {
  const params = conversation.params || {};
  form.elements.system_prompt.value = conversation.system_prompt || "";
  for (const name of Object.keys(NUMBERS)) form.elements[name].value = params[name] ?? "";
  const stop = params.stop ?? "";
  form.elements.stop.value = Array.isArray(stop) ? stop.join("\n") : stop;
  const format = params.response_format || null;
  form.elements.response_format.value = format ? format.type : "";
  form.elements.json_schema.value = format && format.json_schema ? JSON.stringify(format.json_schema, null, 2) : "";
  form.elements.json_schema.hidden = form.elements.response_format.value !== "json_schema";
  form.elements.logprobs.checked = params.logprobs === true;
  form.elements.logit_bias.value = params.logit_bias ? JSON.stringify(params.logit_bias) : "";
}

/** Parameters as a preset keeps them: the ones set (null means "not set" in the form). */
const setOnly = (params) => Object.fromEntries(Object.entries(params).filter(([, value]) => value !== null));

/** Each error next to its field (`data-field`), the rest in `formError`. */
function showFieldErrors(form, formError, errors) {
  for (const field of form.querySelectorAll(".field")) {
    const messages = errors[field.dataset.field];
    const words = Array.isArray(messages) ? messages.join(" ") : (messages || "");
    field.classList.toggle("invalid", Boolean(words));
    field.querySelector(".field-error").textContent = words;
    const control = field.querySelector("input, textarea, select");
    if (control) control.setAttribute("aria-invalid", String(Boolean(words)));
  }
  const shownSomewhere = Object.keys(errors).some((key) => form.querySelector(`.field[data-field="${CSS.escape(key)}"]`));
  formError.textContent = !shownSomewhere && errors.__all__ ? errors.__all__ : "";
}

/**
 * picker, dialog, openButton: elements. getConversation(): the conversation (or the draft of a
 * new chat). save(fields): persists (PATCH) or keeps them for the first send; rejects with an ApiError.
 * presetDialog: the "Save as preset" name dialog; onPresetSaved(preset): a preset was made.
 */
export function setupSettings({ picker, dialog, openButton, getConversation, save, defaultModel, presetDialog, onPresetSaved }) {
  const form = dialog.querySelector("form");
  const formError = dialog.querySelector("#settings-error");
  const status = dialog.querySelector("#settings-status");
  const showErrors = (errors) => showFieldErrors(form, formError, errors);

  form.elements.response_format.addEventListener("change", () => {
    form.elements.json_schema.hidden = form.elements.response_format.value !== "json_schema";
  });
  openButton.addEventListener("click", () => {
    fillForm(form, getConversation());
    showErrors({});
    status.textContent = "";
    dialog.showModal();
  });
  dialog.querySelector("#settings-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const read = readSettings(form);
    showErrors(read.errors);
    if (Object.keys(read.errors).length) return;
    try {
      await save({ system_prompt: read.system_prompt, params: read.params });
      dialog.close();
    } catch (error) {
      const fields = { ...error.fields };
      if (fields.params && !Object.keys(fields).some((k) => k.startsWith("params."))) fields.__all__ = fields.params.join(" ");
      if (!Object.keys(fields).length) fields.__all__ = errorText(error.code, null, error.message);
      showErrors(fields);
    }
  });

  // The model picker: each choice is a model on a provider ("" is the team's default server).
  let offered = []; // [{id, provider}]
  const key = (choice) => JSON.stringify([choice.provider || "", choice.id]);
  function drawPicker(current) {
    const choices = [...offered];
    if (current && !choices.some((c) => c.id === current.model)) choices.push({ id: current.model, provider: current.provider || "" });
    picker.replaceChildren(...choices.map((choice) => {
      const option = document.createElement("option");
      option.value = key(choice);
      option.textContent = choice.provider ? `${choice.id} · ${choice.provider}` : choice.id;
      return option;
    }));
    const selected = choices.find((c) => c.id === current.model && (current.provider === undefined || (c.provider || "") === (current.provider || "")))
      || choices.find((c) => c.id === current.model);
    if (selected) picker.value = key(selected);
  }
  const currentChoice = () => {
    const conversation = getConversation();
    return { model: conversation.model || defaultModel, provider: conversation.provider };
  };
  picker.addEventListener("change", async () => {
    const [provider, model] = JSON.parse(picker.value);
    try {
      await save({ model, provider });
    } catch (error) {
      drawPicker(currentChoice());
      showPickerError(error);
    }
  });
  let pickerNote = null;
  function showPickerError(error, loud = true) {
    picker.title = errorText(error.code, error.detail, error.message);
    if (loud && pickerNote) pickerNote(picker.title);
  }
  api.models().then((data) => {
    offered = data.available || (data.models || []).map((id) => ({ id, provider: "" }));
    drawPicker(currentChoice());
    const down = (data.unavailable || [])[0];
    if (down) showPickerError({ code: down.code, message: down.message }, false);
  }).catch((error) => {
    drawPicker(currentChoice()); // the list cannot be had: keep what we have
    showPickerError(error, false);
  });
  drawPicker(currentChoice());

  // Save as preset: what the panel shows now (checked as for saving), under a name the member gives.
  const presetForm = presetDialog.querySelector("form");
  const presetError = presetDialog.querySelector("#preset-save-error");
  dialog.querySelector("#preset-save-open").addEventListener("click", () => {
    const read = readSettings(form);
    showErrors(read.errors);
    if (Object.keys(read.errors).length) return;
    presetForm.reset();
    showFieldErrors(presetForm, presetError, {});
    presetDialog.showModal();
  });
  presetDialog.querySelector("#preset-save-cancel").addEventListener("click", () => presetDialog.close());
  presetForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = presetForm.elements.name.value.trim();
    if (!name) { showFieldErrors(presetForm, presetError, { name: gettext("A preset needs a name.") }); return; }
    const read = readSettings(form);
    if (Object.keys(read.errors).length) { presetDialog.close(); showErrors(read.errors); return; }
    const choice = currentChoice();
    try {
      const preset = await api.createPreset({
        name, model: choice.model || "", provider: choice.model ? (choice.provider || "") : "",
        system_prompt: read.system_prompt, params: setOnly(read.params),
      });
      presetDialog.close();
      status.textContent = fill(gettext("Saved as the preset “%(name)s”."), { name: preset.name });
      if (onPresetSaved) onPresetSaved(preset);
    } catch (error) {
      const fields = { ...error.fields };
      const settingsFields = Object.keys(fields).filter((key) => key.startsWith("params") || key === "system_prompt" || key === "model");
      if (settingsFields.length) {
        // About the panel's values: said there, by their fields.
        presetDialog.close();
        if (fields.params && !Object.keys(fields).some((k) => k.startsWith("params."))) fields.__all__ = fields.params.join(" ");
        showErrors(fields);
        return;
      }
      if (!fields.name) fields.__all__ = errorText(error.code, error.detail, error.message);
      showFieldErrors(presetForm, presetError, fields);
    }
  });

  return {
    /** The conversation changed elsewhere (another tab, a snapshot): show its model. */
    refresh() { drawPicker(currentChoice()); },
    onPickerError(callback) { pickerNote = callback; },
    showErrors,
    open() { openButton.click(); },
  };
}
