// One websocket with its reconnects: backoff, a fresh snapshot on every connect (the server
// sends it), and the close codes of docs/protocol.md (4401 signed out, 4404 gone, 1013 try later).

const MAX_WAIT_MS = 10000;

/**
 * Open `path` (`/ws/conversations/<id>/` or `/ws/member/`) and keep it open.
 * handlers: onFrame(frame), onState("open" | "reconnecting", reason), onGone(), onSignedOut().
 */
export function openSocket(path, handlers) {
  let socket = null;
  let failures = 0;
  let timer = null;
  let closed = false;

  function connect() {
    timer = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${path}`);
    socket.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      // The backoff resets on a snapshot (or a member socket's first frame), not on open: during
      // an outage the server accepts and then closes with 1013, which must not reset it.
      if (frame.type === "snapshot") failures = 0;
      handlers.onFrame(frame);
    };
    socket.onopen = () => {
      if (path === "/ws/member/") failures = 0; // no snapshot on the member socket
      handlers.onState("open");
    };
    socket.onclose = (event) => {
      if (closed) return;
      if (event.code === 4401) { closed = true; handlers.onSignedOut(); return; }
      if (event.code === 4404) { closed = true; handlers.onGone(); return; }
      handlers.onState("reconnecting", event.code === 1013 ? event.reason : "");
      // A refused handshake looks like any lost connection: after a few, ask whether we are still signed in.
      if (failures >= 2) {
        fetch("/api/account/", { credentials: "same-origin" })
          .then((answer) => { if (answer.status === 401) { closed = true; handlers.onSignedOut(); } })
          .catch(() => {});
      }
      const wait = Math.min(MAX_WAIT_MS, 500 * 2 ** failures++) * (0.75 + Math.random() / 2);
      timer = setTimeout(connect, wait);
    };
  }

  connect();
  return {
    /** Send a frame; false when the socket is not open (the caller keeps what it wanted to send). */
    send(frame) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(frame));
      return true;
    },
    isOpen: () => Boolean(socket && socket.readyState === WebSocket.OPEN),
    /** Drop the connection and start again from a snapshot (used on a gap in a reply's offsets). */
    restart() { if (socket) socket.close(); },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      if (socket) socket.close();
    },
  };
}

export function goToSignIn() {
  location.assign(`/accounts/login/?next=${encodeURIComponent(location.pathname)}`);
}
