"""Graceful drain: a stopping process takes no new replies and lets running ones finish.

On SIGTERM (chatsite/server.py) a process calls `drain()`: from then on a new
turn on this process is refused as `busy` (reason `draining`; the tab keeps
its text and sends again, reaching another process behind the proxy), and
the replies running here get up to DRAIN_SECONDS to finish, the progress
writer (chat/progress.py) saving their text and renewing their leases
meanwhile. Those still running then are ended as `interrupted`, with their
text so far and their usage saved at once, which frees their conversations:
a deploy never leaves members facing `busy` until a lease runs out.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

_draining = False
_hurry: asyncio.Event | None = None


def draining() -> bool:
    return _draining


async def drain(seconds: float) -> None:
    """Stop taking replies, wait up to `seconds` for running ones, then interrupt the rest."""
    from conversations.chat import broadcast, generation, progress

    global _draining, _hurry
    _draining = True
    _hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    running = generation.running_tasks()
    log.warning("draining: %d replies running; waiting up to %.0f s for them", len(running), seconds)
    hurried = asyncio.ensure_future(_hurry.wait())
    try:
        while (running := generation.running_tasks()) and not _hurry.is_set() and loop.time() < deadline:
            await asyncio.wait([*running, hurried], timeout=deadline - loop.time(),
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()
    running = generation.running_tasks()
    if running:
        log.warning("draining: interrupting %d replies still running; their text so far is saved", len(running))
        for reply in generation.running_generations():
            reply.interrupt()
        await asyncio.wait(running, timeout=30)
    await progress.ended(timeout=5)  # every reply wrote its end itself; no progress write is left in flight
    await broadcast.flush()
    log.warning("drained: no reply is running")


def hurry() -> None:
    """End the wait now (a second SIGTERM): interrupt what still runs."""
    if _hurry is not None:
        _hurry.set()


def reset() -> None:
    """Take replies again (tests)."""
    global _draining, _hurry
    _draining, _hurry = False, None
