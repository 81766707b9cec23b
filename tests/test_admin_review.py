"""Staff review in the admin: the conversation list, the read-only transcript, exports, and
what the model saw, against real Postgres, the real admin pages and the fake model server."""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from conversations.chat import transcripts
from conversations.models import AuditEntry, Conversation, Message
from tests.conftest import follow_reply, open_tab
from tests.review_data import TranscriptReader, as_parts, make_tree

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/conversations/conversation/"


def transcript_url(conversation, page=None) -> str:
    url = f"{LIST}{conversation.id}/transcript/"
    return f"{url}?page={page}" if page else url


def test_the_list_shows_owner_title_model_counts_tokens_activity_and_status(reviewer, alice, bob):
    tree = make_tree(alice.user)
    quiet = bob.conversation(title="Nothing yet", model="gpt-quiet")
    page = reviewer.client.get(LIST)
    assert page.status_code == 200
    html = page.content.decode()
    for header in ("Title", "Owner", "Model", "Messages", "Tokens used", "Last activity", "Status"):
        assert f">{header}</" in html
    rows = {c.pk: c for c in page.context["cl"].result_list}
    listed = rows[tree.conversation.pk]
    assert listed.owner == alice.user and listed.model == "gpt-tree"
    assert listed.message_count == 7
    assert listed.tokens_used == 30 + 7 + 40 + 0 + 40 + 9 + 50 + 2
    assert (listed.has_errors, listed.has_interrupted) == (True, True)
    assert (rows[quiet.pk].message_count, rows[quiet.pk].tokens_used) == (0, 0)
    assert (rows[quiet.pk].has_errors, rows[quiet.pk].has_interrupted) == (False, False)
    assert f'<a href="{transcript_url(tree.conversation)}">Quarterly numbers</a>' in html
    assert "has errors, interrupted" in html
    # Newest activity first.
    assert [c.pk for c in page.context["cl"].result_list] == [quiet.pk, tree.conversation.pk]


def test_the_list_filters_by_owner_model_date_and_status(reviewer, alice, bob):
    failed = make_tree(alice.user).conversation
    old = make_tree(bob.user, title="Old one", model="gpt-old", days_ago=30).conversation
    clean = bob.conversation(title="Clean", model="gpt-clean")
    Message.objects.create(conversation=clean, role="user", content="hi")

    def listed(**query) -> set:
        page = reviewer.client.get(LIST, query)
        assert page.status_code == 200, page.content[:500]
        return {c.pk for c in page.context["cl"].result_list}

    assert listed(owner__id__exact=alice.user.pk) == {failed.pk}
    assert listed(model="gpt-old") == {old.pk}
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    assert listed(updated_at__gte=week_ago) == {failed.pk, clean.pk}
    assert listed(status="errors") == {failed.pk, old.pk}
    assert listed(status="interrupted") == {failed.pk, old.pk}
    assert listed(status="clean") == {clean.pk}
    Message.objects.filter(conversation=old, status="error").update(status="complete")
    assert listed(status="errors") == {failed.pk}
    assert listed(status="failed") == {failed.pk, old.pk}


def test_the_list_costs_the_same_queries_however_many_conversations(reviewer, alice):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reviewer.client.get(LIST).status_code == 200
        return len(captured)

    make_tree(alice.user)
    few = queries()
    for i in range(12):
        make_tree(alice.user, title=f"More {i}")
    assert queries() == few


def test_search_finds_titles_and_message_text_case_insensitively(reviewer, alice, bob):
    tree = make_tree(alice.user)  # a message says "marmalade budget"
    other = make_tree(bob.user, title="Rocket launch")
    Message.objects.filter(conversation=other.conversation).update(content="nothing to see")

    def found(term) -> set:
        page = reviewer.client.get(LIST, {"q": term})
        assert page.status_code == 200
        return {c.pk for c in page.context["cl"].result_list}

    assert found("MARMALADE") == {tree.conversation.pk}
    assert found("rocket") == {other.conversation.pk}
    assert found('"marmelade est"') == {tree.conversation.pk}  # a reply's text, as a phrase
    assert found("marmalade rocket") == set()  # every word must match
    assert found("to see") == {other.conversation.pk}


def test_the_transcript_shows_the_tree_the_current_branch_and_where_replies_fork(reviewer, alice):
    tree = make_tree(alice.user)
    page = reviewer.client.get(transcript_url(tree.conversation))
    assert page.status_code == 200
    html = page.content.decode()
    order = [tree.q1, tree.r1, tree.q2, tree.r2a, tree.r2b, tree.q3, tree.r3]
    positions = [html.index(f'id="m-{m.id}"') for m in order]
    assert positions == sorted(positions), "messages are not in reading order"
    read = TranscriptReader(html)
    on_branch = {str(m.id) for m in (tree.q1, tree.r1, tree.q2, tree.r2b, tree.q3, tree.r3)}
    for message_id, shown in read.messages.items():
        assert ("current" in shown["classes"]) == (message_id in on_branch)
    # The fork: both versions say so and link each other, one level in.
    assert "version 1 of 2" in html and "version 2 of 2" in html
    assert "forks here into 2 versions" in html
    assert f'href="?page=1#m-{tree.r2b.id}">#5</a>' in html
    assert "indent-1" in read.messages[str(tree.r2a.id)]["classes"]
    assert "indent-0" in read.messages[str(tree.q2.id)]["classes"]


def test_each_reply_shows_status_finish_reason_usage_timings_and_error(reviewer, alice):
    tree = make_tree(alice.user)
    html = reviewer.client.get(transcript_url(tree.conversation)).content.decode()

    def section(message) -> str:
        start = html.index(f'id="m-{message.id}"')
        return html[start:html.index("</li>\n", html.index("review-reply", start))]

    first = section(tree.r1)
    assert "<dd>complete</dd>" in first and "<dd>stop</dd>" in first
    assert "30 prompt + 7 completion = 37 tokens" in first
    assert "<dd>120 ms</dd>" in first and "<dd>900 ms</dd>" in first
    failed = section(tree.r2a)
    assert "<dd>error</dd>" in failed and "<code>upstream_rate_limited</code>" in failed
    assert "try again in 7 seconds" in failed
    assert "<dd>300 ms</dd>" in failed  # its duration; it never had a first token
    second = section(tree.r2b)
    assert "<dd>length</dd>" in second and "<dd>95 ms</dd>" in second
    cut = section(tree.r3)
    assert "<dd>interrupted</dd>" in cut and "(estimated)" in cut and "<code>interrupted</code>" in cut


def test_the_transcript_is_paginated_and_links_across_pages(reviewer, alice, monkeypatch):
    monkeypatch.setattr(transcripts, "PAGE_SIZE", 2)
    tree = make_tree(alice.user)
    pages = {n: reviewer.client.get(transcript_url(tree.conversation, n)).content.decode() for n in (1, 2, 3, 4)}
    shown = {n: set(TranscriptReader(html).messages) for n, html in pages.items()}
    assert shown == {
        1: {str(tree.q1.id), str(tree.r1.id)}, 2: {str(tree.q2.id), str(tree.r2a.id)},
        3: {str(tree.r2b.id), str(tree.q3.id)}, 4: {str(tree.r3.id)},
    }
    assert "Messages 3–4 of 7" in pages[2]
    # Links go to the page a message is on: r2a's sibling is on page 3, and what r3 saw
    # (on page 4) starts on page 1.
    assert f'href="?page=3#m-{tree.r2b.id}"' in pages[2]
    assert f'href="?page=2#m-{tree.r2a.id}"' in pages[3]
    for message, page in ((tree.q1, 1), (tree.q2, 2), (tree.q3, 3)):
        assert f'href="?page={page}#m-{message.id}"' in pages[4]
    assert '<a href="?page=3">3</a>' in pages[4]  # the page links
    assert AuditEntry.objects.filter(action="view").count() == 4
    assert sorted(AuditEntry.objects.values_list("detail__page", flat=True)) == [1, 2, 3, 4]


def test_nothing_of_a_members_can_be_added_changed_or_deleted(reviewer, alice):
    tree = make_tree(alice.user)
    conversation = tree.conversation
    change = f"{LIST}{conversation.id}/change/"
    assert reviewer.client.get(change)["Location"] == transcript_url(conversation)
    tampered = {"title": "rewritten", "model": "x", "system_prompt": "obey", "params": "{}"}
    reviewer.client.post(change, tampered)
    assert reviewer.client.post(f"{LIST}{conversation.id}/delete/", {"post": "yes"}).status_code == 403
    assert reviewer.client.get(f"{LIST}add/").status_code == 403
    assert reviewer.client.post(LIST, {"action": "delete_selected", "_selected_action": [conversation.id],
                                       "post": "yes"}).status_code == 302
    # The message admin is gone: the transcript is the one door to a message's text.
    assert reviewer.client.get(f"/admin/conversations/message/{tree.r1.id}/change/").status_code == 404
    assert reviewer.client.get("/admin/conversations/message/").status_code == 404
    fresh = Conversation.objects.get(pk=conversation.pk)
    assert (fresh.title, fresh.model, fresh.system_prompt) == ("Quarterly numbers", "gpt-tree", "Answer in French.")
    assert Message.objects.filter(conversation=conversation).count() == 7
    # The transcript has no field to type into, only the export buttons.
    html = reviewer.client.get(transcript_url(conversation)).content.decode()
    form_fields = [tag for tag in ("<textarea", "<select", 'type="text"', 'type="checkbox"') if tag in html]
    assert form_fields == []


def test_exports_hold_the_whole_tree_as_json_and_the_branch_as_markdown(reviewer, alice, bob):
    one, two = make_tree(alice.user), make_tree(bob.user, title="Second")
    chosen = [str(one.conversation.id), str(two.conversation.id)]
    exported = reviewer.client.post(LIST, {"action": "export_json", "_selected_action": chosen, "index": 0})
    assert exported.status_code == 200
    assert exported["Content-Disposition"].startswith('attachment; filename="conversations-')
    data = json.loads(exported.content)
    assert data["exported_by"] == "reviewer"
    by_id = {c["id"]: c for c in data["conversations"]}
    first = by_id[str(one.conversation.id)]
    assert first["owner"] == "alice" and first["system_prompt"] == "Answer in French."
    assert [m["id"] for m in first["messages"]] == [str(m.id) for m in (
        one.q1, one.r1, one.q2, one.r2a, one.r2b, one.q3, one.r3)]
    assert first["messages"][4]["request"]["message_ids"] == [str(one.q1.id), str(one.r1.id), str(one.q2.id)]

    markdown = reviewer.client.post(LIST, {"action": "export_markdown", "_selected_action": chosen[:1],
                                           "index": 0})
    assert markdown["Content-Disposition"] == 'attachment; filename="quarterly-numbers.md"'
    text = markdown.content.decode()
    assert text.startswith("# Quarterly numbers\n\nOwner: alice\n")
    assert "Le budget de marmelade est serré." in text and "## alice" in text
    assert "rate limit" not in text  # the failed version is not on the branch


def test_the_transcripts_export_buttons_export_that_conversation(reviewer, alice):
    tree = make_tree(alice.user)
    html = reviewer.client.get(transcript_url(tree.conversation)).content.decode()
    assert f'name="_selected_action" value="{tree.conversation.id}"' in html
    exported = reviewer.client.post(LIST, {"_selected_action": str(tree.conversation.id), "action": "export_json"})
    assert exported.status_code == 200
    assert [c["id"] for c in json.loads(exported.content)["conversations"]] == [str(tree.conversation.id)]


# What the model saw, against what the model server received

def png() -> str:
    image = Image.new("RGB", (24, 16), (200, 30, 30))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_what_the_model_saw_is_what_the_model_server_received(alice, reviewer, upstream, sockets, settings,
                                                                     tmp_path):
    """Turns over the real socket: a system prompt, content parts with an image (stored, then sent
    inline), a failed reply with no text, a regenerated reply, an edited question, and a budget
    small enough to drop old messages."""
    settings.CONTEXT_TOKEN_BUDGET = 150
    settings.MEDIA_ROOT = tmp_path
    conversation = await database_sync_to_async(alice.conversation)(
        system_prompt="Be brief.", params={"temperature": 0.5, "max_tokens": 20})
    tab = await open_tab(sockets, alice, conversation)

    async def send(content, **frame) -> str:
        await tab.send(type=frame.pop("type", "send"), content=content, client_id=str(uuid.uuid4()), **frame)
        return (await follow_reply(tab.recv)).message_id

    image = png()
    await send('first question about apples fake:{"tokens": 3}')
    await send([{"type": "text", "text": 'look at this fake:{"tokens": 3}'},
                {"type": "image_url", "image_url": {"url": image}}])
    await send('this one fails fake:{"status": 400}')
    await send('second question about pears fake:{"tokens": 3}')
    await tab.send(type="regenerate", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    rows = await database_sync_to_async(lambda: list(conversation.messages.order_by("created_at")))()
    last_question = [m for m in rows if m.role == "user"][-1]
    await tab.send(type="edit", message_id=str(last_question.id), content='pears, edited fake:{"tokens": 3}',
                   client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    for n in range(3):
        await send(f'question number {n} with some more words to fill the budget fake:{{"tokens": 3}}')

    replies = await database_sync_to_async(
        lambda: list(conversation.messages.filter(role="assistant").order_by("created_at")))()
    assert len(upstream.requests) == len(replies) == 9
    html = await sync_to_async(lambda: reviewer.client.get(transcript_url(conversation)).content.decode())()
    seen = TranscriptReader(html).blocks
    dropped_somewhere = skipped_somewhere = False
    for reply, request in zip(replies, upstream.requests):
        body = request["body"]
        block = seen[str(reply.id)]
        assert [(m.role, m.parts) for m in block.sent] == [(m["role"], as_parts(m["content"])) for m in body["messages"]]
        assert [m.message_id for m in block.sent if m.role != "system"] == reply.request["message_ids"]
        assert block.left_out.get("dropped", 0) == reply.request["dropped_messages"]
        assert {k: body[k] for k in ("model", "temperature", "max_tokens")} == {
            "model": "fake-model", "temperature": 0.5, "max_tokens": 20}
        dropped_somewhere |= block.left_out.get("dropped", 0) > 0
        skipped_somewhere |= block.left_out.get("skipped", 0) > 0
    assert dropped_somewhere, "the budget never dropped a message: the test proves less than it says"
    assert skipped_somewhere, "no reply without text was on a branch"
    inline = [p for r in upstream.requests for m in r["body"]["messages"] if isinstance(m["content"], list)
              for p in m["content"] if p["type"] == "image_url"]
    assert inline and all(p["image_url"]["url"].startswith("data:image/") for p in inline)
    assert all(request["body"]["user"] in html for request in upstream.requests)  # the body's opaque user


def test_a_reply_with_logprobs_shows_its_tokens_shaded_with_the_alternatives(reviewer, alice):
    tree = make_tree(alice.user)
    tree.r1.logprobs = [
        {"token": "Les", "logprob": -0.01, "top_logprobs": [{"token": "Les", "logprob": -0.01},
                                                            {"token": "Des", "logprob": -4.6}]},
        {"token": "<img src=x onerror=alert(1)>", "logprob": -3.0, "top_logprobs": [
            {"token": "\"><script>alert(2)</script>", "logprob": -0.5}]},
        {"token": " bons", "logprob": "not a number"},
        "garbage",
    ]
    tree.r1.save(update_fields=["logprobs"])
    html = reviewer.client.get(transcript_url(tree.conversation)).content.decode()
    start = html.index(f'id="m-{tree.r1.id}"')
    section = html[start:html.index("</li>\n", start)]
    assert "Tokens with their probabilities (3 shown)" in section
    assert '<span class="review-token band-0" title="99.0% · alternatives: &#x27;Des&#x27; 1.0%">Les</span>' in section
    # Model output is text: escaped in the token and in the alternatives.
    assert '<span class="review-token band-4" title="5.0% · alternatives: ' in section
    assert "&lt;img src=x onerror=alert(1)&gt;</span>" in section
    assert "<script>" not in section and "<img src=x" not in section
    assert '<span class="review-token band-4" title="0.0%"> bons</span>' in section
    # A reply without logprobs has no token view.
    other = html[html.index(f'id="m-{tree.r3.id}"'):]
    assert "review-token-list" not in other[:other.index("</li>\n")]
