"""Who may read members' conversations in the admin, and what members are told about it.

Reading content (message text, titles, system prompts) takes three things: the
switch `settings.STAFF_REVIEW_ENABLED`, a staff account, and the permission
`conversations.view_conversation_content` (superusers hold every permission).
With the switch off nobody reads content, superusers included; counts, dates
and statuses stay visible to staff who may view conversations at all.

Members learn whether their conversations may be read, and when they were:
every reading is in the audit log, and a member sees the entries about their
own conversations (when, and what was done; the staff member's name is for
superusers, who read the whole log).
"""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext as _

from conversations.models import AuditEntry

CONTENT_PERMISSION = "conversations.view_conversation_content"


def may_read_content(user) -> bool:
    """Whether this user may read members' messages in the admin, now."""
    return bool(
        settings.STAFF_REVIEW_ENABLED
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(CONTENT_PERMISSION)
    )


def refusal(user) -> str:
    """Why `user` may not read content (for the page that refuses it)."""
    if not settings.STAFF_REVIEW_ENABLED:
        return _("Review of conversation content is switched off on this server (STAFF_REVIEW_ENABLED).")
    return _("Your account does not have the permission to read members' conversations.")


def review_notice(member) -> str:
    """One sentence for the member's account page: may staff read their conversations?"""
    if not settings.STAFF_REVIEW_ENABLED:
        return _("Staff review is switched off on this server: no one can read your conversations "
                 "in the review tool.")
    return _("Staff with the review permission can read your conversations in the review tool. "
             "Every time they do, it is recorded, and it is listed here.")


def reviews_of(member, limit: int = 10) -> list[AuditEntry]:
    """The latest audit entries about the member's conversations and data, newest first."""
    return list(AuditEntry.objects.filter(owner_id=member.pk).order_by("-at", "-id")[:limit])
