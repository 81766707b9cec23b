"""The Django admin, staff's tool: one module per concern, registered on import.

review.py: conversations, transcripts, exports. people.py: members, invite links.
audit.py: the audit log of staff reading.
"""

from conversations.admin import audit, people, review  # noqa: F401
