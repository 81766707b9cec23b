"""The Django admin, staff's tool: one module per concern, registered on import."""

from conversations.admin import operations, people, review  # noqa: F401
