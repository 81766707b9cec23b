"""What a tab reads: the conversation's current branch, the reply streaming, a message's text."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from conversations.chat import replies
from conversations.chat.access import get_conversation
from conversations.chat.context import branch, sibling_ids
from conversations.chat.serializers import conversation_dict, message_dict
from conversations.models import Conversation, Message


def _messages(conversation: Conversation) -> dict:
    """Every message of the conversation, after sweeping replies whose process died (rare: a write)."""
    messages = {m.id: m for m in Message.objects.filter(conversation=conversation)}
    now = timezone.now()
    dead = [m.id for m in messages.values()
            if m.status == Message.Status.STREAMING and m.lease_expires_at is not None and m.lease_expires_at < now]
    if dead:
        with transaction.atomic():
            for message in replies.sweep(conversation, dead):
                messages[message.id] = message
    return messages


def streaming_reply_id(user, conversation_id) -> uuid.UUID | None:
    """The id of the reply streaming in this conversation, checking ownership."""
    conversation = get_conversation(user, conversation_id)
    return next((m.id for m in _messages(conversation).values() if m.status == Message.Status.STREAMING), None)


def branch_dicts(conversation: Conversation) -> list[dict]:
    """The current branch, oldest first, each message with its siblings' ids."""
    messages = _messages(conversation)
    return [message_dict(m, sibling_ids(messages, m)) for m in branch(messages, conversation.current_leaf_id)]


def snapshot(user, conversation_id) -> dict:
    """The conversation, its current branch and the reply streaming, if any."""
    conversation = get_conversation(user, conversation_id)
    path = branch_dicts(conversation)
    active = next((m for m in path if m["status"] == Message.Status.STREAMING), None)
    conv = conversation_dict(conversation)
    return {
        "type": "snapshot",
        "conversation": {key: conv[key] for key in ("id", "title", "model", "params")},
        "messages": path,
        "active": active,
    }


def message_text(user, message_id) -> tuple[str, str]:
    """The stored answer and reasoning of one of the member's messages (empty if not theirs)."""
    found = (
        Message.objects.filter(pk=message_id, conversation__in=Conversation.objects.owned_by(user))
        .values_list("content", "reasoning")
        .first()
    )
    return found or ("", "")
