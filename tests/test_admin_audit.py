"""The audit log: every transcript reading and every export makes exactly one entry naming the
staff member and the conversation, in the transaction of the read; nobody can change an entry;
and members see when their conversations were read."""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.template import Context, Template
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from conversations.accounts.review import review_notice
from conversations.admin import review as review_admin
from conversations.chat import transcripts
from conversations.models import AuditEntry, ImmutableAuditEntry
from tests.review_data import make_tree, question, reply

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/conversations/conversation/"
AUDIT = "/admin/conversations/auditentry/"


def only_entry(**expected) -> AuditEntry:
    entries = list(AuditEntry.objects.all())
    assert len(entries) == 1, entries
    entry = entries[0]
    for name, value in expected.items():
        assert getattr(entry, name) == value, (name, getattr(entry, name))
    return entry


def test_each_transcript_reading_makes_exactly_one_entry(reviewer, alice):
    conversation = make_tree(alice.user).conversation
    assert reviewer.client.get(f"{LIST}{conversation.id}/transcript/").status_code == 200
    entry = only_entry(action="view", actor_id=reviewer.user.pk, actor_name="reviewer",
                       owner_id=alice.user.pk, owner_name="alice", conversation_id=conversation.id)
    assert entry.detail == {"page": 1}
    reviewer.client.get(f"{LIST}{conversation.id}/transcript/")
    assert AuditEntry.objects.filter(action="view", conversation_id=conversation.id).count() == 2


def test_each_conversation_exported_makes_exactly_one_entry(reviewer, alice, bob):
    one, two = make_tree(alice.user).conversation, make_tree(bob.user).conversation
    reviewer.client.post(LIST, {"action": "export_json", "_selected_action": [one.id, two.id], "index": 0})
    entries = list(AuditEntry.objects.order_by("owner_name"))
    assert [(e.action, e.actor_name, e.owner_name, e.conversation_id) for e in entries] == [
        ("export_json", "reviewer", "alice", one.id), ("export_json", "reviewer", "bob", two.id)]
    reviewer.client.post(LIST, {"action": "export_markdown", "_selected_action": [one.id], "index": 0})
    assert AuditEntry.objects.filter(action="export_md").values_list("conversation_id", flat=True).get() == one.id
    assert AuditEntry.objects.count() == 3


def test_a_refused_reading_records_nothing_and_a_failed_one_leaves_no_record(reviewer, alice, settings,
                                                                             monkeypatch):
    conversation = make_tree(alice.user).conversation
    settings.STAFF_REVIEW_ENABLED = False
    assert reviewer.client.get(f"{LIST}{conversation.id}/transcript/").status_code == 403
    assert not AuditEntry.objects.exists()
    settings.STAFF_REVIEW_ENABLED = True

    def broken(*args, **kwargs):
        raise RuntimeError("the page could not be built")

    # The entry is written before the page is rendered: a failure after it rolls it back.
    monkeypatch.setattr(review_admin.TemplateResponse, "render", broken)
    with pytest.raises(RuntimeError):
        reviewer.client.get(f"{LIST}{conversation.id}/transcript/")
    assert not AuditEntry.objects.exists()


def test_a_reading_whose_record_fails_shows_nothing(reviewer, alice, monkeypatch):
    conversation = make_tree(alice.user).conversation
    monkeypatch.setattr(AuditEntry.objects, "create", lambda **fields: (_ for _ in ()).throw(DatabaseError("full")))
    with pytest.raises(DatabaseError):
        reviewer.client.get(f"{LIST}{conversation.id}/transcript/")
    with pytest.raises(DatabaseError):
        reviewer.client.post(LIST, {"action": "export_json", "_selected_action": [conversation.id], "index": 0})


def test_an_audit_entry_cannot_be_added_changed_or_deleted_through_the_admin(reviewer, alice):
    conversation = make_tree(alice.user).conversation
    reviewer.client.get(f"{LIST}{conversation.id}/transcript/")
    entry = only_entry(action="view")
    listing = reviewer.client.get(AUDIT)
    assert listing.status_code == 200 and "reviewer" in listing.content.decode()
    assert 'name="action"' not in listing.content.decode()  # no bulk delete
    page = reviewer.client.get(f"{AUDIT}{entry.pk}/change/")
    assert page.status_code == 200  # read-only
    form = page.content.decode().split('id="auditentry_form"')[1].split("</form>")[0]
    assert not re.search(r"<(input|textarea|select|button)(?![^>]*csrfmiddlewaretoken)", form), form
    forged = {"actor_name": "nobody", "action": "export_json", "owner_name": "bob", "detail": "{}"}
    assert reviewer.client.post(f"{AUDIT}{entry.pk}/change/", forged).status_code == 403
    assert reviewer.client.post(f"{AUDIT}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    reviewer.client.post(AUDIT, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert reviewer.client.get(f"{AUDIT}add/").status_code == 403
    assert reviewer.client.post(f"{AUDIT}add/", forged).status_code == 403
    assert only_entry(action="view", actor_name="reviewer").pk == entry.pk


def test_only_superusers_read_the_audit_log(make_staff, alice):
    conversation = make_tree(alice.user).conversation
    staff = make_staff("auditor", perms=("view_conversation", "view_conversation_content", "view_auditentry",
                                         "change_auditentry", "delete_auditentry"))
    assert staff.client.get(f"{LIST}{conversation.id}/transcript/").status_code == 200
    entry = only_entry(actor_name="auditor")
    assert staff.client.get(AUDIT).status_code == 403
    assert staff.client.get(f"{AUDIT}{entry.pk}/change/").status_code == 403


def test_the_database_itself_refuses_to_change_or_delete_an_entry():
    entry = AuditEntry.record("view", actor_name="someone")
    with pytest.raises(ImmutableAuditEntry):
        entry.save()
    with pytest.raises(ImmutableAuditEntry):
        entry.delete()
    with pytest.raises(ImmutableAuditEntry):
        AuditEntry.objects.filter(pk=entry.pk).update(actor_name="else")
    with pytest.raises(ImmutableAuditEntry):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    for sql in ("UPDATE conversations_auditentry SET actor_name = 'else'", "DELETE FROM conversations_auditentry"):
        with pytest.raises(DatabaseError, match="cannot be changed or deleted"), transaction.atomic(), \
                connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditEntry.objects.get().actor_name == "someone"


def test_members_see_whether_and_when_their_conversations_were_read(reviewer, alice, bob, settings):
    tree = make_tree(alice.user)
    snippet = Template('{% include "accounts/_review_notice.html" %}')

    def notice_of(member) -> str:
        request = RequestFactory().get("/account/")
        request.user = member.user
        return snippet.render(Context({"user": member.user, "request": request}))

    assert "Every time they do, it is recorded" in notice_of(alice)
    assert "No one on staff has read your conversations." in notice_of(alice)
    reviewer.client.get(f"{LIST}{tree.conversation.id}/transcript/")
    html = notice_of(alice)
    assert "read the transcript" in html and f'href="/c/{tree.conversation.id}/"' in html
    assert "Quarterly numbers" in html
    assert "reviewer" not in html  # who read is for superusers; the member learns when and what
    assert "read the transcript" not in notice_of(bob)  # bob's own conversations were not read
    tree.conversation.delete()
    assert "a conversation since deleted" in notice_of(alice)

    settings.STAFF_REVIEW_ENABLED = False
    assert "switched off" in review_notice(alice.user)
    assert "switched off" in notice_of(alice)
    settings.STAFF_REVIEW_ENABLED = True
    assert "switched off" not in notice_of(alice)


def test_reading_a_transcript_takes_the_same_queries_for_a_longer_conversation(reviewer, alice):
    short = make_tree(alice.user).conversation
    long = make_tree(alice.user, title="Long").conversation
    parent = long.current_leaf
    for i in range(40):
        asked = question(long, parent, f"more {i}", at=parent.created_at)
        parent = reply(long, asked, f"answer {i}", at=asked.created_at)
    long.current_leaf = parent
    long.save()

    def queries(conversation) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reviewer.client.get(f"{LIST}{conversation.id}/transcript/").status_code == 200
        return len(captured)

    assert queries(long) == queries(short)
    assert transcripts.PAGE_SIZE < 87  # the long one spans two pages
