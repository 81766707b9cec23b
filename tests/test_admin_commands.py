"""Operator commands: the first staff member from the environment, one member's data as JSON,
and the retention purge, each leaving its mark in the audit log where it reads or deletes."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from conversations.models import AuditEntry, Conversation, Message, Usage
from tests.conftest import open_tab
from tests.review_data import make_tree

pytestmark = pytest.mark.django_db(transaction=True)

Member = get_user_model()


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out, **options)
    return out.getvalue()


def test_ensure_staff_creates_the_first_superuser_from_the_environment_once(monkeypatch):
    assert "not set" in run("ensure_staff")
    assert not Member.objects.exists()
    monkeypatch.setenv("ADMIN_USERNAME", "root")
    monkeypatch.setenv("ADMIN_PASSWORD", "a-root-password-long-enough")
    monkeypatch.setenv("ADMIN_EMAIL", "root@example.com")
    said = run("ensure_staff")
    assert "Created superuser 'root'" in said and "a-root-password-long-enough" not in said
    root = Member.objects.get(username="root")
    assert root.is_staff and root.is_superuser and root.email == "root@example.com"
    assert root.check_password("a-root-password-long-enough")
    monkeypatch.setenv("ADMIN_PASSWORD", "a-changed-password-later")
    assert "exists already" in run("ensure_staff")  # a restart never resets a password
    assert Member.objects.get(username="root").check_password("a-root-password-long-enough")


def test_ensure_staff_refuses_a_weak_password_and_makes_a_random_one_when_none_is_given(monkeypatch):
    monkeypatch.setenv("ADMIN_USERNAME", "boss")
    monkeypatch.setenv("ADMIN_PASSWORD", "boss")
    with pytest.raises(CommandError, match="refused"):
        run("ensure_staff")
    assert not Member.objects.exists()
    monkeypatch.delenv("ADMIN_PASSWORD")
    said = run("ensure_staff", role="staff")
    password = said.split("password '")[1].split("'")[0]
    boss = Member.objects.get(username="boss")
    assert boss.is_staff and not boss.is_superuser and boss.check_password(password)


def test_ensure_member_makes_a_plain_member_for_the_demo():
    run("ensure_member", username="demo", password="demo-password", role="member")
    demo = Member.objects.get(username="demo")
    assert not demo.is_staff and demo.check_password("demo-password")
    assert run("ensure_member", if_no_users=True) == ""


def test_export_member_data_writes_their_conversations_usage_and_reviews_and_is_audited(alice, bob, tmp_path):
    tree = make_tree(alice.user)
    make_tree(bob.user, title="Bob's own")
    AuditEntry.record("view", actor_name="reviewer", owner=alice.user, conversation_id=tree.conversation.id)
    target = tmp_path / "alice.json"
    run("export_member_data", "alice", output=str(target))
    data = json.loads(target.read_text())
    assert data["member"]["username"] == "alice"
    assert [c["title"] for c in data["conversations"]] == ["Quarterly numbers"]
    assert len(data["conversations"][0]["messages"]) == 7
    assert len(data["usage"]) == 4 and sum(u["prompt_tokens"] for u in data["usage"]) == 30 + 40 + 40 + 50
    assert data["reviews"] == [{"at": data["reviews"][0]["at"], "action": "view",
                                "conversation_id": str(tree.conversation.id)}]
    assert data["attachments"] == []
    assert "reviewer" not in target.read_text()
    entry = AuditEntry.objects.get(action="member_export")
    assert (entry.owner_name, entry.actor_name, entry.actor_id) == ("alice", "command: export_member_data", None)
    with pytest.raises(CommandError):
        run("export_member_data", "nobody")


def age(conversation, days: int) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now() - timedelta(days=days))


def test_purge_deletes_conversations_past_retention_keeps_usage_and_records_it(alice, bob, settings):
    old = make_tree(alice.user, title="Old").conversation
    older = make_tree(bob.user, title="Older").conversation
    recent = make_tree(alice.user, title="Recent").conversation
    age(old, 40)
    age(older, 400)
    age(recent, 5)

    settings.RETENTION_DAYS = 0
    assert "kept forever" in run("purge_conversations")
    assert Conversation.objects.count() == 3

    settings.RETENTION_DAYS = 30
    said = run("purge_conversations", dry_run=True)
    assert "Would delete 2 conversations (14 messages)" in said
    assert Conversation.objects.count() == 3 and not AuditEntry.objects.exists()

    said = run("purge_conversations", batch=1)
    assert "Deleted 2 conversations (14 messages)" in said
    assert list(Conversation.objects.all()) == [recent]
    assert Message.objects.count() == 7
    assert Usage.objects.count() == 12  # what they cost stays counted
    entries = list(AuditEntry.objects.order_by("id"))
    assert len(entries) == 2  # one per batch, each naming its conversations
    assert {cid for e in entries for cid in e.detail["conversation_ids"]} == {str(old.id), str(older.id)}
    assert all(e.action == "purge" and e.detail["retention_days"] == 30 for e in entries)
    assert run("purge_conversations", days=1).startswith("Deleted 1 conversations")


def test_purge_leaves_a_conversation_whose_reply_is_streaming(alice, settings):
    settings.RETENTION_DAYS = 1
    busy = alice.conversation(title="Still streaming")
    Message.objects.create(conversation=busy, role="assistant", status="streaming", run_id=uuid.uuid4(),
                           lease_expires_at=timezone.now() + timedelta(minutes=1))
    age(busy, 3)
    run("purge_conversations")
    assert Conversation.objects.filter(pk=busy.pk).exists()


async def test_a_purged_conversations_open_tab_is_told(alice, sockets, settings):
    settings.RETENTION_DAYS = 10
    conversation = await database_sync_to_async(alice.conversation)(title="Forgotten")
    tab = await open_tab(sockets, alice, conversation)
    await database_sync_to_async(age)(conversation, 11)
    await database_sync_to_async(run)("purge_conversations")
    told = await tab.until(lambda f: f["type"] == "conversation_deleted")
    assert told["conversation_id"] == str(conversation.id)
