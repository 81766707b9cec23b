"""Database writes of a chat turn, each one transaction, all scoped by owner.

These are plain synchronous functions (the async side calls them through
database_sync_to_async). They validate, write atomically and return what the
caller must announce once the transaction has committed; they never talk to
the channel layer themselves, so no socket hears of a row a rollback removes.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.chat.context import build_context, load_branch
from conversations.chat.serializers import conversation_dict, message_dict
from conversations.models import Conversation, Message, lease_deadline

TITLE_CHARS = 80


# One pool for the process: each thread keeps one database connection, so the
# pool's size bounds the connections a daphne process opens.
_db_threads = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="db")


def in_thread(func):
    """Run an action from async code in a worker thread with its own connection.

    Not the single thread-sensitive thread: a burst of sends, flushes and
    snapshots would queue behind each other there while Postgres sits idle.
    """
    return database_sync_to_async(func, thread_sensitive=False, executor=_db_threads)


class NotFound(Exception):
    """No such conversation or message for this member (also: someone else's)."""


class Busy(Exception):
    """A reply is already streaming in this conversation."""


class Invalid(Exception):
    """The request names a message that cannot be used for this action."""


@dataclass
class Turn:
    """What a started turn must announce, and what the reply must send upstream."""

    conversation_id: uuid.UUID
    reply: Message | None = None
    body: dict | None = None
    announce: list[dict] = field(default_factory=list)  # message dicts, oldest first
    title: str | None = None  # set when the conversation just got its title
    duplicate: bool = False  # the client_id was already used: nothing was created


def get_conversation(user, conversation_id, *, lock: bool = False) -> Conversation:
    queryset = Conversation.objects.owned_by(user)
    if lock:
        queryset = queryset.select_for_update()
    try:
        return queryset.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError):
        raise NotFound from None


def expire_stale_replies(conversation: Conversation) -> list[Message]:
    """Mark replies whose process died (lease passed) as interrupted."""
    now = timezone.now()
    stale = list(
        conversation.messages.filter(status=Message.Status.STREAMING, lease_expires_at__lt=now)
    )
    for message in stale:
        message.status = Message.Status.INTERRUPTED
        message.error_code = "interrupted"
        message.error_message = "The server stopped before this reply finished; the text so far is kept."
        message.lease_expires_at = None
        message.updated_at = now
        message.save(update_fields=["status", "error_code", "error_message", "lease_expires_at", "updated_at"])
    return stale


def start_turn(user, conversation_id, text: str, parts: list | None, client_id: uuid.UUID | None) -> Turn:
    """Store the member's message and a streaming reply to it, or raise Busy."""
    with transaction.atomic():
        conversation = get_conversation(user, conversation_id, lock=True)
        return _ask(conversation, conversation.current_leaf_id, text, parts, client_id)


def regenerate(user, conversation_id, message_id: uuid.UUID | None) -> Turn:
    """A new reply to the same question, as a sibling of the old reply."""
    with transaction.atomic():
        conversation = get_conversation(user, conversation_id, lock=True)
        expired = _make_room(conversation)
        target_id = message_id or conversation.current_leaf_id
        old = conversation.messages.filter(pk=target_id).first() if target_id else None
        if old is None:
            raise NotFound
        if old.role != Message.Role.ASSISTANT or old.parent_id is None:
            raise Invalid("Only an assistant reply can be regenerated.")
        turn = _start_reply(conversation, old.parent)
        turn.announce = [message_dict(m) for m in expired] + turn.announce
        return turn


def edit(user, conversation_id, message_id: uuid.UUID, text: str, parts: list | None,
         client_id: uuid.UUID | None) -> Turn:
    """A new version of a question, as a sibling branch, and a reply to it."""
    with transaction.atomic():
        conversation = get_conversation(user, conversation_id, lock=True)
        original = conversation.messages.filter(pk=message_id).first()
        if original is None:
            raise NotFound
        if original.role != Message.Role.USER:
            raise Invalid("Only a member's message can be edited.")
        return _ask(conversation, original.parent_id, text, parts, client_id)


def _ask(conversation: Conversation, parent_id, text: str, parts: list | None,
         client_id: uuid.UUID | None) -> Turn:
    """Store a question under `parent_id` and start its reply (inside the caller's transaction)."""
    if client_id is not None:
        existing = conversation.messages.filter(client_id=client_id).first()
        if existing is not None:
            return Turn(conversation.id, announce=[message_dict(existing)], duplicate=True)
    expired = _make_room(conversation)
    question = Message.objects.create(
        conversation=conversation,
        parent_id=parent_id,
        role=Message.Role.USER,
        content=text,
        content_parts=parts,
        client_id=client_id,
    )
    title = None
    if not conversation.title:
        title = conversation.title = _title_from(text)
    turn = _start_reply(conversation, question)
    turn.announce = [message_dict(m) for m in expired] + [message_dict(question)] + turn.announce
    turn.title = title
    return turn


def _make_room(conversation: Conversation) -> list[Message]:
    """Free the conversation of replies whose process died; raise Busy if one still streams."""
    expired = expire_stale_replies(conversation)
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        raise Busy
    return expired


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _start_reply(conversation: Conversation, question: Message) -> Turn:
    """Create the streaming reply row and the request it will send upstream.

    The insert runs in a savepoint: if another process started a reply in the
    meantime, the database's one-streaming-reply constraint refuses it and the
    whole turn rolls back as Busy.
    """
    path = load_branch(conversation, question.id)
    params = dict(conversation.params or {})
    context = build_context(conversation, path, params.get("max_tokens"))
    now = timezone.now()
    reply = Message(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        lease_expires_at=lease_deadline(),
        created_at=now,
        updated_at=now,
        request={
            "model": conversation.model,
            "params": params,
            "system_prompt": conversation.system_prompt,
            "message_ids": context.message_ids,
            "dropped_messages": context.dropped,
            "estimated_tokens": context.estimated_tokens,
        },
    )
    try:
        with transaction.atomic():
            reply.save(force_insert=True)
    except IntegrityError:
        raise Busy from None
    conversation.current_leaf = reply
    conversation.updated_at = now
    conversation.save(update_fields=["current_leaf", "title", "updated_at"])
    body = {  # the parameters first: none of them may replace what the server builds
        **params,
        "model": conversation.model,
        "messages": context.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Turn(conversation.id, reply=reply, body=body, announce=[message_dict(reply)])


def save_progress(reply_id: uuid.UUID, text: str) -> bool:
    """Flush a streaming reply's text and renew its lease; False if it is no longer ours."""
    return bool(
        Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
            content=text, lease_expires_at=lease_deadline(), updated_at=timezone.now()
        )
    )


def finish_reply(reply_id: uuid.UUID, *, text: str, status: str, finish_reason: str = "",
                 usage: dict | None = None, error_code: str = "", error_message: str = "") -> bool:
    """Write a reply's final state in one update; False if the row is gone (conversation deleted)."""
    return bool(
        Message.objects.filter(pk=reply_id).update(
            content=text,
            status=status,
            finish_reason=finish_reason or "",
            usage=usage,
            error_code=error_code,
            error_message=error_message,
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
    )


def streaming_reply_id(user, conversation_id) -> uuid.UUID | None:
    """The id of the reply streaming in this conversation, checking ownership."""
    conversation = get_conversation(user, conversation_id)
    expire_stale_replies(conversation)
    return (
        conversation.messages.filter(status=Message.Status.STREAMING)
        .values_list("id", flat=True)
        .first()
    )


def snapshot(user, conversation_id) -> dict:
    """The conversation, its current branch and the reply streaming, if any."""
    conversation = get_conversation(user, conversation_id)
    expire_stale_replies(conversation)
    path = load_branch(conversation, conversation.current_leaf_id)
    messages = [message_dict(m) for m in path]
    active = next((m for m in messages if m["status"] == Message.Status.STREAMING), None)
    conv = conversation_dict(conversation)
    return {
        "type": "snapshot",
        "conversation": {key: conv[key] for key in ("id", "title", "model", "params")},
        "messages": messages,
        "active": active,
    }


def message_text(user, message_id) -> str:
    return (
        Message.objects.filter(pk=message_id, conversation__in=Conversation.objects.owned_by(user))
        .values_list("content", flat=True)
        .first()
        or ""
    )
