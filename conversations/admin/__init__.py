"""The Django admin, staff's tool: one module per concern, registered on import."""

from conversations.admin import operations, people, presets, review  # noqa: F401
