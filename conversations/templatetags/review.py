"""`{% review_of user as review %}`: what a member's account page says about staff review
(templates/accounts/_review_notice.html renders it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django import template
from django.conf import settings

from conversations.accounts.review import review_notice, reviews_of
from conversations.models import AuditEntry, Conversation

register = template.Library()


@dataclass
class Line:
    entry: AuditEntry
    title: str | None  # the conversation's title, if it is still there


@dataclass
class Review:
    notice: str
    enabled: bool
    lines: list[Line] = field(default_factory=list)


@register.simple_tag
def review_of(user) -> Review | None:
    if not getattr(user, "is_authenticated", False):
        return None
    entries = reviews_of(user)
    ids = {e.conversation_id for e in entries if e.conversation_id}
    titles = dict(Conversation.objects.owned_by(user).filter(pk__in=ids).values_list("pk", "title"))
    lines = [Line(e, (titles[e.conversation_id] or "…") if e.conversation_id in titles else None)
             for e in entries]
    return Review(review_notice(user), settings.STAFF_REVIEW_ENABLED, lines)
