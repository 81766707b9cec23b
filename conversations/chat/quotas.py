"""The team's limits on what a member spends: tokens per day and per month, requests per minute.

Checked in a turn's transaction before anything is stored or sent upstream,
with the member's row locked: two tabs (or two processes) of one member start
their turns one at a time, so they cannot both spend the last tokens. A
reply still streaming counts with its prompt's estimate as already spent.
Every reply counts once it ends, however it ended (models/usage.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Sum
from django.utils import timezone

from conversations.models import Member, Message, Quota, Usage
from conversations.models.memo import Memo

WINDOW = timedelta(minutes=1)
_quota_rows = Memo("quotas.rows")  # every Quota row, by member id (None: the team default)


class UsageLimit(Exception):
    """A limit the team set is reached; `detail` says which, and when it resets."""

    def __init__(self, detail: dict):
        super().__init__(detail["reason"])
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_minute: int | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.tokens_per_day, self.tokens_per_month,
                                                   self.requests_per_minute))


def limits_for(member) -> Limits:
    """The member's own limits where set, else the team's default (no row: no limit).

    Every send asks; staff rarely change them: the quota rows are read once per
    `MEMO_SECONDS` per process (models/memo.py), for every member at once.
    """
    rows = _quota_rows.get("all", lambda: {row.member_id: row for row in Quota.objects.all()})
    own, team = rows.get(member.pk), rows.get(None)

    def pick(name):
        for row in (own, team):
            if row is not None and getattr(row, name) is not None:
                return getattr(row, name)
        return None

    return Limits(pick("tokens_per_day"), pick("tokens_per_month"), pick("requests_per_minute"))


def periods(now: datetime) -> tuple[datetime, datetime, datetime, datetime]:
    """This day's and this month's start and end, in the site's time zone."""
    local = timezone.localtime(now)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return day, day + timedelta(days=1), month, next_month


def spent(member, since: datetime) -> int:
    """Tokens of the member's replies that ended since `since`."""
    total = Usage.objects.filter(member=member, created_at__gte=since).aggregate(
        tokens=Sum(F("prompt_tokens") + F("completion_tokens")))["tokens"]
    return int(total or 0)


def reserved(member) -> int:
    """Prompt estimates of the member's replies still streaming (counted before they end)."""
    rows = Message.objects.filter(conversation__owner=member, status=Message.Status.STREAMING)
    return sum(int((request or {}).get("estimated_tokens") or 0) for request in rows.values_list("request", flat=True))


def check(member, now: datetime | None = None) -> None:
    """Raise UsageLimit if a limit is reached; locks the member's row (call inside the turn's transaction)."""
    limits = limits_for(member)
    if not limits:
        return
    now = now or timezone.now()
    Member.objects.select_for_update().filter(pk=member.pk).values_list("pk", flat=True).first()
    if limits.requests_per_minute is not None:
        started = list(Message.objects.filter(
            conversation__owner=member, role=Message.Role.ASSISTANT, created_at__gte=now - WINDOW,
        ).order_by("created_at").values_list("created_at", flat=True))
        if len(started) >= limits.requests_per_minute:
            _refuse("requests_per_minute", limits.requests_per_minute, started[0] + WINDOW, now)
    day, next_day, month, next_month = periods(now)
    held = reserved(member)
    if limits.tokens_per_day is not None and spent(member, day) + held >= limits.tokens_per_day:
        _refuse("tokens_per_day", limits.tokens_per_day, next_day, now)
    if limits.tokens_per_month is not None and spent(member, month) + held >= limits.tokens_per_month:
        _refuse("tokens_per_month", limits.tokens_per_month, next_month, now)


def _refuse(reason: str, limit: int, resets: datetime, now: datetime) -> None:
    raise UsageLimit({"reason": reason, "limit": limit, "resets_at": resets.isoformat(),
                      "retry_after": max(1, math.ceil((resets - now).total_seconds()))})


def summary(member, now: datetime | None = None) -> dict:
    """What the member has spent and may spend (the account page)."""
    now = now or timezone.now()
    limits = limits_for(member)
    day, next_day, month, next_month = periods(now)
    return {
        "tokens_today": spent(member, day), "tokens_per_day": limits.tokens_per_day, "day_resets_at": next_day,
        "tokens_this_month": spent(member, month), "tokens_per_month": limits.tokens_per_month,
        "month_resets_at": next_month, "requests_per_minute": limits.requests_per_minute,
    }
