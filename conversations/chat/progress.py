"""One writer per process saves the text of every reply it streams, all in one statement.

A reply's text must reach its row while it streams (nothing is lost if the
process dies) and its lease must be renewed while it lives (or a sweep takes
it for dead). Each reply used to do both itself, about once a second: one
UPDATE and one trip to a worker thread per reply, so a hundred replies cost a
hundred of each every second. Here every REPLY_FLUSH_SECONDS the writer
gathers the replies whose text grew, and those whose lease is a third gone
while they stall, and writes them with one UPDATE in one worker-thread trip
(chat/replies.save_progress_many).

The write is conditional as before: a row is updated only while it is still
`streaming` and still carries its run's id. A reply left out of what the
update returns is no longer this run's (a sweep marked it interrupted, or its
conversation was deleted): its generation is stopped. A write that fails
(Postgres restarted, a connection cut) is logged once and retried at the next
tick with the text still in memory, and once more when it works again.

The writer starts with the first reply a process streams and ends with the
last. A reply leaves it as it ends, before its end is written (that write
stays its own, conditional, with its usage: chat/replies.finish_reply), so a
draining process flushes until its replies end and then has nothing left here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

from django.conf import settings

from conversations.chat import replies
from conversations.chat.threads import in_thread
from conversations.chat.trouble import Trouble

log = logging.getLogger(__name__)


class Live(Protocol):
    """What the writer needs of a streaming reply (chat/generation.Generation)."""

    reply_id: uuid.UUID
    run_id: uuid.UUID
    message_id: str
    length: int  # characters of text received
    reasoning_length: int
    saved_length: int  # text and reasoning in the row, as last written (the writer keeps it)

    def text(self) -> str: ...

    def reasoning(self) -> str: ...

    def stop(self) -> None: ...


class Writer:
    """The writer of one event loop (the process's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.live: dict[Live, float] = {}  # each reply and the loop time of its last write (or start)
        self.empty = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.saving = Trouble("saving the progress of streaming replies", log)

    def register(self, reply: Live) -> None:
        # Its turn has just written the row and its lease.
        self.live[reply] = self.loop.time()
        self.empty.clear()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="reply-progress")

    def unregister(self, reply: Live) -> None:
        self.live.pop(reply, None)
        if not self.live:
            self.empty.set()

    async def _run(self) -> None:
        while self.live:
            try:
                await asyncio.wait_for(self.empty.wait(), settings.REPLY_FLUSH_SECONDS)
            except TimeoutError:
                pass
            if not self.live:
                return
            try:
                await self.write()
            except Exception:  # a bug, not an outage: the writer must outlive it, or leases pass
                log.exception("writing the progress of streaming replies failed")

    async def write(self) -> None:
        """Write every reply whose text changed or whose lease is due, in one statement."""
        now = self.loop.time()
        heartbeat = settings.REPLY_LEASE_SECONDS / 3
        due = []
        for reply, written_at in self.live.items():
            length = reply.length + reply.reasoning_length
            if length != reply.saved_length or now - written_at >= heartbeat:
                due.append((reply, length, reply.text(), reply.reasoning()))
        if not due:
            return
        try:
            # A connection the database dropped is closed after the failed call and
            # a fresh one taken for the next (chat/threads.py).
            kept = await in_thread(replies.save_progress_many)(
                [(reply.reply_id, reply.run_id, text, reasoning) for reply, _length, text, reasoning in due])
        except Exception as error:
            self.saving.failed(error, f"the text of {len(due)} replies stays in memory and the next write retries")
            return
        self.saving.worked()
        for reply, length, _text, _reasoning in due:
            if reply not in self.live:
                continue  # it ended while this was written: its end is written by itself
            if reply.reply_id in kept:
                reply.saved_length = length
                self.live[reply] = now
            else:
                log.warning("reply %s is no longer this run's (deleted, or its lease passed); stopping it",
                            reply.message_id)
                self.unregister(reply)
                reply.stop()


_writer: Writer | None = None


def writer() -> Writer:
    """This event loop's writer (tests make one per test)."""
    global _writer
    loop = asyncio.get_running_loop()
    if _writer is None or _writer.loop is not loop:
        _writer = Writer(loop)
    return _writer


def register(reply: Live) -> None:
    """Save this streaming reply's progress from now on, until `unregister`."""
    writer().register(reply)


def unregister(reply: Live) -> None:
    """The reply has ended: it is written no more here."""
    writer().unregister(reply)


async def ended(timeout: float) -> None:
    """Wait up to `timeout` for the writer to end (it does once no reply is left, after any
    write under way): a stopping process leaves no write in flight."""
    task = writer().task
    if task is not None and not task.done():
        await asyncio.wait([task], timeout=timeout)
