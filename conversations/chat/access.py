"""The one door to a member's conversations: every lookup is scoped by its owner."""

from __future__ import annotations

import uuid

from conversations.models import Conversation


class NotFound(Exception):
    """No such conversation or message for this member (also: someone else's)."""


def get_conversation(user, conversation_id, *, lock: bool = False, with_provider: bool = False) -> Conversation:
    """The member's conversation, or NotFound; an id that is not a UUID is simply not found."""
    try:
        conversation_id = conversation_id if isinstance(conversation_id, uuid.UUID) else uuid.UUID(str(conversation_id))
    except ValueError:
        raise NotFound from None
    queryset = Conversation.objects.owned_by(user)
    if with_provider:
        queryset = queryset.select_related("provider")
    if lock:
        queryset = queryset.select_for_update(of=("self",))
    try:
        return queryset.get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound from None
