"""What travels over the channel layer, and the frames sockets forward.

Frames are encoded to JSON once, where they are made, so that fanning a reply
out to many sockets costs one `send` per socket and no JSON work. Group names
come from conversation ids, never from text a member typed.

The channel layer (Redis) can be down or restarting: every call here that
reaches it raises `Unavailable` then, whatever the backend's own exception.
What is stored never depends on it; only what sockets hear does.
"""

from __future__ import annotations

import json

from channels.layers import get_channel_layer
from redis.exceptions import RedisError  # channels-redis's client; the in-memory layer raises none

LAYER_ERRORS = (OSError, RedisError)  # OSError covers refused connections and timeouts


def conversation_group(conversation_id) -> str:
    """Every socket watching the conversation."""
    return f"conversation.{_hex(conversation_id)}"


def member_group(user_id) -> str:
    """Every socket of one member: told to re-check its session (see session_auth)."""
    return f"member.{int(user_id)}"


def control_group(conversation_id) -> str:
    """The reply streaming in the conversation (stop and sync requests)."""
    return f"reply-control.{_hex(conversation_id)}"


def _hex(conversation_id) -> str:
    return conversation_id.hex if hasattr(conversation_id, "hex") else str(conversation_id).replace("-", "")


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class Unavailable(Exception):
    """The channel layer could not be reached (Redis down or restarting)."""


def frame_event(frame: dict, *, message_id: str | None = None, streaming: bool = False,
                length: int | None = None) -> dict:
    """A pre-encoded frame for every socket of a conversation.

    `message_id` with `streaming` tells sockets a reply starts (offset 0);
    a `message_id` without it tells them that reply is over, and `length`
    (the final text's length in characters) lets a socket that missed deltas
    catch up before it forwards the end.
    """
    event = {
        "type": "reply.frame",
        "frame": encode(frame),
        "message_id": message_id,
        "streaming": streaming,
    }
    if length is not None:
        event["length"] = length
    return event


def delta_event(message_id: str, offset: int, content: str) -> dict:
    frame = encode({"type": "delta", "message_id": message_id, "offset": offset, "content": content})
    return {
        "type": "reply.delta",
        "message_id": message_id,
        "offset": offset,
        "length": len(content),
        "frame": frame,
    }


async def publish(conversation_id, event: dict) -> None:
    await group_send(conversation_group(conversation_id), event)


async def group_send(group: str, event: dict) -> None:
    try:
        await get_channel_layer().group_send(group, event)
    except LAYER_ERRORS as error:
        raise Unavailable(f"the channel layer is unavailable ({type(error).__name__})") from error


async def publish_frame(conversation_id, frame: dict, **kwargs) -> None:
    await publish(conversation_id, frame_event(frame, **kwargs))
