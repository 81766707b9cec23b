"""The staff's search uses its index, and stays a join: EXPLAIN of the admin's own queries
over 100,000 messages.

The rows are seeded with generate_series (bench/search.py's statements: English-like text, a
rare word planted in one message of every 10,000), inside the test's transaction, and analysed
so the planner knows the table's size. The query is the one the conversation list runs for a
search: the admin's changelist, built as for a request. bench/search.py times the same query
over a million messages, with and without the index.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import RequestFactory

from bench.search import NEEDLE, seed_statements
from conversations.models import Conversation

pytestmark = pytest.mark.django_db

CONVERSATIONS = 5_000
MESSAGES = 100_000
NEEDLE_EVERY = 10_000
LIST = "/admin/conversations/conversation/"


def admin_search(user, term: str):
    """The changelist the admin builds for a search, as for a real request."""
    request = RequestFactory().get(LIST, {"q": term})
    request.user = user
    return admin.site._registry[Conversation].get_changelist_instance(request)


@pytest.fixture
def seeded():
    """A superuser, and 100,000 messages in 5,000 conversations, analysed."""
    staff = get_user_model().objects.create_superuser("searcher", password="pw-searcher-123")
    with connection.cursor() as cursor:
        for statement, params in seed_statements(staff.pk, CONVERSATIONS, MESSAGES, NEEDLE_EVERY):
            cursor.execute(statement, params)
        cursor.execute("ANALYZE conversations_conversation")
        cursor.execute("ANALYZE conversations_message")
        cursor.execute("SELECT count(*) FROM conversations_message")
        assert cursor.fetchone()[0] == MESSAGES
    return staff


def test_the_search_uses_the_trigram_index_and_stays_a_join(seeded):
    staff = seeded
    changelist = admin_search(staff, NEEDLE)
    page_plan = changelist.queryset[:changelist.list_per_page + 1].explain()  # the page's rows
    count_plan = changelist.queryset.explain()  # what the count reads
    for plan in (page_plan, count_plan):
        assert "Bitmap Index Scan on msg_content_trgm" in plan, plan
        assert "Seq Scan on conversations_message" not in plan, plan

    # And it finds what is there: the conversations whose messages hold the word.
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT conversation_id FROM conversations_message WHERE content LIKE %s",
                       [f"%{NEEDLE}%"])
        expected = {row[0] for row in cursor.fetchall()}
    assert len(expected) == MESSAGES // NEEDLE_EVERY
    assert changelist.result_count == len(expected)
    assert {c.pk for c in changelist.result_list} == expected

    # A term in a quarter of all messages (two letters: no trigram to use) matches more ids
    # than work_mem holds. `title LIKE … OR id IN (messages …)` then becomes a subplan that
    # re-reads the matching messages for every conversation: at a million messages the
    # benchmark's count ran for minutes. The search must stay a join, whatever the memory.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64kB'")  # what a million messages does to 4 MB
    common = admin_search(staff, "ab")
    for plan in (common.queryset.explain(), common.queryset[:common.list_per_page + 1].explain()):
        filters = [line for line in plan.splitlines() if "Filter:" in line]
        assert not any("SubPlan" in line for line in filters), plan
    assert common.result_count > CONVERSATIONS // 2


def test_a_streaming_reply_is_outside_the_text_index_until_its_end(seeded):
    """Its text is rewritten every second: none of those rewrites touch the trigram index."""
    from conversations.chat import replies
    from conversations.models import Message

    conversation = Conversation.objects.create(owner=seeded, title="live")
    reply = Message.objects.create(conversation=conversation, role="assistant", status="streaming",
                                   content="", run_id=__import__("uuid").uuid4())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef('msg_content_trgm'::regclass)")
        assert "WHERE (NOT ((status)::text = 'streaming'::text))" in cursor.fetchone()[0]
    assert replies.save_progress_many([(reply.id, reply.run_id, "half an answer: qzxjvw", "")]) == {reply.id}
    assert admin_search(seeded, "qzxjvw").result_count == 0  # not searchable while it streams
    assert replies.finish_reply(reply.id, reply.run_id, text="the whole answer: qzxjvw", status="complete")
    assert admin_search(seeded, "qzxjvw").result_count == 1
