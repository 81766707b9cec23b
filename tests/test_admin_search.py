"""The staff's search uses its index: EXPLAIN of the admin's own query, over 100,000 messages.

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


def test_the_search_over_message_text_uses_the_trigram_index():
    staff = get_user_model().objects.create_superuser("searcher", password="pw-searcher-123")
    with connection.cursor() as cursor:
        for statement, params in seed_statements(staff.pk, CONVERSATIONS, MESSAGES, NEEDLE_EVERY):
            cursor.execute(statement, params)
        cursor.execute("ANALYZE conversations_conversation")
        cursor.execute("ANALYZE conversations_message")
        cursor.execute("SELECT count(*) FROM conversations_message")
        assert cursor.fetchone()[0] == MESSAGES

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
