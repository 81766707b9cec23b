"""Stored XSS in the staff's review pages: what members and models wrote is text there.

Every page staff open in the admin shows text that members typed or a model
produced: titles, message bodies, content parts, error texts, the recorded
request, members' own settings. Each payload must arrive escaped (so the test
sees it was rendered) and never as markup.
"""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.utils.html import escape

from conversations.models import AuditEntry, Conversation, Invite, Message

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOADS = {
    "title": '<script>window.__pwned="title"</script>',
    "question": '<img src=x onerror="window.__pwned=\'question\'">',
    "reply": '"><svg onload="window.__pwned=\'reply\'"></svg>',
    "part": "<iframe srcdoc=\"<script>parent.__pwned='part'</script>\"></iframe>",
    "error": "<body onload=\"window.__pwned='error'\">",
    "model": "<script>window.__pwned='model'</script>",
    "system": "<object data=\"javascript:window.__pwned='system'\"></object>",
    "member": "<marquee onstart=\"window.__pwned='member'\">",
    "note": "<video src=x onerror=\"window.__pwned='note'\">",
    "reasoning": "<audio src=x onerror=\"window.__pwned='reasoning'\">",
}

# Each payload's opening tag, up to where JSON or attribute quoting may differ.
OPENINGS = {
    "title": "<script>window.__pwned=",
    "question": "<img src=x onerror=",
    "reply": "<svg onload=",
    "part": "<iframe srcdoc=",
    "error": "<body onload=",
    "model": "<script>window.__pwned='model'",
    "system": "<object data=",
    "member": "<marquee onstart=",
    "note": "<video src=x onerror=",
    "reasoning": "<audio src=x onerror=",
}


@pytest.fixture
def hostile_conversation(alice):
    alice.user.first_name = PAYLOADS["member"]
    alice.user.default_model = PAYLOADS["model"]
    alice.user.save()
    conversation = Conversation.objects.create(owner=alice.user, title=PAYLOADS["title"], model=PAYLOADS["model"],
                                               system_prompt=PAYLOADS["system"])
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
        content=PAYLOADS["reply"], reasoning=PAYLOADS["reasoning"], model=PAYLOADS["model"], error_code="upstream_error",
        error_detail={"reason": "reported", "upstream_message": PAYLOADS["error"]},
        request={"model": PAYLOADS["model"], "system_prompt": PAYLOADS["system"], "message_ids": [str(question.id)],
                 "params": {"stop": [PAYLOADS["title"]]}, "provider": PAYLOADS["model"]},
    )
    conversation.current_leaf = reply
    conversation.save()
    return conversation, question, reply


def assert_escaped(html: str, names) -> None:
    """Each payload's opening tag is in the page escaped (it was shown), never raw."""
    for name in names:
        opening = OPENINGS[name]
        assert opening not in html, f"the {name} payload is in the page as markup"
        assert escape(opening) in html, f"the {name} payload was not shown at all"


def test_the_conversation_list_search_and_filters_show_text(reviewer, hostile_conversation):
    page = reviewer.client.get("/admin/conversations/conversation/")
    assert page.status_code == 200
    assert_escaped(page.content.decode(), ["title", "model"])  # the model is in the row and the filter

    found = reviewer.client.get("/admin/conversations/conversation/", {"q": "onerror"})
    assert found.status_code == 200
    assert list(found.context["cl"].result_list) == [hostile_conversation[0]]
    assert_escaped(found.content.decode(), ["title"])
    echoed = reviewer.client.get("/admin/conversations/conversation/", {"q": PAYLOADS["title"]})
    assert_escaped(echoed.content.decode(), ["title"])  # the search box echoes the query, escaped too


def test_the_transcript_shows_every_field_and_what_the_model_saw_as_text(reviewer, hostile_conversation):
    conversation, _question, _reply = hostile_conversation
    page = reviewer.client.get(f"/admin/conversations/conversation/{conversation.id}/transcript/")
    assert page.status_code == 200
    html = page.content.decode()
    assert_escaped(html, ["title", "question", "reply", "part", "error", "model", "system", "reasoning"])
    seen = html.split('class="review-seen"')[1]
    assert_escaped(seen, ["question", "part", "system", "model", "title"])  # the request's stop words too


def test_the_people_pages_and_the_audit_log_show_text(reviewer, alice, hostile_conversation):
    conversation, _question, _reply = hostile_conversation
    Invite.objects.create(token_hash="f" * 64, note=PAYLOADS["note"], expires_at=conversation.created_at)
    AuditEntry.record("view", actor=reviewer.user, owner=alice.user, conversation_id=conversation.id,
                      detail={"page": PAYLOADS["title"]})
    pages = {
        "/admin/conversations/member/": ["member"],
        f"/admin/conversations/member/{alice.user.pk}/change/": ["member", "model"],
        "/admin/conversations/invite/": ["note"],
        "/admin/conversations/auditentry/": ["title"],
        f"/admin/conversations/auditentry/{AuditEntry.objects.get().pk}/change/": ["title"],
    }
    for url, names in pages.items():
        page = reviewer.client.get(url)
        assert page.status_code == 200, url
        assert_escaped(page.content.decode(), names)


def test_the_members_review_notice_shows_titles_as_text(reviewer, alice, hostile_conversation):
    conversation, _question, _reply = hostile_conversation
    reviewer.client.get(f"/admin/conversations/conversation/{conversation.id}/transcript/")
    html = Template('{% include "accounts/_review_notice.html" %}').render(Context({"user": alice.user}))
    assert_escaped(html, ["title"])


def test_the_admin_is_for_staff_only(alice, hostile_conversation):
    page = alice.client.get("/admin/conversations/conversation/")
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")
