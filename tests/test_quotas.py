"""The team's limits: checked before anything is stored or sent upstream, under the member's lock,
so two tabs cannot both spend the last tokens; every reply counts, however it ended."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from conversations.chat import quotas, replies, turns
from conversations.models import Message, Quota, Usage
from tests.conftest import follow_reply, open_tab

pytestmark = pytest.mark.django_db(transaction=True)


def spend(member, tokens: int, status: str = "complete", at=None) -> None:
    Usage.objects.create(member=member.user, model="fake-model", prompt_tokens=tokens // 2,
                         completion_tokens=tokens - tokens // 2, status=status, created_at=at or timezone.now())


async def refused(tab) -> dict:
    frame = await tab.until(lambda f: f["type"] == "error")
    assert frame["code"] == "usage_limit", frame
    return frame


async def test_an_exhausted_quota_sends_nothing_upstream_and_says_which_limit_and_when(alice, upstream, sockets):
    await database_sync_to_async(Quota.objects.create)(member=None, tokens_per_day=1000)
    await database_sync_to_async(spend)(alice, 1000)
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="one more?", client_id=str(uuid.uuid4()))
    error = await refused(tab)
    assert error["detail"]["reason"] == "tokens_per_day" and error["detail"]["limit"] == 1000
    assert error["detail"]["retry_after"] > 0 and error["detail"]["resets_at"]
    assert "1000" in error["message"] and "today" in error["message"]
    assert upstream.requests == []
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_two_tabs_racing_for_the_last_tokens_start_at_most_one_reply(alice, upstream, sockets):
    await database_sync_to_async(Quota.objects.create)(member=alice.user, tokens_per_day=1000)
    await database_sync_to_async(spend)(alice, 999)  # one token left
    one, two = [await database_sync_to_async(alice.conversation)() for _ in range(2)]
    tab_one, tab_two = await open_tab(sockets, alice, one), await open_tab(sockets, alice, two)
    slow = 'fake:{"tokens": 30, "delay": 0.02}'
    await asyncio.gather(
        tab_one.send(type="send", content=f"first {slow}", client_id=str(uuid.uuid4())),
        tab_two.send(type="send", content=f"second {slow}", client_id=str(uuid.uuid4())),
    )
    outcomes = []
    for tab in (tab_one, tab_two):
        frame = await tab.until(lambda f: f["type"] in ("error", "done"))
        outcomes.append(frame["code"] if frame["type"] == "error" else "done")
    assert sorted(outcomes) == ["done", "usage_limit"]
    assert len(upstream.requests) == 1


async def test_requests_per_minute(alice, upstream, sockets):
    await database_sync_to_async(Quota.objects.create)(member=None, requests_per_minute=2)
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    for text in ("one", "two"):
        await tab.send(type="send", content=text, client_id=str(uuid.uuid4()))
        assert (await follow_reply(tab.recv)).end["type"] == "done"
    await tab.send(type="send", content="three", client_id=str(uuid.uuid4()))
    error = await refused(tab)
    assert error["detail"]["reason"] == "requests_per_minute" and 1 <= error["detail"]["retry_after"] <= 60
    assert len(upstream.requests) == 2


def test_a_members_own_limit_wins_over_the_team_default_and_blank_falls_back(alice, bob):
    Quota.objects.create(member=None, tokens_per_day=100, tokens_per_month=5000)
    Quota.objects.create(member=alice.user, tokens_per_day=10_000)
    assert quotas.limits_for(alice.user) == quotas.Limits(10_000, 5000, None)
    assert quotas.limits_for(bob.user) == quotas.Limits(100, 5000, None)


@pytest.mark.parametrize("status", ["stopped", "error", "interrupted"])
def test_stopped_and_failed_replies_count_too(alice, status):
    Quota.objects.create(member=None, tokens_per_month=50)
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello " * 20, None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="a long partial answer " * 10, status=status,
                         error_code="upstream_error" if status == "error" else "")
    with pytest.raises(quotas.UsageLimit) as caught:
        turns.ask(alice.user, conversation.id, "again", None, uuid.uuid4())
    assert caught.value.detail["reason"] == "tokens_per_month"


def test_a_running_reply_counts_its_prompt_as_already_spent(alice):
    Quota.objects.create(member=None, tokens_per_day=10)  # the question's ~14 tokens are reserved
    first = alice.conversation()
    turns.ask(alice.user, first.id, "a question of some forty characters long", None, uuid.uuid4())
    assert Usage.objects.count() == 0  # still streaming: nothing recorded yet
    with pytest.raises(quotas.UsageLimit):
        turns.ask(alice.user, alice.conversation().id, "another", None, uuid.uuid4())


def test_the_day_resets_in_the_sites_time_zone(alice, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    Quota.objects.create(member=None, tokens_per_day=100)
    yesterday = timezone.now() - timedelta(days=1, hours=1)
    spend(alice, 500, at=yesterday)
    with transaction.atomic():
        quotas.check(alice.user)  # yesterday's tokens are not today's
    spend(alice, 100)
    with pytest.raises(quotas.UsageLimit) as caught, transaction.atomic():
        quotas.check(alice.user)
    resets = timezone.localtime(datetime.fromisoformat(caught.value.detail["resets_at"]))
    assert (resets.hour, resets.minute) == (0, 0) and resets > timezone.now()


def test_members_see_their_usage_and_limits_on_their_account_page(alice, bob):
    Quota.objects.create(member=None, tokens_per_day=5000, requests_per_minute=12)
    spend(alice, 1234)
    spend(bob, 999)
    page = alice.client.get("/account/").content.decode()
    assert "1234 of 5000" in page and "12" in page
    assert "999" not in page  # someone else's spending
