"""Titles the model writes: after a conversation's first reply, a small request in the background.

Until it answers, the title is the first question's start (chat/turns.py).
The model is asked, in a few tokens, for a title in the conversation's own
language; the answer is cleaned (one line, no quotes or "Title:", at most
TITLE_CHARS) and written only if the title is still the automatic one: a
title the member edited is never overwritten, even one edited while the
request ran (the write is conditional). Tabs hear it as a `title` frame and
the member's sidebars as `conversation_updated`. Its tokens are usage like
any other (status `title`). A failure keeps the first-words title, quietly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.chat import broadcast, replies
from conversations.chat.conversations import announce_changed
from conversations.chat.threads import in_thread
from conversations.models import Conversation, Usage
from conversations.models.member import opaque_member_id
from conversations.upstream.client import Endpoint, UpstreamError, stream_chat

log = logging.getLogger(__name__)

TITLE_CHARS = 80
_tasks: set[asyncio.Task] = set()

PROMPT = (
    "Write a title for the conversation below: at most six words, in the language the member "
    "writes in, naming its subject. Answer with the title alone, without quotes.\n\n"
    "Member: {question}\n\nAssistant: {answer}"
)


def start(conversation_id: uuid.UUID, owner_id: int, model: str, endpoint: Endpoint, question: str,
          answer: str) -> asyncio.Task | None:
    """Ask for a title in the background (when the setting is on)."""
    if not settings.MODEL_TITLES:
        return None
    task = asyncio.get_running_loop().create_task(
        _name(conversation_id, owner_id, model, endpoint, question, answer), name=f"title-{conversation_id}")
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("titling a conversation failed", exc_info=task.exception())


def pending() -> list[asyncio.Task]:
    return list(_tasks)


def clean(text: str) -> str:
    """The model's answer as a title: its first line, without quotes, markup or a "Title:" label."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^\s*(#+|\*+|title\s*[:：]|标题\s*[:：])\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'“”‘’「」《》*`").strip()
    line = " ".join(line.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _still_automatic(conversation_id) -> bool:
    return Conversation.objects.filter(pk=conversation_id, title_source=Conversation.TitleSource.FIRST_WORDS).exists()


async def _name(conversation_id, owner_id, model, endpoint, question, answer) -> None:
    if not await in_thread(_still_automatic)(conversation_id):
        return  # named by the member while the reply streamed: no tokens spent on a title
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT.format(question=question[:1500], answer=answer[:1500])}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 24,
        "temperature": 0.2,
        "user": opaque_member_id(owner_id),
    }
    parts, usage = [], None
    try:
        async for chunk in stream_chat(endpoint, body):
            parts.append(chunk.content)
            usage = chunk.usage or usage
    except UpstreamError as error:
        log.info("no title from the model for conversation %s (%s); the first words stay", conversation_id, error)
        return
    title = clean("".join(parts))
    await broadcast.act(_write, conversation_id, owner_id, model, endpoint.provider, title, usage,
                        body["messages"][0]["content"], "".join(parts))


def _write(conversation_id, owner_id, model, provider, title, usage, prompt, text) -> bool:
    """Record the title's usage; set the title if it is still the automatic one, and announce it."""
    counts = replies.usage_counts(usage, {"estimated_tokens": len(prompt) // 4}, text)
    with transaction.atomic():
        Usage.objects.create(member_id=owner_id, conversation_id=conversation_id, model=model, provider=provider,
                             prompt_tokens=counts["prompt_tokens"], completion_tokens=counts["completion_tokens"],
                             estimated=bool(counts.get("estimated")), status="title")
        if not title:
            return False
        updated = Conversation.objects.filter(
            pk=conversation_id, title_source=Conversation.TitleSource.FIRST_WORDS,
        ).update(title=title, title_source=Conversation.TitleSource.MODEL, updated_at=timezone.now())
        if not updated:
            return False  # the member named it meanwhile, or it was deleted
        broadcast.announce(broadcast.conversation_group(conversation_id),
                           broadcast.frame_event({"type": "title", "title": title}))
        announce_changed(Conversation.objects.get(pk=conversation_id), "conversation_updated")
    return True
