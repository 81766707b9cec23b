"""What the team spent over a range: per member, per model, per day (the admin's usage page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations.models import Usage


@dataclass
class Row:
    name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    estimated: int  # requests whose counts are estimates

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Report:
    by_member: list[Row]
    by_model: list[Row]
    by_day: list[tuple[str, str, int]] = field(default_factory=list)  # (day, model, tokens)
    days: list[str] = field(default_factory=list)  # every day of the range, used or not

    @property
    def total(self) -> Row:
        rows = self.by_member
        return Row("", sum(r.requests for r in rows), sum(r.prompt_tokens for r in rows),
                   sum(r.completion_tokens for r in rows), sum(r.estimated for r in rows))

    def chart(self) -> dict:
        """Tokens per day per model, as uPlot wants them: x (days), then one series per model."""
        days = self.days or sorted({day for day, _model, _tokens in self.by_day})
        models = sorted({model for _day, model, _tokens in self.by_day})
        tokens = {(day, model): value for day, model, value in self.by_day}
        return {"days": days, "series": [{"label": model, "values": [tokens.get((day, model), 0) for day in days]}
                                         for model in models]}


def _rows(queryset, key: str) -> list[Row]:
    grouped = (queryset.values(key).annotate(
        requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
        estimates=Count("id", filter=Q(estimated=True)),
    ).order_by(F("prompt").desc(nulls_last=True), key))
    return [Row(str(item[key]), item["requests"], item["prompt"] or 0, item["completion"] or 0, item["estimates"])
            for item in grouped]


def report(since: datetime, until: datetime) -> Report:
    """What was spent from `since` to `until` (aware datetimes at local midnights)."""
    usage = Usage.objects.filter(created_at__gte=since, created_at__lt=until)
    first, last = timezone.localdate(since), timezone.localdate(until - timedelta(microseconds=1))
    days = [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
    by_day = (usage.annotate(day=TruncDate("created_at")).values("day", "model")
              .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens"))).order_by("day", "model"))
    return Report(
        by_member=_rows(usage, "member__username"),
        by_model=_rows(usage, "model"),
        by_day=[(item["day"].isoformat(), item["model"], item["tokens"] or 0) for item in by_day],
        days=days,
    )
