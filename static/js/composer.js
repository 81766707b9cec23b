// The composer: Enter sends, Shift+Enter starts a new line, Enter during IME composition never
// sends; the box grows with the text. Its text stays until the server has the question: the
// box is cleared only when this tab sees its own question come back (its client_id).

const MAX_ROWS_PX = 240;

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** onSend(text, clientId) starts sending; the page calls accepted(clientId) or refused() later. */
export function setupComposer({ form, input, sendButton, stopButton, onSend, onStop }) {
  let composing = false;
  let pending = null; // {clientId, text}: sent, not yet seen back

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
    if (!text.trim() || pending) return;
    pending = { clientId: uuid(), text };
    sendButton.disabled = true;
    onSend(text, pending.clientId);
  });
  stopButton.addEventListener("click", () => onStop());

  return {
    focus() { input.focus(); },
    pending: () => pending,
    /** This tab's question is stored: now the box may be cleared. */
    accepted(clientId) {
      if (!pending || pending.clientId !== clientId) return;
      if (input.value === pending.text) input.value = "";
      pending = null;
      sendButton.disabled = false;
      grow();
    },
    /** The server refused it (busy, too large, invalid, rate limited): the text stays in the box. */
    refused() {
      pending = null;
      sendButton.disabled = false;
      input.focus();
    },
    setStreaming(streaming) {
      stopButton.hidden = !streaming;
      sendButton.hidden = streaming;
    },
  };
}
