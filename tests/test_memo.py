"""Per-process memos of providers and quotas: one read per period, forgotten when staff change the rows."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.chat import quotas
from conversations.models import Provider, ProviderModel, Quota, memo
from conversations.upstream import providers

pytestmark = pytest.mark.django_db(transaction=True)


def queries(func) -> tuple[object, int]:
    with CaptureQueriesContext(connection) as captured:
        result = func()
    return result, len(captured)


@pytest.fixture
def north():
    provider = Provider(name="north", base_url="https://north.example/v1")
    provider.set_api_key("k")
    provider.save()
    model = ProviderModel.objects.create(provider=provider, name="north-large", enabled=True, context_length=1000)
    return provider, model


def test_the_enabled_models_are_read_once_for_every_member(alice, bob, north):
    first, count = queries(lambda: providers.resolve(alice.user, "north-large"))
    again, count_again = queries(lambda: providers.resolve(alice.user, "north-large"))
    other, count_other = queries(lambda: providers.resolve(bob.user, "north-large"))
    default, count_default = queries(lambda: providers.resolve(bob.user, "fake-model"))
    assert count == 2 and count_again == count_other == count_default == 0  # the models, their groups
    assert first == again == other and first.provider.name == "north"
    assert default.provider is None


def test_a_model_kept_for_some_groups_reads_the_members_groups(alice, north):
    _provider, model = north
    model.groups.add(Group.objects.create(name="research"))
    providers.resolve(alice.user, "north-large")
    refused, count = queries(lambda: providers.resolve(alice.user, "north-large"))
    assert refused is None and count == 1


def test_staff_restricting_a_model_to_a_group_applies_at_once(alice, north):
    user = alice.user
    _provider, model = north
    assert providers.resolve(user, "north-large") is not None
    model.groups.add(Group.objects.create(name="research"))
    assert providers.resolve(user, "north-large") is None
    Group.objects.get(name="research").user_set.add(user)
    assert providers.resolve(user, "north-large") is not None


def test_a_disabled_provider_applies_at_once(alice, north):
    provider, _model = north
    assert providers.resolve(alice.user, "north-large").provider == provider
    provider.enabled = False
    provider.save()
    # Not served any more by an enabled provider: the name goes to the default provider.
    assert providers.resolve(alice.user, "north-large").provider is None


def test_limits_are_read_once_for_every_member_and_a_new_quota_applies_at_once(alice, bob):
    user = alice.user
    assert not quotas.limits_for(user)
    _limits, count = queries(lambda: quotas.limits_for(user))
    _limits, count_other = queries(lambda: quotas.limits_for(bob.user))
    assert count == count_other == 0
    Quota.objects.create(member=None, tokens_per_day=100)
    assert quotas.limits_for(user).tokens_per_day == 100
    Quota.objects.create(member=user, tokens_per_day=5)
    assert quotas.limits_for(user).tokens_per_day == 5
    assert quotas.limits_for(bob.user).tokens_per_day == 100
    Quota.objects.filter(member=user).delete()
    assert quotas.limits_for(user).tokens_per_day == 100


def test_without_a_memo_period_every_call_reads(alice, settings):
    settings.MEMO_SECONDS = 0
    quotas.limits_for(alice.user)
    _limits, count = queries(lambda: quotas.limits_for(alice.user))
    assert count == 1


def test_a_read_that_raced_a_change_is_not_kept(alice):
    """A value read while staff's change landed may be from before it: it is used once, not kept."""
    user = alice.user

    def read_then_change():
        value = {row.member_id: row for row in Quota.objects.all()}
        Quota.objects.create(member=None, tokens_per_day=7)  # the signal clears the memos mid-read
        return value

    assert quotas._quota_rows.get("all", read_then_change) == {}
    assert quotas.limits_for(user).tokens_per_day == 7


def test_memo_entries_expire(alice, settings, monkeypatch):
    quotas.limits_for(alice.user)
    clock = memo.time.monotonic() + settings.MEMO_SECONDS + 1
    monkeypatch.setattr(memo.time, "monotonic", lambda: clock)
    Quota.objects.filter(member=None).update(tokens_per_day=3)  # no signal: noticed on expiry
    _limits, count = queries(lambda: quotas.limits_for(alice.user))
    assert count == 1
