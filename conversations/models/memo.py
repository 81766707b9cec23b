"""Per-process memos of small reads that every turn makes and staff rarely change.

A send asks which provider serves the conversation's model to this member and
what the member's limits are: two queries on every turn, over small tables that
change only when staff edit providers, models, groups or quotas. A `Memo` keeps
such a table in this process for `MEMO_SECONDS` (5 by default; 0 turns it off),
whole, so that a burst of sends by many members reads it once.

When any of those rows change through the ORM (a save, a delete, a group
membership) every memo of this process is cleared at once and again when the
transaction commits, so this process never answers from before a change it
made. Other processes (daphne replicas, the admin's) notice within
`MEMO_SECONDS`: a limit staff lower applies to running processes a few seconds
later, which is the price of not reading it on every send. A `QuerySet.update`
sends no signals, so it too waits for the memo to expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from django.conf import settings
from django.db import transaction

_memos: list[Memo] = []


class Memo:
    def __init__(self, name: str):
        self.name = name
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        _memos.append(self)

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        seconds = settings.MEMO_SECONDS
        if seconds <= 0:
            return compute()
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = _generation
        value = compute()
        with self._lock:
            if generation == _generation:  # nothing was cleared while it was read
                self._values[key] = (now + seconds, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_generation = 0


def clear_all() -> None:
    """Forget every memo of this process (a read under way when this runs is not kept)."""
    global _generation
    _generation += 1
    for memo in _memos:
        memo.clear()


def changed(**_kwargs) -> None:
    """A signal receiver: rows a memo depends on changed; forget now and after the commit."""
    clear_all()
    transaction.on_commit(clear_all)


def connect_signals() -> None:
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from conversations.models.member import Member
    from conversations.models.provider import Provider, ProviderModel, Quota

    for model in (Provider, ProviderModel, Quota, Group):
        post_save.connect(changed, sender=model, dispatch_uid=f"memo.saved.{model.__name__}")
        post_delete.connect(changed, sender=model, dispatch_uid=f"memo.deleted.{model.__name__}")
    for through in (ProviderModel.groups.through, Member.groups.through):
        m2m_changed.connect(changed, sender=through, dispatch_uid=f"memo.m2m.{through.__name__}")
