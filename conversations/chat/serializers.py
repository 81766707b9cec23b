"""The JSON shapes of conversations and messages, shared by the websocket and the API."""

from __future__ import annotations

from conversations.chat import errors
from conversations.models import Conversation, Message


def message_dict(message: Message, siblings: list[str] | None = None) -> dict:
    """A message as the protocol gives it; `siblings` (its own id among them) when known."""
    data = {
        "id": str(message.id),
        "role": message.role,
        "content": message.wire_content,
        "status": message.status,
        "parent_id": str(message.parent_id) if message.parent_id else None,
        "created_at": message.created_at.isoformat(),
    }
    if message.role == Message.Role.ASSISTANT:
        data["model"] = message.model
        data["finish_reason"] = message.finish_reason or None
        data["usage"] = message.usage
        if message.reasoning:
            data["reasoning"] = message.reasoning
        if message.logprobs:
            data["logprobs"] = message.logprobs
        if message.request:
            # Where the model's context began: a page marks the cut before this message.
            sent = message.request.get("message_ids") or []
            data["context"] = {"first_message_id": sent[0] if sent else None,
                               "dropped": message.request.get("dropped_messages", 0)}
    if message.client_id:
        # The sending tab's own id for the frame: it clears its composer when it sees it come back.
        data["client_id"] = str(message.client_id)
    if siblings is not None:
        data["sibling_ids"] = siblings
    if message.error_code:
        # The words in the active language; the code and detail for a client's own words.
        data["error"] = {"code": message.error_code, "message": errors.describe(message.error_code, message.error_detail),
                         "detail": message.error_detail or {}}
    return data


def conversation_dict(conversation: Conversation) -> dict:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "params": conversation.params,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }
