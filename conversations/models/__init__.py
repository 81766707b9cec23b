"""The data: members, their conversations and messages, what replies cost,
invite links, and the audit log of staff reading.

One module per kind of row; everything is importable from here.
"""

from conversations.models.attachment import Attachment
from conversations.models.audit import AuditEntry, ImmutableAuditEntry
from conversations.models.conversation import Conversation, ConversationQuerySet, Message, lease_deadline
from conversations.models.invite import Invite
from conversations.models.member import Member, MemberQuerySet, members_changed
from conversations.models.preset import Preset, PresetQuerySet
from conversations.models.provider import Provider, ProviderModel, Quota
from conversations.models.usage import Usage

__all__ = [
    "Attachment", "AuditEntry", "Conversation", "ConversationQuerySet", "ImmutableAuditEntry", "Invite", "Member",
    "MemberQuerySet", "Message", "Preset", "PresetQuerySet", "Provider", "ProviderModel", "Quota", "Usage",
    "lease_deadline", "members_changed",
]
