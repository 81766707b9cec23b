"""Conversations as downloadable files: JSON (every branch) or Markdown (the branch on screen).

The JSON carries a format marker, `{"format": "teamchat", "version": 1, ...}`,
whether it holds one conversation (its fields beside the marker) or all of a
member's (`conversations`: a list of the same). `chat/imports.py` reads both.
"""

from __future__ import annotations

from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.chat.context import branch
from conversations.chat.serializers import conversation_dict, message_dict
from conversations.models import Conversation, Message

FORMAT = "teamchat"
VERSION = 1


def _messages_of(conversations: list[Conversation]) -> dict:
    """Every message of these conversations in one query: {conversation id: {message id: message}}."""
    found: dict = {conversation.id: {} for conversation in conversations}
    for message in Message.objects.filter(conversation__in=[c.id for c in conversations]).order_by("created_at"):
        found[message.conversation_id][message.id] = message
    return found


def conversation_json(conversation: Conversation, messages: dict, *, review: bool = False) -> dict:
    """The conversation as the API gives it, its current leaf, and every message oldest first.

    `review` adds what staff review needs: the owner, and each reply's recorded request
    (what the model was sent)."""
    data = conversation_dict(conversation)
    data["current_leaf_id"] = str(conversation.current_leaf_id) if conversation.current_leaf_id else None
    if review:
        data["owner"] = conversation.owner.get_username()
    data["messages"] = []
    for message in messages.values():
        item = message_dict(message)
        if review and message.request is not None:
            item["request"] = message.request
        data["messages"].append(item)
    return data


def as_json(conversation: Conversation) -> dict:
    """One conversation, with the marker that lets it be imported again."""
    messages = _messages_of([conversation])[conversation.id]
    return {"format": FORMAT, "version": VERSION, **conversation_json(conversation, messages)}


def all_as_json(conversations: list[Conversation], *, review: bool = False) -> dict:
    """Every conversation given (a member's, newest first), in one file that imports again."""
    messages = _messages_of(conversations)
    return {
        "format": FORMAT, "version": VERSION, "exported_at": timezone.now().isoformat(),
        "conversations": [conversation_json(c, messages[c.id], review=review) for c in conversations],
    }


def as_markdown(conversation: Conversation, messages: dict | None = None, *, review: bool = False) -> str:
    """The conversation's current branch as Markdown; `messages` when already loaded. For staff
    review (`review`), the owner is named, and their messages are headed with their name."""
    if messages is None:
        messages = _messages_of([conversation])[conversation.id]
    lines = [f"# {conversation.title or _('Conversation')}", ""]
    if review:
        lines += [_("Owner: %(owner)s") % {"owner": conversation.owner.get_username()}, ""]
    lines += [_("Model: %(model)s") % {"model": conversation.model}, ""]
    if conversation.system_prompt:
        lines += [f"## {_('System')}", "", conversation.system_prompt, ""]
    headings = {"user": conversation.owner.get_username() if review else _("You"),
                "assistant": _("Assistant"), "system": _("System")}
    for message in branch(messages, conversation.current_leaf_id):
        heading = headings.get(message.role, message.role)
        if message.status != "complete":
            heading += f" ({message.status})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)


def all_as_markdown(conversations: list[Conversation], *, review: bool = False) -> str:
    """Each conversation's current branch, one after another."""
    messages = _messages_of(conversations)
    return "\n---\n\n".join(as_markdown(c, messages[c.id], review=review) for c in conversations)
