"""Stored XSS in the staff's review pages: what members and models wrote is text there.

Every page staff open in the admin shows text that members typed or a model
produced: titles, message bodies, content parts, error texts, the recorded
request. Each payload must arrive escaped (so the test sees it was rendered)
and never as markup.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils.html import escape

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db

PAYLOADS = {
    "title": '<script>window.__pwned="title"</script>',
    "question": '<img src=x onerror="window.__pwned=\'question\'">',
    "reply": '"><svg onload="window.__pwned=\'reply\'"></svg>',
    "part": "<iframe srcdoc=\"<script>parent.__pwned='part'</script>\"></iframe>",
    "error": "<body onload=\"window.__pwned='error'\">",
    "model": "<script>window.__pwned='model'</script>",
}


@pytest.fixture
def staff_client():
    staff = get_user_model().objects.create_superuser("reviewer", password="pw-reviewer-123")
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def hostile_conversation(alice):
    conversation = Conversation.objects.create(owner=alice.user, title=PAYLOADS["title"], model=PAYLOADS["model"])
    question = Message.objects.create(
        conversation=conversation, role="user", status="complete",
        content=PAYLOADS["question"] + " " + PAYLOADS["part"],
        content_parts=[
            {"type": "text", "text": PAYLOADS["question"]},
            {"type": "text", "text": PAYLOADS["part"]},
        ],
    )
    reply = Message.objects.create(
        conversation=conversation, role="assistant", parent=question, status="error",
        content=PAYLOADS["reply"], model=PAYLOADS["model"], error_code="upstream_error",
        error_detail={"reason": "reported", "upstream_message": PAYLOADS["error"]},
        request={"model": PAYLOADS["model"], "system_prompt": PAYLOADS["title"], "message_ids": [str(question.id)]},
    )
    conversation.current_leaf = reply
    conversation.save()
    return conversation, question, reply


# Each payload's opening tag, up to where JSON or attribute quoting may differ.
OPENINGS = {
    "title": "<script>window.__pwned=",
    "question": "<img src=x onerror=",
    "reply": "<svg onload=",
    "part": "<iframe srcdoc=",
    "error": "<body onload=",
    "model": "<script>window.__pwned='model'",
}


def assert_escaped(html: str, names) -> None:
    """Each payload's opening tag is in the page escaped (it was shown), never raw."""
    for name in names:
        opening = OPENINGS[name]
        assert opening not in html, f"the {name} payload is in the page as markup"
        assert escape(opening) in html, f"the {name} payload was not shown at all"


def test_the_conversation_list_and_search_show_titles_as_text(staff_client, hostile_conversation):
    page = staff_client.get("/admin/conversations/conversation/")
    assert page.status_code == 200
    assert_escaped(page.content.decode(), ["title"])

    found = staff_client.get("/admin/conversations/conversation/", {"q": PAYLOADS["title"]})
    assert found.status_code == 200
    html = found.content.decode()
    assert_escaped(html, ["title"])  # the search box echoes the query, escaped too


def test_a_conversation_transcript_shows_every_field_as_text(staff_client, hostile_conversation):
    conversation, _question, _reply = hostile_conversation
    page = staff_client.get(f"/admin/conversations/conversation/{conversation.id}/change/")
    assert page.status_code == 200
    assert_escaped(page.content.decode(), ["title", "question", "reply", "part", "error", "model"])


def test_the_message_list_and_message_page_show_text(staff_client, hostile_conversation):
    _conversation, question, reply = hostile_conversation
    listing = staff_client.get("/admin/conversations/message/")
    assert listing.status_code == 200
    assert_escaped(listing.content.decode(), ["title", "question", "reply"])

    for message, names in ((question, ["question", "part"]), (reply, ["reply", "error", "model", "title"])):
        page = staff_client.get(f"/admin/conversations/message/{message.id}/change/")
        assert page.status_code == 200
        assert_escaped(page.content.decode(), names)


def test_the_admin_is_for_staff_only(alice, hostile_conversation):
    page = alice.client.get("/admin/conversations/conversation/")
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")
