"""A reply's writes after it started: progress, its end, and the sweep of dead ones.

Every write here is conditional, so that two writers can never both decide
how a reply ended:

- The run that generates a reply writes only while the row is still
  `streaming` and still carries its `run_id`. A reply that a sweep already
  marked `interrupted` is never rewritten by a late process.
- The sweep marks `interrupted` only rows still `streaming` whose lease has
  passed, locked with SKIP LOCKED: a live reply in the middle of a write
  holds its row lock and is passed over, and Postgres re-reads the lease of a
  row it waited for, so a reply whose write renewed the lease is left alone.

Usage is recorded in the same transaction as the end, however the reply
ended: the upstream's counts when it sent them, otherwise an estimate
(chat/tokens.py) flagged as estimated.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone, translation

from conversations.chat import broadcast, errors, tokens
from conversations.chat.serializers import message_dict
from conversations.models import Conversation, Message, Usage, lease_deadline


def save_progress(reply_id: uuid.UUID, run_id: uuid.UUID, text: str, reasoning: str = "") -> bool:
    """Flush a streaming reply's text and renew its lease; False if it is no longer this run's."""
    return bool(
        Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING, run_id=run_id).update(
            content=text, reasoning=reasoning, lease_expires_at=lease_deadline(), updated_at=timezone.now()
        )
    )


Progress = tuple[uuid.UUID, uuid.UUID, str, str]  # reply id, run id, text, reasoning


def save_progress_many(rows: list[Progress]) -> set[uuid.UUID]:
    """Flush several streaming replies and renew their leases in one statement; return the ids
    of those still this run's (the others were ended, swept or deleted, and are left alone)."""
    if not rows:
        return set()
    if connection.vendor != "postgresql":  # SQLite, for a trial: one update per reply
        return {reply_id for reply_id, run_id, text, reasoning in rows
                if save_progress(reply_id, run_id, text, reasoning)}
    table = connection.ops.quote_name(Message._meta.db_table)
    values = ", ".join(["(%s::uuid, %s::uuid, %s::text, %s::text)"] * len(rows))
    sql = (
        f"UPDATE {table} AS m"
        " SET content = v.content, reasoning = v.reasoning, lease_expires_at = %s, updated_at = %s"
        f" FROM (VALUES {values}) AS v (id, run_id, content, reasoning)"
        " WHERE m.id = v.id AND m.run_id = v.run_id AND m.status = %s"
        " RETURNING m.id"
    )
    params = [lease_deadline(), timezone.now(), *(value for row in rows for value in row), Message.Status.STREAMING]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {reply_id for (reply_id,) in cursor.fetchall()}


def usage_counts(reported: dict | None, request: dict | None, text: str) -> dict:
    """The upstream's token counts, or an estimate flagged `estimated`."""
    if isinstance(reported, dict):
        prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0:
            return {**reported, "prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}
    prompt = int((request or {}).get("estimated_tokens") or 0)
    completion = tokens.estimate(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "estimated": True}


def finish_reply(reply_id: uuid.UUID, run_id: uuid.UUID, *, text: str, status: str, finish_reason: str = "",
                 usage: dict | None = None, error_code: str = "", error_detail: dict | None = None,
                 ttft_ms: int | None = None, duration_ms: int | None = None, reasoning: str = "",
                 logprobs: list | None = None) -> bool:
    """Write a reply's end, record its usage and announce it; False if it is not this run's any more
    (the conversation was deleted, or a sweep marked it interrupted)."""
    with transaction.atomic():
        # No ORDER BY (the model's or .first()'s): one row by its primary key. The owner is read
        # only for an error's language, the rare end: the others spare the statement its columns.
        found = list(Message.objects.select_for_update(of=("self",)).select_related("conversation")
                     .filter(pk=reply_id, status=Message.Status.STREAMING, run_id=run_id).order_by())
        if not found:
            return False
        reply = found[0]
        counts = usage_counts(usage, reply.request, text + reasoning)
        reply.reasoning, reply.logprobs = reasoning, logprobs
        _end(reply, text=text, status=status, finish_reason=finish_reason or "", usage=counts,
             error_code=error_code, error_detail=error_detail, ttft_ms=ttft_ms, duration_ms=duration_ms)
        if status == Message.Status.ERROR or error_code:
            # Every tab of the member hears it at once: in the language the member chose, if any.
            with translation.override(reply.conversation.owner.chosen_language or settings.LANGUAGE_CODE):
                frame = errors.frame(error_code, error_detail, message_id=str(reply.id))
        else:
            frame = {"type": "done", "message_id": str(reply.id), "status": status,
                     "finish_reason": finish_reason or None, "usage": counts}
        broadcast.announce(
            broadcast.conversation_group(reply.conversation_id),
            broadcast.frame_event(frame, message_id=str(reply.id), length=len(text), reasoning_length=len(reasoning)),
        )
    return True


def _end(reply: Message, *, text: str, status: str, finish_reason: str, usage: dict, error_code: str,
         error_detail: dict | None, ttft_ms: int | None, duration_ms: int | None) -> None:
    now = timezone.now()
    reply.content, reply.status, reply.finish_reason, reply.usage = text, status, finish_reason, usage
    reply.error_code, reply.error_detail = error_code, error_detail
    reply.lease_expires_at, reply.run_id, reply.updated_at = None, None, now
    reply.save(update_fields=["content", "reasoning", "logprobs", "status", "finish_reason", "usage", "error_code",
                              "error_detail", "lease_expires_at", "run_id", "updated_at"])
    Usage.objects.create(
        member_id=reply.conversation.owner_id, reply=reply, conversation_id=reply.conversation_id,
        model=reply.model, provider=(reply.request or {}).get("provider", ""),
        prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
        estimated=bool(usage.get("estimated")), status=status, ttft_ms=ttft_ms, duration_ms=duration_ms,
        created_at=now,
    )


def sweep(conversation: Conversation, candidates: list[uuid.UUID] | None = None) -> list[Message]:
    """Mark this conversation's replies whose lease passed as interrupted (inside the caller's
    transaction); announce and return them. Rows another transaction holds are passed over."""
    stale = Message.objects.select_for_update(skip_locked=True).filter(
        conversation=conversation, status=Message.Status.STREAMING, lease_expires_at__lt=timezone.now()
    )
    if candidates is not None:
        stale = stale.filter(pk__in=candidates)
    swept = []
    for reply in stale:
        reply.conversation = conversation
        _end(reply, text=reply.content, status=Message.Status.INTERRUPTED, finish_reason="",
             usage=usage_counts(None, reply.request, reply.content + reply.reasoning), error_code="interrupted",
             error_detail={"reason": "process_died"}, ttft_ms=None, duration_ms=None)
        broadcast.announce(broadcast.conversation_group(conversation.id),
                           broadcast.frame_event({"type": "message", "message": message_dict(reply)},
                                                 message_id=str(reply.id), length=len(reply.content),
                                                 reasoning_length=len(reply.reasoning)))
        swept.append(reply)
    return swept


def sweep_stale(limit: int = 100) -> int:
    """Sweep every conversation with a reply whose lease passed (a process died); return how many."""
    ids = list(
        Message.objects.filter(status=Message.Status.STREAMING, lease_expires_at__lt=timezone.now())
        .values_list("conversation_id", flat=True).distinct()[:limit]
    )
    count = 0
    for conversation in Conversation.objects.filter(pk__in=ids):
        with transaction.atomic():
            count += len(sweep(conversation))
    return count
