// The composer: Enter sends, Shift+Enter starts a new line, Enter during IME composition never
// sends; the box grows with the text. Images come by the button, a paste or a drop
// (attachments.js). Text and images stay until the server has the question: the box is cleared
// only when this tab sees its own question come back (its client_id).
import { filesOf, setupAttachments } from "./attachments.js";

const MAX_ROWS_PX = 240;

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The frame's content: the text alone, or parts (text first, then the images). */
export function contentOf(text, imageParts) {
  if (!imageParts.length) return text;
  return [...(text.trim() ? [{ type: "text", text }] : []), ...imageParts];
}

/**
 * onSend(content, clientId) starts sending; the page calls accepted(clientId) or refused() later.
 * onError(text): a refused image. attach (button), fileInput, strip: the images' controls.
 */
export function setupComposer({ form, input, sendButton, stopButton, attach, fileInput, strip, onSend, onStop, onError }) {
  let composing = false;
  let pending = null; // {clientId, text, content, urls}: sent, not yet seen back

  const images = setupAttachments({ strip, onError, onChange: () => { sendButton.disabled = Boolean(pending) || images.busy(); } });

  function grow() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, MAX_ROWS_PX)}px`;
  }

  input.addEventListener("compositionstart", () => { composing = true; });
  input.addEventListener("compositionend", () => {
    // Some browsers send the Enter that ends a composition after compositionend: wait a turn.
    setTimeout(() => { composing = false; }, 0);
  });
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey) return;
    if (event.isComposing || composing || event.keyCode === 229) return; // the IME's own Enter
    event.preventDefault();
    form.requestSubmit();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if ((!text.trim() && images.isEmpty()) || pending || images.busy()) return;
    const parts = images.parts();
    pending = { clientId: uuid(), text, content: contentOf(text, parts), urls: parts.map((p) => p.image_url.url) };
    sendButton.disabled = true;
    onSend(pending.content, pending.clientId);
  });
  stopButton.addEventListener("click", () => onStop());

  // Images: the button, a paste, a drop onto the composer.
  attach.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    images.add(Array.from(fileInput.files || []));
    fileInput.value = ""; // the same file may be picked again
    input.focus();
  });
  input.addEventListener("paste", (event) => {
    const files = filesOf(event.clipboardData, { paste: true });
    if (!files.length) return; // text: the textarea's own paste
    event.preventDefault();
    images.add(files);
  });
  const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  form.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    form.classList.add("dropping");
  });
  form.addEventListener("dragleave", (event) => {
    if (!form.contains(event.relatedTarget)) form.classList.remove("dropping");
  });
  form.addEventListener("drop", (event) => {
    form.classList.remove("dropping");
    const files = filesOf(event.dataTransfer);
    if (!files.length) return;
    event.preventDefault();
    images.add(files);
    input.focus();
  });

  return {
    focus() { input.focus(); },
    pending: () => pending,
    /** This tab's question is stored: now the box may be cleared. */
    accepted(clientId) {
      if (!pending || pending.clientId !== clientId) return;
      if (input.value === pending.text) input.value = "";
      const sent = pending.urls;
      pending = null;
      images.sent(sent);
      sendButton.disabled = images.busy();
      grow();
    },
    /** The server refused it (busy, too large, invalid, rate limited): text and images stay in the box. */
    refused() {
      pending = null;
      sendButton.disabled = images.busy();
      input.focus();
    },
    setStreaming(streaming) {
      stopButton.hidden = !streaming;
      sendButton.hidden = streaming;
    },
  };
}
