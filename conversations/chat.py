"""What a member can do in a conversation, as async calls for any edge.

Each call runs its database transaction in a worker thread, announces the
committed rows to every socket of the conversation, then starts the reply.
The websocket consumer (and later the member API) only translate to and from
these calls; exceptions from `actions` say what went wrong.
"""

from __future__ import annotations

import uuid

from channels.layers import get_channel_layer

from . import actions, events, generation
from .actions import Busy, Invalid, NotFound  # noqa: F401  (re-exported for the edges)


async def _announce_and_start(turn: actions.Turn) -> actions.Turn:
    for message in turn.announce:
        streaming = message["status"] == "streaming"
        await events.publish_frame(
            turn.conversation_id,
            {"type": "message", "message": message},
            message_id=message["id"] if streaming else None,
            streaming=streaming,
        )
    if turn.title:
        await events.publish_frame(turn.conversation_id, {"type": "title", "title": turn.title})
    if turn.reply is not None:
        generation.start(turn)
    return turn


async def send(user, conversation_id, text: str, parts: list | None, client_id: uuid.UUID | None) -> actions.Turn:
    """Store the member's message and start a reply (a resent client_id does nothing)."""
    turn = await actions.in_thread(actions.start_turn)(user, conversation_id, text, parts, client_id)
    if turn.duplicate:
        return turn
    return await _announce_and_start(turn)


async def regenerate(user, conversation_id, message_id: uuid.UUID | None) -> actions.Turn:
    turn = await actions.in_thread(actions.regenerate)(user, conversation_id, message_id)
    return await _announce_and_start(turn)


async def edit(user, conversation_id, message_id: uuid.UUID, text: str, parts: list | None,
               client_id: uuid.UUID | None) -> actions.Turn:
    turn = await actions.in_thread(actions.edit)(user, conversation_id, message_id, text, parts, client_id)
    if turn.duplicate:
        return turn
    return await _announce_and_start(turn)


async def stop(user, conversation_id) -> bool:
    """Ask the streaming reply, on whichever process runs it, to stop."""
    reply_id = await actions.in_thread(actions.streaming_reply_id)(user, conversation_id)
    if reply_id is None:
        return False
    await get_channel_layer().group_send(
        events.control_group(conversation_id), {"type": "reply.stop", "message_id": str(reply_id)}
    )
    return True


async def request_sync(conversation_id, reply_channel: str) -> None:
    """Ask the streaming reply to send its text so far to one socket's channel."""
    await get_channel_layer().group_send(
        events.control_group(conversation_id), {"type": "reply.sync", "reply_channel": reply_channel}
    )


async def snapshot(user, conversation_id) -> dict:
    return await actions.in_thread(actions.snapshot)(user, conversation_id)


async def check_access(user, conversation_id) -> None:
    """Raise NotFound unless the member owns the conversation."""
    await actions.in_thread(actions.get_conversation)(user, conversation_id)


async def message_text(user, message_id) -> str:
    """The stored text of one of the member's messages ('' if not theirs)."""
    return await actions.in_thread(actions.message_text)(user, message_id)
