"""Rebuild the upstream `messages` list of a turn from the database.

The browser never sends history: the branch that ends at the new user message
is read in one query and walked through `parent` links, then trimmed from the
oldest end to fit the token budget. The system prompt and the newest user
message are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from conversations.chat import images, tokens
from conversations.models import Attachment, Conversation, Message


@dataclass
class Context:
    messages: list[dict]
    message_ids: list[str]
    estimated_tokens: int
    dropped: int


def branch(messages: dict, leaf_id) -> list[Message]:
    """The path from the root to `leaf_id`, oldest first."""
    path = []
    node = messages.get(leaf_id)
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id)
    path.reverse()
    return path


def sibling_ids(messages: dict, message: Message) -> list[str]:
    """The ids of the message and its siblings (same parent), oldest first: the branch switcher."""
    siblings = [m for m in messages.values() if m.parent_id == message.parent_id]
    siblings.sort(key=lambda m: (m.created_at, str(m.id)))
    return [str(m.id) for m in siblings]


def latest_leaf(messages: dict, message_id) -> Message | None:
    """The end of the branch through `message_id`, following the newest child at each step."""
    node = messages.get(message_id)
    if node is None:
        return None
    children: dict = {}
    for m in messages.values():
        children.setdefault(m.parent_id, []).append(m)
    while children.get(node.id):
        node = max(children[node.id], key=lambda m: (m.created_at, str(m.id)))
    return node


def load_branch(conversation: Conversation, leaf_id) -> list[Message]:
    """Load every message of the conversation once and walk to `leaf_id`."""
    messages = {m.id: m for m in Message.objects.filter(conversation=conversation)}
    return branch(messages, leaf_id)


def estimate_tokens(message: Message) -> int:
    images = sum(1 for part in message.content_parts or () if part.get("type") == "image_url")
    return tokens.estimate_message(message.content, images)


def upstream_message(message: Message, attachments: dict | None = None) -> dict:
    """A message as the model server gets it: the text, or the parts with stored images inline."""
    if message.content_parts is not None:
        return {"role": message.role, "content": images.inline(message.content_parts, attachments or {})}
    return {"role": message.role, "content": message.content}


def should_send(message: Message) -> bool:
    """Skip replies that produced no text (failed before the first token)."""
    return message.role != Message.Role.ASSISTANT or bool(message.content)


def build_context(conversation: Conversation, path: list[Message], max_tokens: int | None,
                  context_length: int | None = None) -> Context:
    """The messages for a request whose newest message is `path[-1]`, within the model's context
    length (or CONTEXT_TOKEN_BUDGET, whichever is smaller) minus what the reply may take."""
    window = min(context_length, settings.CONTEXT_TOKEN_BUDGET) if context_length else settings.CONTEXT_TOKEN_BUDGET
    budget = window - (max_tokens or 0)
    system = []
    if conversation.system_prompt:
        system = [{"role": "system", "content": conversation.system_prompt}]
        budget -= tokens.estimate_message(conversation.system_prompt)
    candidates = [m for m in path if should_send(m)]
    kept: list[Message] = []
    used = 0
    for index, message in enumerate(reversed(candidates)):
        cost = estimate_tokens(message)
        if index > 0 and used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    ids = [i for m in kept for i in images.attachment_ids(m.content_parts)]
    owned = {a.id: a for a in Attachment.objects.filter(pk__in=ids, owner_id=conversation.owner_id)} if ids else {}
    return Context(
        messages=system + [upstream_message(m, owned) for m in kept],
        message_ids=[str(m.id) for m in kept],
        estimated_tokens=used + (tokens.estimate_message(conversation.system_prompt) if system else 0),
        dropped=len(candidates) - len(kept),
    )
