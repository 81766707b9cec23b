// The chat page: wires the socket, the message list, the composer, the sidebar and the settings
// together. Each module does one thing; what happens on each frame is decided here.
import { api } from "./api.js";
import { setupComposer, uuid } from "./composer.js";
import { setupExportMenu } from "./export-menu.js";
import { errorText, gettext } from "./i18n.js";
import { setupMessageList } from "./message-list.js";
import { setupPresetPicker } from "./preset-picker.js";
import { setupSettings } from "./settings.js";
import { setupSidebar } from "./sidebar.js";
import { goToSignIn, openSocket } from "./socket.js";

const $ = (id) => document.getElementById(id);
const data = JSON.parse($("page-data").textContent);
let conversation = data.conversation; // null on a new chat until its first message is sent
// A new chat's settings until its first send. `changed`: the fields the member set here, which
// win over a preset's. `preset`: undefined until the lists arrive (the server's defaults
// apply), null for "no preset", else the preset the chat starts from.
const draft = { model: data.default_model, provider: "", system_prompt: "", params: {}, changed: new Set(), preset: undefined };
const current = () => conversation || draft;
const siteName = document.title.includes(" · ") ? document.title.slice(document.title.lastIndexOf(" · ") + 3) : document.title;
let socket = null;
let waitingFrame = null; // a frame to send once the socket has its snapshot (the first send of a new chat)

const notice = $("notice");
function say(text) { notice.textContent = text || ""; }

function showTitle(title) {
  const shown = title || gettext("New chat");
  $("title").textContent = shown;
  document.title = `${shown} · ${siteName}`;
}

function send(frame) {
  if (socket && socket.send(frame)) return true;
  say(gettext("Not connected; trying again…"));
  return false;
}

async function copy(text, trigger) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    if (trigger) {
      const before = trigger.textContent;
      trigger.textContent = gettext("Copied");
      setTimeout(() => { trigger.textContent = before; }, 1500);
    }
  } catch {
    say(gettext("Could not copy to the clipboard."));
  }
}

const messages = setupMessageList({
  list: $("messages"),
  scroller: $("scroller"),
  jump: $("jump"),
  actions: {
    copy,
    regenerate: (id) => send({ type: "regenerate", message_id: id, client_id: uuid() }),
    edit: (id, text) => send({ type: "edit", message_id: id, content: text, client_id: uuid() }),
    select: (id) => send({ type: "select", message_id: id }),
  },
});

// Code blocks' copy buttons are in rendered Markdown: one listener for all of them.
$("messages").addEventListener("click", (event) => {
  const button = event.target.closest(".copy-code");
  if (button) copy(button.closest(".code-block").querySelector("code").textContent, button);
});

const composer = setupComposer({
  form: $("composer"),
  input: $("input"),
  sendButton: $("send"),
  stopButton: $("stop"),
  attach: $("attach"),
  fileInput: $("attach-file"),
  strip: $("attachments"),
  onSend: (content, clientId) => {
    say("");
    if (!conversation) { startConversation(content, clientId); return; }
    send({ type: "send", content, client_id: clientId }); // if closed, sent again after the snapshot
  },
  onStop: () => send({ type: "stop" }),
  onError: say,
});

const sidebar = setupSidebar({
  root: $("sidebar"),
  listEl: $("conversation-list"),
  search: $("search"),
  toggle: $("sidebar-toggle"),
  backdrop: $("sidebar-backdrop"),
  confirmDialog: $("confirm-delete"),
  currentId: conversation ? conversation.id : null,
  initial: data.conversations,
  onError: say,
});

const exportMenu = setupExportMenu({ root: $("export"), button: $("export-open"), menu: $("export-menu") });
exportMenu.show(conversation ? conversation.id : null);

const settings = setupSettings({
  picker: $("model"),
  dialog: $("settings"),
  openButton: $("settings-open"),
  presetDialog: $("preset-save"),
  getConversation: current,
  defaultModel: data.default_model,
  save: async (fields) => {
    if (!conversation) { // kept for the first send
      Object.assign(draft, fields);
      for (const name of Object.keys(fields)) draft.changed.add(name);
      return;
    }
    const saved = await api.updateConversation(conversation.id, fields);
    delete saved.messages;
    conversation = { ...saved, provider: fields.provider ?? conversation.provider };
  },
  onPresetSaved: (preset) => { if (presetPicker) presetPicker.add(preset); },
});
settings.onPickerError(say);

/** A preset chosen for a new chat: its model, prompt and parameters, shown in the picker and the panel. */
function applyPreset(preset, initial) {
  draft.preset = preset;
  if (initial && !preset) return; // no default preset: the page's own defaults stand
  const start = preset
    ? { model: preset.model || data.default_model, provider: preset.model ? preset.provider || "" : "",
        system_prompt: preset.system_prompt, params: { ...preset.params } }
    : { model: data.default_model, provider: "", system_prompt: "", params: {} };
  for (const [name, value] of Object.entries(start)) {
    // The default preset arrives a moment after the page: what the member set meanwhile stays.
    if (initial && draft.changed.has(name)) continue;
    draft[name] = value;
  }
  if (!initial) draft.changed.clear();
  settings.refresh();
}

const presetPicker = conversation ? null : setupPresetPicker({
  root: $("preset-picker"), select: $("preset"), onPick: applyPreset, onError: say,
});

/** The body that creates a new chat: its preset, and what the member set (or everything, for "no preset"). */
function newConversationBody() {
  const body = {};
  if (draft.preset) body.preset = draft.preset.id;
  // "No preset" must not fall back to a default preset on the server: every field is given.
  const given = draft.preset === null ? ["model", "system_prompt", "params"] : [...draft.changed];
  for (const name of given) {
    if (name === "model" || name === "provider") { body.model = draft.model || ""; body.provider = draft.provider || ""; }
    else body[name] = draft[name];
  }
  return body;
}

function updateStreaming() {
  const streaming = messages.streaming();
  composer.setStreaming(Boolean(streaming));
  $("welcome").hidden = !messages.isEmpty();
}

/** The first send of a new chat creates the conversation; the URL becomes its own. */
async function startConversation(content, clientId) {
  try {
    conversation = await api.createConversation(newConversationBody());
  } catch (error) {
    composer.refused();
    if (error.fields && Object.keys(error.fields).some((k) => k !== "title")) {
      settings.showErrors(error.fields);
    }
    if (error.fields && error.fields.preset) say(error.fields.preset.join(" "));
    else say(errorText(error.code, null, error.message));
    return;
  }
  history.replaceState(null, "", `/c/${conversation.id}/`);
  $("chat").dataset.conversationId = conversation.id;
  sidebar.setCurrent(conversation.id);
  sidebar.upsert(conversation);
  if (presetPicker) presetPicker.hide();
  exportMenu.show(conversation.id);
  settings.refresh();
  waitingFrame = { type: "send", content, client_id: clientId };
  connect();
}

function onSnapshot(frame) {
  conversation = { ...conversation, ...frame.conversation };
  showTitle(conversation.title);
  settings.refresh();
  messages.reset(frame.messages);
  $("connection").textContent = "";
  const pending = composer.pending();
  if (pending) {
    // Sent before the connection dropped? The snapshot says; if not there, send it again (same client_id).
    if (frame.messages.some((m) => m.client_id === pending.clientId)) composer.accepted(pending.clientId);
    else if (!waitingFrame) send({ type: "send", content: pending.content, client_id: pending.clientId });
  }
  if (waitingFrame) {
    const frameToSend = waitingFrame;
    waitingFrame = null;
    send(frameToSend);
  }
  updateStreaming();
}

function onError(frame) {
  const view = frame.message_id && messages.get(frame.message_id);
  if (view) {
    view.finish("error", null, null, { code: frame.code, message: frame.message, detail: frame.detail || {} });
    updateStreaming();
    return;
  }
  // Refused before anything was stored (busy, too large, invalid, rate limited): the text stays.
  composer.refused();
  say(errorText(frame.code, frame.detail, frame.message));
}

function handle(frame) {
  switch (frame.type) {
    case "snapshot":
      onSnapshot(frame);
      break;
    case "message": {
      messages.show(frame.message);
      if (frame.message.client_id) composer.accepted(frame.message.client_id);
      updateStreaming();
      break;
    }
    case "delta": {
      const view = messages.get(frame.message_id);
      // A gap (or a reply this tab never saw start): start again from a snapshot.
      if (!view || !view.appendDelta(frame.offset, frame.content)) socket.restart();
      break;
    }
    case "reasoning": {
      const view = messages.get(frame.message_id);
      if (!view || !view.appendReasoning(frame.offset, frame.content)) socket.restart();
      break;
    }
    case "done": {
      const view = messages.get(frame.message_id);
      if (view) view.finish(frame.status, frame.finish_reason, frame.usage);
      updateStreaming();
      if (view && conversation && conversation.params && conversation.params.logprobs) fetchLogprobs(frame.message_id);
      break;
    }
    case "error":
      onError(frame);
      break;
    case "title":
      if (conversation) conversation.title = frame.title;
      showTitle(frame.title);
      break;
    case "conversation_created":
      sidebar.upsert(frame.conversation);
      break;
    case "conversation_updated":
      sidebar.upsert(frame.conversation);
      if (conversation && frame.conversation.id === conversation.id) {
        conversation = { ...conversation, ...frame.conversation };
        showTitle(conversation.title);
        settings.refresh();
      }
      break;
    case "conversation_deleted":
      sidebar.remove(frame.conversation_id);
      if (conversation && frame.conversation_id === conversation.id) say(gettext("This conversation was deleted."));
      break;
  }
}

/** A finished reply's token probabilities are stored with it, not sent in `done`: read them once. */
async function fetchLogprobs(messageId) {
  try {
    const stored = await api.conversation(conversation.id);
    const found = stored.messages.find((m) => m.id === messageId);
    const view = messages.get(messageId);
    if (found && found.logprobs && view) view.update({ logprobs: found.logprobs });
  } catch {
    // The token view waits for the next snapshot.
  }
}

function connect() {
  if (socket) socket.close();
  const path = conversation ? `/ws/conversations/${conversation.id}/` : "/ws/member/";
  socket = openSocket(path, {
    onFrame: handle,
    onState: (state) => {
      $("connection").textContent = state === "reconnecting" ? gettext("Reconnecting…") : "";
    },
    onGone: () => {
      say(conversation ? gettext("This conversation was deleted, or it is not yours.") : "");
      $("input").disabled = true;
      $("send").disabled = true;
    },
    onSignedOut: () => {
      say(gettext("Signed out; taking you to the sign-in page…"));
      goToSignIn();
    },
  });
}

showTitle(conversation ? conversation.title : "");
updateStreaming();
connect();
composer.focus();
$("chat").dataset.ready = "true"; // the composer listens from here on (tests wait for it, as a member waits for the page)
