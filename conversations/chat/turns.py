"""A turn: the member's question stored and a streaming reply started, in one transaction.

`ask`, `edit` and `regenerate` are the writes behind the `send`, `edit` and
`regenerate` frames. Each locks the conversation row, reads its messages
once, and from that one read tells a resent frame (same client_id: nothing
new is made), a reply still streaming (Busy) and the branch the reply
continues. The database's partial unique constraint on streaming replies is
the last word: if another process got there first, the insert fails and the
turn rolls back as Busy.

What a turn announces (after commit, in this order): replies it found dead
(now `interrupted`), the question, the streaming reply, the title, and the
conversation's new place in the member's sidebar.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.chat import broadcast, drain, images, quotas, replies
from conversations.chat.access import NotFound, get_conversation
from conversations.chat.context import branch, build_context, latest_leaf, sibling_ids
from conversations.chat.conversations import announce_changed
from conversations.chat.serializers import message_dict
from conversations.models import Conversation, Message, lease_deadline
from conversations.models.member import opaque_member_id
from conversations.upstream import providers
from conversations.upstream.client import Endpoint

TITLE_CHARS = 80


class Busy(Exception):
    """A reply is already streaming in this conversation (or this process takes no new ones)."""

    def __init__(self, reason: str = ""):
        super().__init__(reason or "streaming")
        self.reason = reason


class Invalid(Exception):
    """The request cannot be carried out as asked: a message of the wrong kind, a model not allowed.

    Either words (already in the reader's language) or a detail for chat/errors.py's words.
    """

    def __init__(self, text: str = "", detail: dict | None = None, code: str = "invalid"):
        super().__init__(text or (detail or {}).get("reason", code))
        self.text = text
        self.detail = detail
        self.code = code  # invalid, or too_large for an image over the limits


@dataclass
class Turn:
    """A started turn: what the reply sends upstream, and who it is for."""

    conversation_id: uuid.UUID
    owner_id: int | None = None
    reply: Message | None = None
    body: dict | None = None
    endpoint: Endpoint | None = None  # where the reply is requested (its provider)
    name_it: bool = False  # the conversation's first reply: the model may title it (chat/titles.py)
    # A resent frame: nothing was made; `existing` is the stored message, for the resending tab only.
    duplicate: bool = False
    existing: list[dict] = field(default_factory=list)


def ask(user, conversation_id, text: str, parts: list | None, client_id: uuid.UUID | None) -> Turn:
    """Store the member's message under the branch on screen and start a reply to it."""
    return _in_turn(user, conversation_id, lambda conversation, messages: _question(
        user, conversation, messages, conversation.current_leaf_id, text, parts, client_id))


def edit(user, conversation_id, message_id: uuid.UUID, text: str, parts: list | None,
         client_id: uuid.UUID | None) -> Turn:
    """A new version of a question, as its sibling, and a reply to it."""

    def make(conversation, messages):
        original = messages.get(message_id)
        if original is None:
            raise NotFound("message")
        if original.role != Message.Role.USER:
            raise Invalid(_("Only a member's message can be edited."))
        return _question(user, conversation, messages, original.parent_id, text, parts, client_id)

    return _in_turn(user, conversation_id, make)


def regenerate(user, conversation_id, message_id: uuid.UUID | None, client_id: uuid.UUID | None = None) -> Turn:
    """A new reply to the same question, as a sibling of the old reply."""

    def make(conversation, messages):
        if (existing := _by_client_id(messages, client_id)) is not None:
            return Turn(conversation.id, conversation.owner_id, duplicate=True, existing=[message_dict(existing)])
        old = messages.get(message_id or conversation.current_leaf_id)
        if old is None:
            raise NotFound("message")
        if old.role != Message.Role.ASSISTANT or old.parent_id is None:
            raise Invalid(_("Only an assistant reply can be regenerated."))
        question = messages[old.parent_id]
        choice = _make_room(user, conversation, messages, question.content_parts)
        return _start_reply(conversation, messages, question, choice, client_id)

    return _in_turn(user, conversation_id, make)


def select(user, conversation_id, message_id: uuid.UUID) -> None:
    """Show the branch through `message_id` (its newest end): the next question continues it.

    Refused as Busy while a reply streams: the tabs would leave the reply they follow. A reply
    whose process died is swept first, as a send would. Every tab of the conversation is told
    to read a fresh snapshot.
    """
    with transaction.atomic():
        conversation = get_conversation(user, conversation_id, lock=True)
        messages = {m.id: m for m in Message.objects.filter(conversation=conversation)}
        _sweep_dead(conversation, messages)
        leaf = latest_leaf(messages, message_id)
        if leaf is None:
            raise NotFound("message")
        if leaf.id == conversation.current_leaf_id:
            return
        conversation.current_leaf = leaf
        conversation.save(update_fields=["current_leaf"])
        broadcast.announce(broadcast.conversation_group(conversation.id), {"type": "branch.changed"})


def _in_turn(user, conversation_id, make) -> Turn:
    try:
        with transaction.atomic():
            conversation = get_conversation(user, conversation_id, lock=True, with_provider=True)
            messages = {m.id: m for m in Message.objects.filter(conversation=conversation)}
            return make(conversation, messages)
    except IntegrityError:
        # Only reached if a writer did not take the conversation's lock: the constraint is the last word.
        raise Busy() from None


def _by_client_id(messages: dict, client_id) -> Message | None:
    if client_id is None:
        return None
    return next((m for m in messages.values() if m.client_id == client_id), None)


def _question(user, conversation: Conversation, messages: dict, parent_id, text: str, parts: list | None,
              client_id: uuid.UUID | None) -> Turn:
    if (existing := _by_client_id(messages, client_id)) is not None:
        return Turn(conversation.id, conversation.owner_id, duplicate=True, existing=[message_dict(existing)])
    choice = _make_room(user, conversation, messages, parts)
    # Inserted with its reply, in one statement (_start_reply).
    question = Message(
        conversation=conversation, parent_id=parent_id, role=Message.Role.USER,
        content=text, content_parts=parts, client_id=client_id,
    )
    messages[question.id] = question
    broadcast.announce(broadcast.conversation_group(conversation.id), broadcast.frame_event(
        {"type": "message", "message": message_dict(question, sibling_ids(messages, question))}))
    if not conversation.title:
        conversation.title = _title_from(text)
        conversation.title_source = Conversation.TitleSource.FIRST_WORDS
        title_event = broadcast.frame_event({"type": "title", "title": conversation.title})
    else:
        title_event = None
    turn = _start_reply(conversation, messages, question, choice)
    if title_event is not None:
        broadcast.announce(broadcast.conversation_group(conversation.id), title_event)
    return turn


def _make_room(user, conversation: Conversation, messages: dict, parts: list | None) -> providers.Choice:
    """Everything a turn must pass before anything is stored: this process takes turns, no reply
    streams (replies whose process died are swept), the model is the member's to use and takes
    what is sent, and no limit of the team's is reached. Returns the model's provider choice."""
    if drain.draining():  # this process is stopping: another takes the turn
        raise Busy("draining")
    _sweep_dead(conversation, messages)
    try:
        images.check_owned(user, parts)
    except images.ImageRefused as refused:
        raise Invalid(detail=refused.detail, code=refused.code) from None
    choice = providers.resolve(user, conversation.model, conversation.provider)
    if choice is None:
        raise Invalid(detail={"reason": "model_not_allowed", "model": conversation.model})
    if not choice.images and any(part.get("type") == "image_url" for part in parts or ()):
        raise Invalid(detail={"reason": "model_without_images", "model": conversation.model})
    quotas.check(user)
    return choice


def _sweep_dead(conversation: Conversation, messages: dict) -> None:
    """Raise Busy while a reply streams; a streaming reply whose lease passed (its process died)
    is ended as interrupted first, and `messages` updated."""
    streaming = [m for m in messages.values() if m.status == Message.Status.STREAMING]
    if not streaming:
        return
    now = timezone.now()
    if any(m.lease_expires_at is None or m.lease_expires_at >= now for m in streaming):
        raise Busy()
    for message in replies.sweep(conversation, [m.id for m in streaming]):
        messages[message.id] = message
    if any(m.status == Message.Status.STREAMING for m in messages.values()):
        raise Busy()  # a late write renewed its lease while we looked: it lives


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _start_reply(conversation: Conversation, messages: dict, question: Message, choice: providers.Choice,
                 client_id: uuid.UUID | None = None) -> Turn:
    """Create the streaming reply row and the request it will send upstream.

    A question not yet stored (a send or an edit) is inserted with its reply, in one
    statement; the constraints hold for both rows as they would for two inserts.
    """
    params = dict(conversation.params or {})
    context = build_context(conversation, branch(messages, question.id), params.get("max_tokens"),
                            choice.context_length)
    # Strictly after its question, which the order of a conversation's messages relies on.
    now = max(timezone.now(), question.created_at + timedelta(microseconds=1))
    reply = Message(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        client_id=client_id,
        lease_expires_at=lease_deadline(),
        run_id=uuid.uuid4(),
        created_at=now,
        updated_at=now,
        request={
            "model": conversation.model,
            "provider": choice.provider.name if choice.provider else "",
            "params": params,
            "system_prompt": conversation.system_prompt,
            "message_ids": context.message_ids,
            "dropped_messages": context.dropped,
            "estimated_tokens": context.estimated_tokens,
        },
    )
    Message.objects.bulk_create([question, reply] if question._state.adding else [reply])
    messages[reply.id] = reply
    conversation.current_leaf = reply
    conversation.updated_at = now
    conversation.save(update_fields=["current_leaf", "title", "title_source", "updated_at"])
    broadcast.announce(
        broadcast.conversation_group(conversation.id),
        broadcast.frame_event({"type": "message", "message": message_dict(reply, sibling_ids(messages, reply))},
                              message_id=str(reply.id), streaming=True),
    )
    announce_changed(conversation, "conversation_updated")
    body = {  # the parameters first: none of them may replace what the server builds
        **params,
        "model": conversation.model,
        "messages": context.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": opaque_member_id(conversation.owner_id),  # never a name or an email
    }
    first = not any(m.role == Message.Role.ASSISTANT and m.id != reply.id for m in messages.values())
    return Turn(conversation.id, conversation.owner_id, reply=reply, body=body,
                endpoint=providers.endpoint_for(choice.provider),
                name_it=first and conversation.title_source == Conversation.TitleSource.FIRST_WORDS)


__all__ = ["Busy", "Invalid", "NotFound", "Turn", "ask", "edit", "regenerate", "select"]
