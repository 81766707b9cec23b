"""Telling sockets what changed: group names, frames, and the after-commit path.

Every write announces itself the same way: inside its transaction it calls
`announce(group, event)`, and the event leaves only once the transaction has
committed (a rollback sends nothing), in the order announced. How it leaves
depends on who wrote:

- A write run from async code through `act()` (the sockets, a reply's final
  write) hands its events back to its caller, which sends them before going
  on: a reply's `message` frame is on the wire before its first delta.
- Any other write (the JSON API, the admin, a bulk update of members, a
  management command) hands its events to one sender task on the process's
  event loop, when the process has one (daphne), without waiting for it; or,
  in a process without one (a command, a script), sends them right there.
  Nothing ever calls async_to_sync from an event loop's thread.

Frames are encoded to JSON once, where they are made, so that fanning a reply
out to many sockets costs one `send` per socket and no JSON work. Group names
come from ids, never from text a member typed.

The channel layer (Redis) can be down or restarting: every call that reaches
it raises `Unavailable` then, whatever the backend's own exception. What is
stored never depends on it; only what sockets hear does.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from functools import partial

from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError  # channels-redis's client; the in-memory layer raises none

from conversations.chat.threads import in_thread

log = logging.getLogger(__name__)

LAYER_ERRORS = (OSError, RedisError)  # OSError covers refused connections and timeouts


def conversation_group(conversation_id) -> str:
    """Every socket watching the conversation."""
    return f"conversation.{_hex(conversation_id)}"


def member_group(user_id) -> str:
    """Every socket of one member, whatever conversation it shows."""
    return f"member.{int(user_id)}"


def control_group(conversation_id) -> str:
    """The reply streaming in the conversation (stop and sync requests)."""
    return f"reply-control.{_hex(conversation_id)}"


def _hex(conversation_id) -> str:
    return conversation_id.hex if hasattr(conversation_id, "hex") else str(conversation_id).replace("-", "")


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class Unavailable(Exception):
    """The channel layer could not be reached (Redis down or restarting).

    Raised by `act()` after its write committed: `result` is the write's result
    and `pending` the events not sent, for a caller that wants to try again.
    """

    def __init__(self, message: str, *, result=None, pending: list | None = None):
        super().__init__(message)
        self.result = result
        self.pending = pending or []


# Events

def frame_event(frame: dict, *, message_id: str | None = None, streaming: bool = False,
                length: int | None = None, reasoning_length: int | None = None) -> dict:
    """A pre-encoded frame for the sockets of a conversation.

    `message_id` with `streaming` tells sockets a reply starts (offset 0);
    a `message_id` without it tells them that reply is over, and `length`
    (the final text's length in characters) lets a socket that missed deltas
    catch up before it forwards the end. `about` names the message a `message`
    frame carries, so a tab whose snapshot showed it already is not sent it twice.
    """
    event = {"type": "reply.frame", "frame": encode(frame), "message_id": message_id, "streaming": streaming}
    if length is not None:
        event["length"] = length
    if reasoning_length:
        event["reasoning_length"] = reasoning_length
    if frame["type"] == "message":
        event["about"] = frame["message"]["id"]
    return event


def delta_event(message_id: str, offset: int, content: str, part: str = "content") -> dict:
    """A piece of a reply's answer (a `delta` frame) or of its reasoning (a `reasoning` frame).

    `stream` names which of the reply's two texts it continues: sockets keep offsets per stream.
    """
    kind = "delta" if part == "content" else "reasoning"
    frame = encode({"type": kind, "message_id": message_id, "offset": offset, "content": content})
    return {"type": "reply.delta", "message_id": message_id, "stream": stream_key(message_id, part),
            "offset": offset, "length": len(content), "frame": frame}


def stream_key(message_id: str, part: str = "content") -> str:
    return message_id if part == "content" else f"{message_id}:{part}"


def member_event(frame: dict, *, conversation_id=None, closes: bool = False) -> dict:
    """A pre-encoded frame for every socket of a member (the sidebar's news).

    `closes`: the conversation `conversation_id` is gone; its own sockets close after the frame.
    """
    return {"type": "member.frame", "frame": encode(frame),
            "conversation_id": str(conversation_id) if conversation_id else None, "closes": closes}


# Sending

async def group_send(group: str, event: dict) -> None:
    try:
        await get_channel_layer().group_send(group, event)
    except LAYER_ERRORS as error:
        raise Unavailable(f"the channel layer is unavailable ({type(error).__name__})") from error


async def publish(conversation_id, event: dict) -> None:
    """Send a reply's delta to the sockets of a conversation now (no transaction behind it).

    Lossy on purpose: a socket that misses one sees the gap and catches up (realtime/delivery.py),
    so the layer may keep deltas in this process while no other listens (chat/layer.py).
    """
    layer = get_channel_layer()
    send = getattr(layer, "group_send_lossy", layer.group_send)
    try:
        await send(conversation_group(conversation_id), event)
    except LAYER_ERRORS as error:
        raise Unavailable(f"the channel layer is unavailable ({type(error).__name__})") from error


async def send_all(events: list[tuple[str, dict]]) -> None:
    """Send events in order; on failure raise Unavailable with the ones not known to be sent.

    With the Redis layer they leave together (chat/layer.py's group_send_many: one round trip),
    and a failure leaves all of them pending: Redis may have published part of a failed
    pipeline, so a retry may repeat a frame, which a socket drops (realtime/delivery.py knows
    the starts and ends it has seen). The in-memory layer sends them one by one.
    """
    if not events:
        return
    layer = get_channel_layer()
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        try:
            await send_many(events)
        except LAYER_ERRORS as error:
            raise Unavailable(f"the channel layer is unavailable ({type(error).__name__})",
                              pending=list(events)) from error
        return
    for index, (group, event) in enumerate(events):
        try:
            await group_send(group, event)
        except Unavailable as error:
            raise Unavailable(str(error), pending=events[index:]) from error


# After commit

_capture = threading.local()


def announce(group: str, event: dict) -> None:
    """Send `event` to `group` once the current transaction commits (at once outside one)."""
    transaction.on_commit(partial(_committed, group, event), robust=True)


def _committed(group: str, event: dict) -> None:
    captured = getattr(_capture, "events", None)
    if captured is not None:
        captured.append((group, event))
    else:
        _sender.hand(group, event)


def _capturing(func):
    def run(*args, **kwargs):
        _capture.events = []
        try:
            result = func(*args, **kwargs)
            return result, _capture.events
        finally:
            _capture.events = None

    return run


async def act(func, *args, before_sending=None, **kwargs):
    """Run the write `func` in a worker thread, then send what it announced; return its result.

    `before_sending(result)`, if given, is awaited after the commit and before the events
    leave: a turn starts its upstream request there, so that the request does not wait
    for the announcements' Redis round trips.
    """
    _sender.bind(asyncio.get_running_loop())
    result, events = await in_thread(_capturing(func))(*args, **kwargs)
    if before_sending is not None:
        await before_sending(result)
    try:
        await send_all(events)
    except Unavailable as error:
        error.result = result
        raise
    return result


SEND_BATCH = 200  # the most events one pipeline carries for the sender task


class _Sender:
    """Sends what writes outside `act()` announced, in order, from the process's event loop."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: collections.deque[tuple[str, dict]] = collections.deque()
        self.task: asyncio.Task | None = None
        self.failures = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop sockets live on (daphne's, or a test's); the ASGI entry and act() call this."""
        if loop is not self.loop:
            self.loop, self.task = loop, None

    def hand(self, group: str, event: dict) -> None:
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._enqueue, group, event)
            return
        # No event loop in this process (a management command, a script): nobody
        # here listens, but sockets of other processes do. This thread runs no loop.
        try:
            asyncio.run(group_send(group, event))
        except Unavailable:
            log.warning("could not announce %s to %s: the channel layer is unavailable", event["type"], group)

    def _enqueue(self, group: str, event: dict) -> None:
        self.queue.append((group, event))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.queue:
            # What arrived meanwhile leaves together: one round trip to Redis for the lot.
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), SEND_BATCH))]
            try:
                await send_all(batch)
            except Unavailable:
                self.failures += 1
                if self.failures == 1:
                    log.warning("announcing a change failed: the channel layer is unavailable; "
                                "open tabs catch up when they reconnect")
            else:
                if self.failures:
                    log.warning("announcing changes works again after %d failures", self.failures)
                    self.failures = 0

    async def flush(self) -> None:
        """Wait until what was handed so far has been sent (tests, and a draining process)."""
        await asyncio.sleep(0)  # events handed from threads are enqueued by then
        while self.task is not None and not self.task.done():
            await asyncio.wait([self.task])
            await asyncio.sleep(0)


_sender = _Sender()
bind_loop = _sender.bind
flush = _sender.flush
