"""Graceful drain: a stopping process takes no new replies and lets running ones finish.

On SIGTERM (chatsite/server.py) a process calls `drain()`: from then on a new
turn on this process is refused as `busy` (reason `draining`; the tab keeps
its text and sends again, reaching another process behind the proxy), and
the replies running here get up to DRAIN_SECONDS to finish. Those still
running then are ended as `interrupted`, with their text so far and their
usage saved at once, which frees their conversations: a deploy never leaves
members facing `busy` until a lease runs out.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

_draining = False


def draining() -> bool:
    return _draining


async def drain(seconds: float) -> None:
    """Stop taking replies, wait up to `seconds` for running ones, then interrupt the rest."""
    from conversations.chat import broadcast, generation

    global _draining
    _draining = True
    running = generation.running_tasks()
    log.warning("draining: %d replies running, waiting up to %.0f s for them", len(running), seconds)
    if running:
        _done, pending = await asyncio.wait(running, timeout=seconds)
        if pending:
            log.warning("draining: interrupting %d replies still running; their text so far is saved",
                        len(pending))
            for reply in generation.running_generations():
                reply.interrupt()
            await asyncio.wait(pending, timeout=30)
    await broadcast.flush()
    log.warning("drained: no reply is running")


def reset() -> None:
    """Take replies again (tests)."""
    global _draining
    _draining = False
