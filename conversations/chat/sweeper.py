"""The periodic sweep of replies whose process died, run by every app process.

A reply left `streaming` past its lease is swept as soon as anyone touches
its conversation (a send, a snapshot). One nobody opens again would stay
`streaming`, with its usage unrecorded, so each process also sweeps every
REPLY_LEASE_SECONDS (chatsite/server.py starts it). Sweeps are conditional
and skip locked rows (chat/replies.py), so processes sweeping at once agree.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from conversations.chat import broadcast, replies
from conversations.chat.threads import in_thread

log = logging.getLogger(__name__)


async def run() -> None:
    broadcast.bind_loop(asyncio.get_running_loop())
    while True:
        await asyncio.sleep(settings.REPLY_LEASE_SECONDS)
        try:
            swept = await in_thread(replies.sweep_stale)()
        except Exception:
            log.exception("sweeping replies whose process died failed; trying again later")
            continue
        if swept:
            log.warning("marked %d replies interrupted: their process stopped before they finished", swept)
