"""Exact delivery to one tab: a snapshot, then every character of a reply once.

The state a socket keeps about what its tab has seen, and the decisions made
from it, with no I/O: events go in (`snapshot`, `event`, `sync_answer`,
`tick`, ...) and commands come out, which the consumer carries out in order:

- ("send", text): send this frame text to the tab;
- ("sync",): ask the streaming reply, wherever it runs, for its text so far
  (answered with `sync_answer`; `sync_failed` if the request cannot be sent);
- ("snapshot",): read a fresh snapshot from the database (then `snapshot`);
- ("catch_up", message_id, then): read the stored text of an ended reply,
  pass it to `caught_up`, then send the frame text `then`;
- ("check",): ask the database about the reply this tab waits on (then `checked`).

A reply has two texts, each a stream with its own offsets: its answer
(`delta` frames, keyed by the reply's id) and its reasoning (`reasoning`
frames, keyed `<id>:reasoning`), which some model servers send first.

What it guarantees, tested over every order of events (tests/test_delivery.py):
the text a tab assembles from the snapshot and the deltas is the reply's text,
with no gap and nothing twice; a `message` frame the snapshot already covers
is not replayed; a reply the tab hears nothing of for STALL_SECONDS, or a
sync nobody answers in SYNC_TIMEOUT_SECONDS, is looked up in the database.
"""

from __future__ import annotations

import json

SYNC_TIMEOUT_SECONDS = 3.0
STALL_SECONDS = 10.0  # nothing heard of a streaming reply this long: ask the database about it
WATCH_SECONDS = min(STALL_SECONDS, SYNC_TIMEOUT_SECONDS) / 2  # how often the consumer ticks while following
REASONING = ":reasoning"


def _encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _streams(message_id: str) -> tuple[str, str]:
    return message_id, message_id + REASONING


def _reply_of(stream: str) -> str:
    return stream.removesuffix(REASONING)


class Delivery:
    def __init__(self, now: float = 0.0):
        self.forwarded: dict[str, int] = {}  # stream of a streaming reply -> characters this tab has
        self.ended: set[str] = set()  # replies this tab has seen end (or saw ended in its snapshot)
        self.shown: set[str] = set()  # ids of the non-streaming messages the last snapshot showed
        self.pending: dict | None = None  # a snapshot waiting for its reply's text so far
        self.buffered: list[dict] = []  # events that arrived while it waited
        self.resyncing: dict[str, list[dict]] = {}  # reply id -> deltas held until its text comes
        self.heard_at = self.asked_at = now

    # What the tab follows

    def following(self) -> bool:
        return bool(self.forwarded or self.resyncing) or self.pending is not None

    def _followed(self) -> set[str]:
        return {_reply_of(stream) for stream in self.forwarded} | set(self.resyncing)

    # Snapshots

    def snapshot(self, snapshot: dict, now: float) -> list[tuple]:
        """A snapshot read from the database: send it, or first ask its streaming reply for fresher text."""
        if snapshot["active"] is None:
            return self._adopt(snapshot)
        # The row's text may be a second old: the reply itself says what it has published.
        self.forwarded.clear()
        self.resyncing.clear()
        self.buffered = []
        self.pending = snapshot
        self.asked_at = self.heard_at = now
        return [("sync",)]

    def _adopt(self, snapshot: dict) -> list[tuple]:
        """Send `snapshot` (its active reply's text final for now) and follow on from it."""
        self.pending = None
        self.buffered = []
        self.forwarded.clear()
        self.resyncing.clear()
        self.shown = {m["id"] for m in snapshot["messages"] if m["status"] != "streaming"}
        self.ended = {m["id"] for m in snapshot["messages"] if m["role"] == "assistant" and m["status"] != "streaming"}
        active = snapshot["active"]
        if active is not None:
            answer, reasoning = _streams(active["id"])
            self.forwarded[answer] = len(active["content"])
            self.forwarded[reasoning] = len(active.get("reasoning") or "")
        return [("send", _encode(snapshot))]

    def sync_failed(self) -> list[tuple]:
        """The reply cannot be asked (the channel layer is down): send the row's text; gaps fill later."""
        if self.pending is None:
            return []
        buffered = self.buffered
        commands = self._adopt(self.pending)
        self.buffered = buffered
        return commands + self._replay()

    def sync_answer(self, message_id: str, text: str, now: float, reasoning: str = "") -> list[tuple]:
        """The streaming reply's texts so far, as published."""
        self.heard_at = now
        pending = self.pending
        if pending is not None and pending["active"]["id"] == message_id:
            pending["active"]["content"] = text  # the same dict as in pending["messages"]
            if reasoning or pending["active"].get("reasoning"):
                pending["active"]["reasoning"] = reasoning
            buffered = self.buffered
            commands = self._adopt(pending)
            self.buffered = buffered
            return commands + self._replay()
        if message_id in self.resyncing:
            held = self.resyncing.pop(message_id)
            answer, thinking = _streams(message_id)
            commands = self._catch_up(thinking, reasoning) + self._catch_up(answer, text)
            for event in held:
                commands += self._delta(event)
            return commands
        return []

    def _replay(self) -> list[tuple]:
        buffered, self.buffered = self.buffered, []
        commands = []
        for event in buffered:
            commands += self.event(event, self.heard_at)
        return commands

    # Events from the conversation's group

    def event(self, event: dict, now: float) -> list[tuple]:
        self.heard_at = now
        if self.pending is not None:
            active_id = self.pending["active"]["id"]
            if event["type"] == "reply.frame" and event["message_id"] == active_id and not event["streaming"]:
                # The reply ended before it could answer: the database has all of it now.
                self.pending = None
                self.buffered = []
                return [("snapshot",)]
            self.buffered.append(event)
            return []
        if event["type"] == "reply.delta":
            return self._delta(event)
        return self._frame(event)

    def _frame(self, event: dict) -> list[tuple]:
        message_id = event["message_id"]
        about = event.get("about")
        if message_id is None:
            if about is not None and about in self.shown:
                return []  # a message the snapshot showed already
            return [("send", event["frame"])]
        answer, reasoning = _streams(message_id)
        if event["streaming"]:
            if answer in self.forwarded or message_id in self.ended:
                return []  # its start, which the snapshot showed already
            self.forwarded[answer] = self.forwarded[reasoning] = 0
            return [("send", event["frame"])]
        # The end of a reply.
        if message_id in self.ended:
            return []
        self.ended.add(message_id)
        known = self.forwarded.get(answer)
        known_reasoning = self.forwarded.get(reasoning)
        resyncing = self.resyncing.pop(message_id, None) is not None
        behind = (known is not None and known < event.get("length", known)) or \
            (known_reasoning is not None and known_reasoning < event.get("reasoning_length", 0))
        if resyncing or behind:
            # It ended while this tab was catching up, or after deltas it never got
            # (Redis restarted): the row is final, send the rest from it first.
            self.forwarded[answer], self.forwarded[reasoning] = known or 0, known_reasoning or 0
            return [("catch_up", message_id, event["frame"])]
        self.forwarded.pop(answer, None)
        self.forwarded.pop(reasoning, None)
        return [("send", event["frame"])]

    def caught_up(self, message_id: str, text: str, reasoning: str = "") -> list[tuple]:
        """The stored texts of a reply that ended (after a ("catch_up", ...) command)."""
        answer, thinking = _streams(message_id)
        commands = self._catch_up(thinking, reasoning) + self._catch_up(answer, text)
        self.forwarded.pop(answer, None)
        self.forwarded.pop(thinking, None)
        return commands

    def _delta(self, event: dict) -> list[tuple]:
        message_id, offset, length = event["message_id"], event["offset"], event["length"]
        stream = event.get("stream", message_id)
        if message_id in self.ended:
            return []
        if message_id in self.resyncing:
            self.resyncing[message_id].append(event)
            return []
        known = self.forwarded.get(stream)
        if known is None:
            # A reply this tab never heard start: its `message` frame was lost (Redis
            # was down). Deltas cannot rebuild that: start again from a snapshot.
            return [("snapshot",)]
        if known == offset:
            self.forwarded[stream] = offset + length
            return [("send", event["frame"])]
        if offset + length <= known:
            return []  # already sent (it was in the snapshot)
        if offset < known:
            content = json.loads(event["frame"])["content"]
            return self._catch_up(stream, content[known - offset:], base=known)
        # A gap: this tab missed a delta (Redis restarted). Ask the reply for its texts.
        self.resyncing[message_id] = [event]
        self.asked_at = self.heard_at
        return [("sync",)]

    def _catch_up(self, stream: str, text: str, base: int | None = None) -> list[tuple]:
        """Send what `text` has beyond what the tab has of `stream` (`text` starts at `base`, 0 by default)."""
        known = self.forwarded.get(stream, 0)
        start = known - (base or 0)
        if start >= len(text):
            return []
        self.forwarded[stream] = (base or 0) + len(text)
        kind = "reasoning" if stream.endswith(REASONING) else "delta"
        frame = {"type": kind, "message_id": _reply_of(stream), "offset": known, "content": text[start:]}
        return [("send", _encode(frame))]

    # Not left waiting

    def tick(self, now: float) -> list[tuple]:
        """Called every WATCH_SECONDS while following: ask the database when something is overdue."""
        if not self.following():
            return []
        waiting = (self.resyncing or self.pending is not None) and now - self.asked_at >= SYNC_TIMEOUT_SECONDS
        if not (waiting or now - self.heard_at >= STALL_SECONDS):
            return []
        self.heard_at = self.asked_at = now
        return [("check",)]

    def checked(self, snapshot: dict, now: float) -> list[tuple]:
        """What the database says, after a ("check",)."""
        if self.pending is not None:
            # No reply answered (its process may have died): send what the database has.
            return self._adopt(snapshot)
        followed = self._followed()
        if not followed:
            return []
        active = snapshot["active"]
        if followed - {active["id"] if active else None}:
            # A reply it follows ended (or its process died) while its frames were lost.
            return [("snapshot",)]
        # Still streaming, quiet or unheard: ask it for its text (answered if it lives).
        self.resyncing.setdefault(active["id"], [])
        self.asked_at = now
        return [("sync",)]
