"""What travels over the channel layer, and the frames sockets forward.

Frames are encoded to JSON once, where they are made, so that fanning a reply
out to many sockets costs one `send` per socket and no JSON work. Group names
come from conversation ids, never from text a member typed.
"""

from __future__ import annotations

import json

from channels.layers import get_channel_layer


def conversation_group(conversation_id) -> str:
    """Every socket watching the conversation."""
    return f"conversation.{_hex(conversation_id)}"


def control_group(conversation_id) -> str:
    """The reply streaming in the conversation (stop and sync requests)."""
    return f"reply-control.{_hex(conversation_id)}"


def _hex(conversation_id) -> str:
    return conversation_id.hex if hasattr(conversation_id, "hex") else str(conversation_id).replace("-", "")


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def frame_event(frame: dict, *, message_id: str | None = None, streaming: bool = False) -> dict:
    """A pre-encoded frame for every socket of a conversation.

    `message_id` with `streaming` tells sockets a reply starts (offset 0);
    a `message_id` without it tells them that reply is over.
    """
    return {
        "type": "reply.frame",
        "frame": encode(frame),
        "message_id": message_id,
        "streaming": streaming,
    }


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
    await get_channel_layer().group_send(conversation_group(conversation_id), event)


async def publish_frame(conversation_id, frame: dict, **kwargs) -> None:
    await publish(conversation_id, frame_event(frame, **kwargs))
