"""The Django admin, staff's tool: one module per concern, registered on import.

review.py: conversations, transcripts, exports. people.py: members, invite links.
audit.py: the audit log of staff reading. operations.py: providers, quotas, usage.
presets.py: the team's presets.
"""

from conversations.admin import audit, operations, people, presets, review  # noqa: F401
