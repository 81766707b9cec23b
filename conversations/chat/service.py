"""What a member can do in a conversation, as async calls for any edge.

Each call runs its transaction in a worker thread (chat/broadcast.act), which
sends what the write announced once it committed, then starts the reply.
The websocket consumer only translates frames to and from these calls.

A turn, once asked for, is carried out to the end even if the socket that
asked goes away half-way: otherwise a reply row committed by the worker
thread would be left `streaming` with nothing generating it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from django.conf import settings
from django.utils.translation import gettext as _

from conversations.chat import broadcast, generation, images, snapshots, turns
from conversations.chat.access import NotFound, get_conversation
from conversations.chat.broadcast import Unavailable
from conversations.chat.quotas import UsageLimit
from conversations.chat.threads import in_thread
from conversations.chat.turns import Busy, Invalid
from conversations.upstream import netguard

__all__ = ["Busy", "Invalid", "NotFound", "SignedOut", "Unavailable", "UsageLimit"]  # what the edges catch


class SignedOut(Exception):
    """The socket's session no longer signs its member in: nothing was done."""

log = logging.getLogger(__name__)

_turns: set[asyncio.Task] = set()  # turns under way, whoever asked for them


async def _turn(action, *args, signed_in=None) -> turns.Turn:
    """Run `action`, announce its rows and start its reply, as a task of its own.

    Shielded from the caller's cancellation: a socket that closes while the
    transaction commits must not leave the reply unstarted. `signed_in`, a
    function, is asked first in the same worker thread (SignedOut if false):
    a socket's per-frame session check costs no thread hop of its own.
    """
    task = asyncio.get_running_loop().create_task(_carry_out(_after_checking(signed_in, action), *args))
    _turns.add(task)
    task.add_done_callback(_turns.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report_unheard)  # nobody is left to hear how it ends
        raise


def _after_checking(signed_in, action):
    if signed_in is None:
        return action

    def checked(*args):
        if not signed_in():
            raise SignedOut()
        return action(*args)

    return checked


def _report_unheard(task: asyncio.Task) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None and not isinstance(error, Busy | Invalid | NotFound | SignedOut | Unavailable | UsageLimit):
        log.error("a turn whose socket had gone failed", exc_info=error)


def pending_turns() -> list[asyncio.Task]:
    return list(_turns)


async def _carry_out(action, *args) -> turns.Turn:
    """Commit the turn, start its reply, then announce what it stored.

    The upstream request starts as soon as the rows are committed, while the
    announcements travel; the reply's deltas and end wait until its `message`
    frame has been sent (`announced`), so tabs still see it in order.
    """
    announced = asyncio.Event()
    started = []

    async def start_reply(turn: turns.Turn) -> None:
        if turn.reply is not None:  # the row exists: something must finish it
            started.append(generation.start(turn, announced=announced))
            # Tabs may ask it to stop once they hear of it: it must be listening first.
            await started[0].listening.wait()

    try:
        return await broadcast.act(action, *args, before_sending=start_reply)
    except Unavailable as error:
        # Stored, not announced (Redis is down): the reply still runs; the tabs catch up later.
        if not started and error.result is not None and error.result.reply is not None:
            generation.start(error.result)
        raise
    finally:
        announced.set()


async def send(user, conversation_id, text: str, parts: list | None, client_id: uuid.UUID | None, *,
               signed_in=None) -> turns.Turn:
    """Store the member's message and start a reply (a resent client_id does nothing)."""
    parts = await _prepare_images(user, parts)
    return await _turn(turns.ask, user, conversation_id, text, parts, client_id, signed_in=signed_in)


async def regenerate(user, conversation_id, message_id: uuid.UUID | None,
                     client_id: uuid.UUID | None = None, *, signed_in=None) -> turns.Turn:
    return await _turn(turns.regenerate, user, conversation_id, message_id, client_id, signed_in=signed_in)


async def edit(user, conversation_id, message_id: uuid.UUID, text: str, parts: list | None,
               client_id: uuid.UUID | None, *, signed_in=None) -> turns.Turn:
    parts = await _prepare_images(user, parts)
    return await _turn(turns.edit, user, conversation_id, message_id, text, parts, client_id, signed_in=signed_in)


async def _prepare_images(user, parts: list | None) -> list | None:
    """Image URLs checked (SSRF); `data:` images checked, re-encoded and stored (a worker thread)."""
    await _check_image_hosts(parts)
    if not any(part.get("type") == "image_url" and part["image_url"]["url"].startswith("data:")
               for part in parts or ()):
        return parts
    try:
        return await in_thread(images.store_data_urls)(user, parts)
    except images.ImageRefused as refused:
        raise Invalid(detail=refused.detail, code=refused.code) from None


async def _check_image_hosts(parts: list | None) -> None:
    """Raise Invalid for an image URL whose host resolves to a non-public address.

    The model server fetches image URLs, so a private one is SSRF through it.
    frames.py has refused address literals and local names already; here names
    are resolved (without blocking the loop, before any transaction) and every
    address must be public or operator-allowed. A name that does not resolve
    here passes: the check cannot bind the model server's own resolver anyway
    (docs: what is left), and an offline server must still take image URLs.
    """
    urls = [
        part["image_url"]["url"] for part in parts or ()
        if part["type"] == "image_url" and part["image_url"]["url"].startswith(("http://", "https://"))
    ]
    if not urls:
        return
    policy = netguard.image_policy()
    checks = [
        netguard.check_url(url, policy, unresolvable_ok=True, timeout=settings.UPSTREAM_CONNECT_TIMEOUT)
        for url in urls
    ]
    try:
        await asyncio.gather(*checks)
    except netguard.Blocked as blocked:
        raise Invalid(_("This image URL cannot be used: %(why)s") % {"why": blocked.message}) from None


async def select(user, conversation_id, message_id: uuid.UUID) -> None:
    """Show another branch; every tab of the conversation reads a fresh snapshot."""
    await broadcast.act(turns.select, user, conversation_id, message_id)


async def stop(user, conversation_id) -> bool:
    """Ask the streaming reply, on whichever process runs it, to stop."""
    reply_id = await in_thread(snapshots.streaming_reply_id)(user, conversation_id)
    if reply_id is None:
        return False
    # Unavailable when Redis is down: the socket is closed with 1013 (try again later).
    await broadcast.group_send(
        broadcast.control_group(conversation_id), {"type": "reply.stop", "message_id": str(reply_id)}
    )
    return True


async def request_sync(conversation_id, reply_channel: str) -> None:
    """Ask the streaming reply to send its text so far to one socket's channel (or raise Unavailable)."""
    await broadcast.group_send(
        broadcast.control_group(conversation_id), {"type": "reply.sync", "reply_channel": reply_channel}
    )


async def snapshot(user, conversation_id) -> dict:
    return await in_thread(snapshots.snapshot)(user, conversation_id)


async def check_access(user, conversation_id) -> None:
    """Raise NotFound unless the member owns the conversation."""
    await in_thread(get_conversation)(user, conversation_id)


async def message_text(user, message_id) -> tuple[str, str]:
    """The stored answer and reasoning of one of the member's messages (empty if not theirs)."""
    return await in_thread(snapshots.message_text)(user, message_id)
