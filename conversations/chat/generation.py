"""One reply's life: stream from the model, fan out deltas, persist, finish.

A Generation runs as its own asyncio task, owned by this module's registry
rather than by any socket, so it outlives the tab that started it. Sockets are
only subscribers: they receive its deltas through the conversation's group and
may ask it (through the control group) to stop or to tell them the text so far.

Two loops share the reply's text, and the process's progress writer reads it:
  - the reader appends upstream chunks to a list (no I/O per token);
  - the publisher sends what is pending at most once per coalescing window,
    the first delta at once, each with its character offset;
  - the progress writer (chat/progress.py) writes the text of every reply the
    process streams to their rows about once a second, in one statement,
    renewing the leases that tell other processes these replies are alive.

Every write of the reply is conditional on the row still being this run's
(chat/replies.py): a reply a sweep marked `interrupted` is never rewritten.
The end is written, with its usage, before sockets are told of it.

Outages (docs/protocol.md, "Outages"): the reply never depends on the channel
layer. While Redis is down it goes on reading the upstream and saving to the
row; deltas that cannot be published are dropped (sockets see the gap in
offsets and catch up from the reply, or from the row, once Redis is back) and
the failure is logged once, not per delta. A flush that fails (Postgres
restarted, connection cut) is retried at the next tick on a fresh connection
(chat/progress.py); the final write is retried for about 15 s, and if it
still fails the sockets get an `interrupted` error instead of a `done` that
would claim a saved reply.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing

from channels.layers import get_channel_layer
from django.conf import settings

from conversations.chat import broadcast, errors, progress, replies, titles
from conversations.chat.trouble import Trouble
from conversations.chat.turns import Turn
from conversations.models import Message
from conversations.upstream.client import Endpoint, UpstreamError, stream_chat

log = logging.getLogger(__name__)

# Strong references: asyncio keeps only weak ones to running tasks.
_running: dict[uuid.UUID, tuple[asyncio.Task, Generation]] = {}

# Waits between attempts at the final write (and at announcing the end): ~15 s in all.
FINAL_WRITE_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
CONTROL_RETRY_MAX_SECONDS = 5.0  # longest wait between attempts to join the control group
READ_SLICE_SECONDS = 0.002  # longest the reader keeps the event loop to itself
MAX_LOGPROB_TOKENS = 20_000  # a reply's tokens kept with their probabilities (the rest are dropped)


def _joined(parts: list[str]) -> str:
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    return parts[0] if parts else ""


def start(turn: Turn, endpoint: Endpoint | None = None, *, announced: asyncio.Event | None = None) -> Generation:
    """Start streaming the turn's reply in the background and return it (its task is `.task`).

    `announced`, when given, is set by the caller once the reply's `message` frame
    is on its way: the upstream request starts at once, but nothing of the reply
    reaches the sockets before that frame (chat/service.py starts replies this way).
    """
    reply = turn.reply
    generation = Generation(turn.conversation_id, reply.id, reply.run_id, turn.body,
                            endpoint or turn.endpoint or Endpoint.default())
    generation.name_it = turn.name_it
    generation.owner_id = turn.owner_id
    if announced is not None:
        generation.announced = announced
    generation.task = asyncio.get_running_loop().create_task(generation.run(), name=f"reply-{reply.id}")
    _running[reply.id] = (generation.task, generation)
    generation.task.add_done_callback(lambda _: _running.pop(reply.id, None))
    return generation


def running_tasks() -> list[asyncio.Task]:
    return [task for task, _generation in _running.values()]


def running_generations() -> list[Generation]:
    return [generation for _task, generation in _running.values()]


class Generation:
    def __init__(self, conversation_id: uuid.UUID, reply_id: uuid.UUID, run_id: uuid.UUID, body: dict,
                 endpoint: Endpoint):
        self.conversation_id = conversation_id
        self.reply_id = reply_id
        self.run_id = run_id
        self.message_id = str(reply_id)
        self.body = body
        self.endpoint = endpoint
        self.layer = get_channel_layer()
        self.parts: list[str] = []  # everything received, joined on demand
        self.length = 0
        self.pending: list[str] = []  # received, not yet published
        self.published = 0  # characters announced to sockets
        # The reasoning ("thinking") some servers stream before the answer: kept and published apart.
        self.reasoning_parts: list[str] = []
        self.reasoning_length = 0
        self.reasoning_pending: list[str] = []
        self.reasoning_published = 0
        self.logprobs: list | None = [] if body.get("logprobs") else None
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.wake = asyncio.Event()
        self.closed = asyncio.Event()
        # Set once the reply's `message` frame has been sent: deltas and the end wait for it.
        self.announced = asyncio.Event()
        self.announced.set()
        # Set once stop requests can be heard (or joining failed and the listener keeps trying).
        self.listening = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.reader: asyncio.Task | None = None
        self.stop_requested = False
        self.interrupted = False  # ended by a draining process, not by the member
        self.control_channel: str | None = None  # this reply's channel, made once
        self.control: str | None = None  # the same, once it has joined the control group
        self.saved_length = 0  # characters in the row as last flushed (chat/progress.py keeps it)
        self.name_it = False  # the conversation's first reply: ask the model for a title after it
        self.owner_id: int | None = None
        self.requested_at: float | None = None  # loop time the upstream request began
        self.first_token_at: float | None = None
        self.publishing = Trouble(f"publishing to the sockets of reply {self.message_id}", log)
        self.joining = Trouble(f"joining the control group of reply {self.message_id}", log)

    def text(self) -> str:
        return _joined(self.parts)

    def reasoning(self) -> str:
        return _joined(self.reasoning_parts)

    async def run(self) -> None:
        # The upstream request starts first: joining the control group (a Redis round
        # trip) overlaps with it. Tabs learn of the reply only after `listening` is set
        # (chat/service.py waits for it), so no stop can come before it is heard; if the
        # channel layer is down, the reply goes on and the listener keeps trying.
        self.reader = asyncio.create_task(self._read())
        publisher = asyncio.create_task(self._publish_loop())
        progress.register(self)  # its text is saved with every other live reply's, once a second
        listener = None
        try:
            try:
                await self._join_control()
            finally:
                self.listening.set()
            listener = asyncio.create_task(self._listen())
            await asyncio.wait([self.reader])
        finally:
            if not self.reader.done():  # this task was cancelled (the process is stopping)
                self.reader.cancel()
                await asyncio.wait([self.reader])
            self.closed.set()
            self.wake.set()
            progress.unregister(self)  # the end is written below, with all the text
            await asyncio.gather(publisher, return_exceptions=True)
            try:
                await self._finish()
            finally:
                await self._end_listener(listener)
            if self.name_it and self.reader.done() and not self.reader.cancelled() \
                    and self.reader.exception() is None and self.text():
                question = next((m["content"] for m in reversed(self.body["messages"]) if m["role"] == "user"), "")
                titles.start(self.conversation_id, self.owner_id, self.body["model"], self.endpoint,
                             question if isinstance(question, str) else "", self.text())

    async def _join_control(self) -> bool:
        """One attempt to join the control group (stop and sync requests)."""
        # Retries reuse the channel: the Pub/Sub layer keeps a channel it was asked to add
        # to a group even when subscribing failed, and a new one per attempt would pile up.
        try:
            if self.control_channel is None:
                # Only this process sends to it (requests come through the group): with the
                # Redis layer, a queue here and no subscription of its own (chat/layer.py).
                new_channel = getattr(self.layer, "new_local_channel", self.layer.new_channel)
                self.control_channel = await new_channel()
            await self.layer.group_add(broadcast.control_group(self.conversation_id), self.control_channel)
        except broadcast.LAYER_ERRORS as error:
            self.joining.failed(error, "stop and sync requests wait until it works; the reply goes on")
            return False
        self.joining.worked()
        self.control = self.control_channel
        return True

    async def _end_listener(self, listener: asyncio.Task | None) -> None:
        """End the listener with a message, so a Redis call is never cut mid-flight."""
        try:
            await self._stop_listening(listener)
        finally:
            forget = getattr(self.layer, "forget_channel", None)  # the Redis layer's local channels
            if forget is not None and self.control_channel is not None:
                forget(self.control_channel)

    async def _stop_listening(self, listener: asyncio.Task | None) -> None:
        if listener is None:  # cancelled while joining: leave the group if it was joined
            if self.control is not None:
                try:
                    await self.layer.group_discard(broadcast.control_group(self.conversation_id), self.control)
                except Exception:
                    log.warning("reply %s: could not leave its control group", self.message_id)
            return
        if self.control is None:
            # Never joined: the listener is between attempts and sees the reply closed.
            await asyncio.wait([listener], timeout=5)
            if self.control is None:
                if not listener.done():
                    listener.cancel()
                return
        try:
            await self.layer.group_discard(broadcast.control_group(self.conversation_id), self.control)
            if not listener.done():
                await self.layer.send(self.control, {"type": "reply.end"})
                await asyncio.wait_for(asyncio.shield(listener), timeout=5)
        except Exception:
            log.warning("reply %s: its control listener did not end by itself", self.message_id)
            listener.cancel()

    def stop(self) -> None:
        """Cancel the upstream request; the text so far is saved as stopped.

        The flag backs the cancel up: on Python 3.11 a cancel that lands as an
        `asyncio.wait_for` inside a library completes is swallowed (CPython
        gh-86296), and the reader would go on as if never stopped.
        """
        self.stop_requested = True
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()

    def interrupt(self) -> None:
        """End the reply now because this process is stopping: saved as `interrupted`."""
        self.interrupted = True
        self.stop()

    async def _read(self) -> None:
        limit = settings.MAX_REPLY_CHARS
        loop = asyncio.get_running_loop()
        self.requested_at = loop.time()
        yield_at = loop.time() + READ_SLICE_SECONDS
        async with aclosing(stream_chat(self.endpoint, self.body)) as chunks:
            async for chunk in chunks:
                if self.stop_requested:
                    raise asyncio.CancelledError  # ends the task as cancelled: stopped
                if loop.time() >= yield_at:
                    # Chunks already buffered are parsed without awaiting anything:
                    # give other replies and sockets their turn now and then.
                    await asyncio.sleep(0)
                    yield_at = loop.time() + READ_SLICE_SECONDS
                if chunk.content:
                    content = chunk.content
                    if self.length + len(content) > limit:
                        content = content[: limit - self.length]
                        self._append(content)
                        raise UpstreamError("too_large", "reply", limit=limit)
                    self._append(content)
                    if self.length == len(content):
                        if self.first_token_at is None:
                            self.first_token_at = loop.time()
                        # A fast upstream hands over many chunks without waiting:
                        # let the publisher send the first one now (time to first token).
                        await asyncio.sleep(0)
                if chunk.reasoning:
                    self._append_reasoning(chunk.reasoning)
                if chunk.finish_reason:
                    self.finish_reason = chunk.finish_reason
                if chunk.usage:
                    self.usage = chunk.usage
                if chunk.logprobs and self.logprobs is not None and len(self.logprobs) < MAX_LOGPROB_TOKENS:
                    self.logprobs.extend(chunk.logprobs[: MAX_LOGPROB_TOKENS - len(self.logprobs)])

    def _append(self, content: str) -> None:
        if content:
            self.parts.append(content)
            self.pending.append(content)
            self.length += len(content)
            self.wake.set()

    def _append_reasoning(self, content: str) -> None:
        if self.reasoning_length + len(content) > settings.MAX_REPLY_CHARS:
            return  # a runaway chain of thought is cut, silently: the answer is what counts
        if self.reasoning_length == 0 and self.requested_at is not None and self.first_token_at is None:
            self.first_token_at = asyncio.get_running_loop().time()
        self.reasoning_parts.append(content)
        self.reasoning_pending.append(content)
        self.reasoning_length += len(content)
        self.wake.set()

    async def _publish_loop(self) -> None:
        """Publish pending text at once, then at most once per window."""
        window = settings.DELTA_COALESCE_SECONDS
        await self.announced.wait()  # the `message` frame goes first
        while not self.closed.is_set():
            await self.wake.wait()
            self.wake.clear()
            await self._publish_pending()
            if window and not self.closed.is_set():
                await asyncio.sleep(window)
        await self._publish_pending()  # what arrived during the last send

    async def _publish_pending(self) -> None:
        if self.reasoning_pending:
            content = "".join(self.reasoning_pending)
            self.reasoning_pending.clear()
            offset, self.reasoning_published = self.reasoning_published, self.reasoning_published + len(content)
            await self._publish(broadcast.delta_event(self.message_id, offset, content, part="reasoning"))
        if not self.pending:
            return
        content = "".join(self.pending)
        self.pending.clear()
        offset = self.published
        # Count it as published before sending, so a sync answered meanwhile
        # covers it; the socket trims the overlap by offset.
        self.published += len(content)
        await self._publish(broadcast.delta_event(self.message_id, offset, content))

    async def _publish(self, event: dict) -> None:
        try:
            await broadcast.publish(self.conversation_id, event)
        except Exception as error:
            # Sockets that missed it see a gap in offsets and resync; the text is safe here.
            self.publishing.failed(error, "the reply goes on and is saved; sockets catch up when it works again")
        else:
            self.publishing.worked()

    async def _listen(self) -> None:
        """Answer stop and sync requests from sockets on any process."""
        delay = 0.25
        while self.control is None:
            # The channel layer was down when the reply started: keep trying while it runs.
            try:
                await asyncio.wait_for(self.closed.wait(), delay)
                return
            except TimeoutError:
                delay = min(delay * 2, CONTROL_RETRY_MAX_SECONDS)
            if await self._join_control() and self.closed.is_set():
                return  # joined just as the reply ended: _end_listener leaves the group
        while True:
            message = await self.layer.receive(self.control)
            kind = message.get("type")
            if kind == "reply.end":
                return
            if kind == "reply.stop" and message.get("message_id") in (None, self.message_id):
                # A stop names its reply: one that raced this reply's start was meant for the last.
                self.stop()
            elif kind == "reply.sync" and isinstance(message.get("reply_channel"), str):
                try:
                    await self.layer.send(
                        message["reply_channel"],
                        {"type": "reply.sync", "message_id": self.message_id, "text": self.text()[: self.published],
                         "reasoning": self.reasoning()[: self.reasoning_published]},
                    )
                except broadcast.LAYER_ERRORS as error:
                    # The socket asks again if no answer comes (realtime/delivery.py).
                    self.publishing.failed(error, "a socket's sync request goes unanswered; it will ask again")

    def _outcome(self) -> dict:
        reader = self.reader
        if reader.cancelled():
            if self.interrupted:
                return {"status": Message.Status.INTERRUPTED, "error_code": "interrupted",
                        "error_detail": {"reason": "restart"}}
            # finish_reason is the model's word; a member's stop is in the status.
            return {"status": Message.Status.STOPPED}
        error = reader.exception()
        if error is None:
            return {"status": Message.Status.COMPLETE, "finish_reason": self.finish_reason or "stop"}
        if not isinstance(error, UpstreamError):
            log.error("reply %s failed", self.message_id, exc_info=error)
            error = UpstreamError("upstream_error", "internal")
        return {"status": Message.Status.ERROR, "finish_reason": self.finish_reason or "",
                "error_code": error.code, "error_detail": error.detail}

    def _timings(self, now: float) -> dict:
        if self.requested_at is None:
            return {}
        timings = {"duration_ms": round((now - self.requested_at) * 1000)}
        if self.first_token_at is not None:
            timings["ttft_ms"] = round((self.first_token_at - self.requested_at) * 1000)
        return timings

    async def _finish(self) -> None:
        """Write the end (with usage) first, then tell the sockets (never the other way round)."""
        await self.announced.wait()  # a reply that ended at once still ends after its `message` frame
        outcome = self._outcome()
        text = self.text()
        timings = self._timings(asyncio.get_running_loop().time())
        attempts = len(FINAL_WRITE_DELAYS) + 1
        for attempt in range(attempts):
            try:
                await broadcast.act(replies.finish_reply, self.reply_id, self.run_id, text=text,
                                    reasoning=self.reasoning(), logprobs=self.logprobs, usage=self.usage,
                                    **outcome, **timings)
                self.publishing.worked()
                return
            except broadcast.Unavailable as unsent:
                # Written; the end frame could not be sent (Redis is down): keep trying to send it.
                await self._send_end(unsent.pending)
                return
            except Exception:
                log.exception("saving the end of reply %s failed (attempt %d of %d)",
                              self.message_id, attempt + 1, attempts)
                if attempt < len(FINAL_WRITE_DELAYS):
                    await asyncio.sleep(FINAL_WRITE_DELAYS[attempt])
        # The lease will pass and a sweep mark the row interrupted with the text last
        # flushed. Say so, rather than a `done` the database does not know of.
        log.error(
            "reply %s could not be saved: the database did not answer %d attempts; %d of its %d "
            "characters are in the row, which becomes interrupted when its lease passes",
            self.message_id, attempts, self.saved_length, len(text),
        )
        frame = errors.frame("interrupted", {"reason": "not_saved"}, message_id=self.message_id)
        event = broadcast.frame_event(frame, message_id=self.message_id, length=self.saved_length)
        await self._send_end([(broadcast.conversation_group(self.conversation_id), event)])

    async def _send_end(self, events: list[tuple[str, dict]]) -> None:
        """Send the end frame, retried: without it tabs wait until their stall check asks the database."""
        for attempt in range(len(FINAL_WRITE_DELAYS) + 1):
            try:
                await broadcast.send_all(events)
                self.publishing.worked()
                return
            except broadcast.Unavailable as error:
                events = error.pending
                self.publishing.failed(error, "announcing the end is retried")
                if attempt < len(FINAL_WRITE_DELAYS):
                    await asyncio.sleep(FINAL_WRITE_DELAYS[attempt])
        log.error("the end of reply %s could not be announced; open tabs find it when they next check",
                  self.message_id)
