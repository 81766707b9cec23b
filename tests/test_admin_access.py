"""Who reaches what in the admin: members nothing, staff metadata, and message text only with the
content permission while staff review is switched on. The JSON API stays each member's own."""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from conversations.models import AuditEntry, Invite
from tests.review_data import make_tree

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/conversations/conversation/"
# Text that is in the tree's messages, title and system prompt: none may reach a reader without access.
SECRET_WORDS = ("marmalade", "Quarterly numbers", "chiffres", "Answer in French", "Parce que")


def every_admin_page(tree, staff=None) -> list[str]:
    """Every admin page this project has, with an object of each kind where the page needs one."""
    conversation = tree.conversation
    member = conversation.owner
    invite = Invite.objects.create(token_hash=uuid.uuid4().hex, note="for carol", expires_at=conversation.created_at)
    entry = AuditEntry.record("view", actor_name="someone", owner=member, conversation_id=conversation.id)
    pages = [
        "/admin/", "/admin/conversations/", "/admin/password_change/",
        LIST, f"{LIST}?q=marmalade", f"{LIST}?status=errors", f"{LIST}{conversation.id}/transcript/",
        f"{LIST}{conversation.id}/change/", f"{LIST}{conversation.id}/history/",
        "/admin/conversations/auditentry/", f"/admin/conversations/auditentry/{entry.pk}/change/",
        "/admin/conversations/member/", f"/admin/conversations/member/{member.pk}/change/",
        f"/admin/conversations/member/{member.pk}/password/", "/admin/conversations/member/add/",
        "/admin/conversations/invite/", "/admin/conversations/invite/add/",
        f"/admin/conversations/invite/{invite.pk}/change/", "/admin/auth/group/",
    ]
    if staff is not None:
        pages.append(f"/admin/conversations/member/{staff.pk}/change/")
    return pages


def assert_no_content(response, where: str) -> None:
    # A search box echoes its query (the reader's own words): not content.
    text = response.content.decode(errors="replace").replace('value="marmalade"', "").replace("q=marmalade", "")
    for word in SECRET_WORDS:
        assert word not in text, f"{where} shows {word!r}"


def test_a_member_cannot_reach_any_admin_page(alice, bob):
    tree = make_tree(bob.user)
    for url in every_admin_page(tree):
        page = alice.client.get(url)
        assert page.status_code == 302 and page["Location"].startswith("/admin/login/"), url
        assert_no_content(page, url)
    for action in ("export_json", "export_markdown"):
        posted = alice.client.post(LIST, {"action": action, "_selected_action": str(tree.conversation.id)})
        assert posted.status_code == 302 and posted["Location"].startswith("/admin/login/")
        assert_no_content(posted, action)
    login = alice.client.get("/admin/login/")
    assert login.status_code == 200  # Django's "you are signed in but not authorized" page, nothing more
    assert AuditEntry.objects.exclude(actor_name="someone").count() == 0


@pytest.fixture
def metadata_staff(make_staff):
    """Staff who may view conversations (their metadata) but not read their content."""
    return make_staff("meta", perms=("view_conversation",))


def assert_metadata_only(staff, tree) -> None:
    conversation = tree.conversation
    listing = staff.client.get(LIST)
    assert listing.status_code == 200
    assert_no_content(listing, "the list")
    html = listing.content.decode()
    assert "alice" in html and "gpt-tree" in html and "content hidden" in html  # metadata stays
    assert [c.message_count for c in listing.context["cl"].result_list] == [7]
    assert "export_json" not in html and "export_markdown" not in html

    searched = staff.client.get(LIST, {"q": "marmalade"})
    assert list(searched.context["cl"].result_list) == []  # message text is not searched for them
    assert_no_content(searched, "the search")

    transcript = staff.client.get(f"{LIST}{conversation.id}/transcript/")
    assert transcript.status_code == 403
    assert_no_content(transcript, "the transcript")
    for action in ("export_json", "export_markdown"):
        posted = staff.client.post(LIST, {"action": action, "_selected_action": str(conversation.id), "index": 0})
        assert_no_content(posted, action)
        assert "attachment" not in posted.get("Content-Disposition", "")
    for url in every_admin_page(tree, staff.user):
        assert_no_content(staff.client.get(url, follow=True), url)
    assert not AuditEntry.objects.exclude(actor_name="someone").exists()


def test_staff_without_the_content_permission_read_no_message_text(metadata_staff, alice):
    assert_metadata_only(metadata_staff, make_tree(alice.user))


def test_with_review_switched_off_not_even_a_superuser_reads_message_text(reviewer, alice, settings):
    settings.STAFF_REVIEW_ENABLED = False
    tree = make_tree(alice.user)
    assert_metadata_only(reviewer, tree)
    page = reviewer.client.get(f"{LIST}{tree.conversation.id}/transcript/")
    assert "switched off" in page.content.decode()


def test_the_content_permission_opens_the_transcript_while_the_switch_is_on(make_staff, alice, settings):
    tree = make_tree(alice.user)
    staff = make_staff("content", perms=("view_conversation", "view_conversation_content"))
    page = staff.client.get(f"{LIST}{tree.conversation.id}/transcript/")
    assert page.status_code == 200 and "marmalade" in page.content.decode()
    settings.STAFF_REVIEW_ENABLED = False
    assert staff.client.get(f"{LIST}{tree.conversation.id}/transcript/").status_code == 403


def test_staff_without_any_conversation_permission_see_no_conversations(make_staff, alice):
    tree = make_tree(alice.user)
    staff = make_staff("people-only", perms=("view_member",))
    assert staff.client.get(LIST).status_code == 403
    assert staff.client.get(f"{LIST}{tree.conversation.id}/transcript/").status_code == 403
    # The content permission alone does not open a conversation it cannot view.
    only_content = make_staff("content-only", perms=("view_conversation_content",))
    assert only_content.client.get(f"{LIST}{tree.conversation.id}/transcript/").status_code == 403


def test_the_json_api_gives_staff_no_other_members_conversation(reviewer, alice):
    tree = make_tree(alice.user)
    conversation_id = tree.conversation.id
    for url in (reverse("api_conversation", args=[conversation_id]), reverse("api_export", args=[conversation_id]),
                reverse("api_export", args=[conversation_id]) + "?format=md"):
        answer = reviewer.client.get(url)
        assert answer.status_code == 404, url
        assert json.loads(answer.content)["error"]["code"] == "not_found"
        assert_no_content(answer, url)
    listing = reviewer.client.get(reverse("api_conversations"), {"q": "marmalade"})
    assert listing.json() == []
    assert reviewer.client.get(f"/c/{conversation_id}/").status_code == 404  # nor the chat page
    assert not AuditEntry.objects.exists()
