// The conversation page: one websocket, a snapshot, then exact deltas.
// Text is shown with textContent only: model output is never parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const conversationId = root.dataset.conversationId;
  const list = document.getElementById("messages");
  const statusLine = document.getElementById("status");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const stopButton = document.getElementById("stop");
  const titleEl = document.getElementById("title");
  const shown = new Map(); // message id -> {el, body, text, length (code points)}
  let socket = null;
  let retry = 0;
  let streamingId = null;

  const codePoints = (s) => { let n = 0; for (const _ of s) n++; return n; };

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function textOf(content) {
    if (typeof content === "string") return content;
    return (content || []).map((p) => (p.type === "text" ? p.text : "[image]")).join("\n");
  }

  function render(message) {
    let item = shown.get(message.id);
    if (!item) {
      const el = document.createElement("li");
      el.dataset.id = message.id;
      const role = document.createElement("div");
      role.className = "role";
      const body = document.createElement("div");
      body.className = "body";
      const note = document.createElement("div");
      note.className = "note";
      el.append(role, body, note);
      list.append(el);
      item = { el, body, note, length: 0 };
      shown.set(message.id, item);
    }
    item.el.className = `message ${message.role} ${message.status}`;
    item.el.querySelector(".role").textContent = message.role === "user" ? "You" : (message.model || "Assistant");
    const text = textOf(message.content);
    item.length = codePoints(text);
    item.body.textContent = text;
    item.note.textContent = message.error ? message.error.message : (message.status !== "complete" && message.status !== "streaming" ? message.status : "");
    if (message.status === "streaming") setStreaming(message.id);
    return item;
  }

  function showTitle(title) {
    titleEl.textContent = title || "New conversation";
    document.title = `${titleEl.textContent} · Team chat`;
    const current = document.querySelector(".conversation-list li.current a");
    if (current) current.textContent = title || "Untitled";
  }

  function setStreaming(id) {
    streamingId = id;
    stopButton.hidden = !id;
  }

  function appendDelta(frame) {
    const item = shown.get(frame.message_id);
    if (!item) return reconnect();
    let content = frame.content;
    if (frame.offset > item.length) return reconnect(); // a gap: start again from a snapshot
    if (frame.offset < item.length) content = Array.from(content).slice(item.length - frame.offset).join("");
    item.length += codePoints(content);
    item.body.append(content); // a text node per delta: no re-rendering of the whole reply
    list.scrollTop = list.scrollHeight;
  }

  function handle(frame) {
    switch (frame.type) {
      case "snapshot":
        list.replaceChildren();
        shown.clear();
        setStreaming(null);
        showTitle(frame.conversation.title);
        frame.messages.forEach(render);
        statusLine.textContent = "";
        retry = 0;
        break;
      case "message":
        render(frame.message);
        break;
      case "delta":
        appendDelta(frame);
        break;
      case "done": {
        const item = shown.get(frame.message_id);
        if (item) {
          item.el.classList.remove("streaming");
          item.el.classList.add(frame.status);
          if (frame.status !== "complete") item.note.textContent = frame.status;
        }
        if (streamingId === frame.message_id) setStreaming(null);
        break;
      }
      case "error": {
        const item = frame.message_id && shown.get(frame.message_id);
        if (item) {
          item.el.classList.remove("streaming");
          item.el.classList.add("error");
          item.note.textContent = frame.message;
          if (streamingId === frame.message_id) setStreaming(null);
        } else {
          statusLine.textContent = frame.message;
        }
        break;
      }
      case "title":
        showTitle(frame.title);
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/conversations/${conversationId}/`);
    // The backoff resets on a snapshot, not on open: during a Redis outage the server
    // accepts and then closes with 1013 (try again later), and that must not reset it.
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (event.code === 4404) { statusLine.textContent = "This conversation does not exist."; return; }
      if (event.code === 4401) { signIn(); return; } // signed out, or the password changed
      statusLine.textContent = event.code === 1013 && event.reason
        ? `${event.reason} Reconnecting…`
        : "Disconnected; reconnecting…";
      // A refused handshake looks like any lost connection: after a few, ask whether we are still signed in.
      if (retry >= 2) {
        fetch(`/api/conversations/${conversationId}/`, { credentials: "same-origin" })
          .then((answer) => { if (answer.status === 401) signIn(); })
          .catch(() => {});
      }
      setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
    };
  }

  function signIn() {
    statusLine.textContent = "Signed out; taking you to the sign-in page…";
    location.assign(`/accounts/login/?next=${encodeURIComponent(location.pathname)}`);
  }

  function reconnect() {
    if (socket) socket.close();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = input.value;
    if (!content.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "send", content, client_id: uuid() }));
    input.value = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  stopButton.addEventListener("click", () => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
  });
  connect();
})();
