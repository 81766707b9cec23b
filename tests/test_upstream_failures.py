"""Every upstream failure reaches the tab as its error code, keeps the partial
text, and leaves the conversation ready for the next question."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from tests.conftest import follow_reply, free_port, open_tab

pytestmark = pytest.mark.django_db(transaction=True)

FAILURES = [
    ("unauthorized", {"status": 401}, "upstream_auth"),
    ("forbidden", {"status": 403}, "upstream_auth"),
    ("rate limited", {"status": 429, "retry_after": 0}, "upstream_rate_limited"),
    ("out of quota", {"status": 429, "error_code": "insufficient_quota"}, "quota"),
    ("server error", {"status": 500, "retry_after": 0}, "upstream_unavailable"),
    ("bad gateway", {"status": 502, "retry_after": 0}, "upstream_unavailable"),
    ("bad request", {"status": 400}, "upstream_error"),
    ("context too long", {"status": 400, "error_code": "context_length_exceeded"}, "too_large"),
    ("cut without done", {"tokens": 10, "cut_after": 4}, "upstream_error"),
    ("error object mid-stream", {"tokens": 10, "error_after": 3}, "upstream_error"),
    ("malformed chunk", {"tokens": 10, "malformed_after": 5}, "upstream_error"),
    ("no done marker", {"tokens": 5, "no_done": True}, "upstream_error"),
    ("stall mid-stream", {"tokens": 10, "stall_after": 2}, "timeout"),
]


@pytest.mark.parametrize("name,script,code", FAILURES, ids=[f[0] for f in FAILURES])
async def test_a_failure_reaches_the_tab_and_keeps_the_partial_text(
    name, script, code, alice, upstream, sockets, settings
):
    settings.UPSTREAM_READ_TIMEOUT = 1.0
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    # Every error text the fake sends quotes the key, as real servers do with a wrong one.
    directive = "fake:" + json.dumps({"error_message": "failed for key {key}", **script})
    await tab.send(type="send", content=f"{name} {directive}", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)

    assert reply.end["type"] == "error"
    assert reply.end["code"] == code
    assert reply.end["message"] and "SECRET" not in reply.end["message"]
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert row.status == "error" and row.error_code == code
    streamed = upstream.requests[-1]["streamed_text"]
    assert row.content == reply.text
    if "malformed_after" in script:
        # A chunk that cannot be read may have carried text: stop there rather than skip it.
        assert streamed.startswith(row.content) and len(row.content) < len(streamed)
    else:
        assert row.content == streamed
    if {"cut_after", "error_after", "malformed_after", "stall_after"} & set(script):
        assert row.content, "the partial answer is kept"

    await tab.send(type="send", content="and now?", client_id=str(uuid.uuid4()))
    after = await follow_reply(tab.recv)
    assert after.end["type"] == "done" and after.end["status"] == "complete"


async def test_a_refused_connection_is_upstream_unavailable(alice, upstream, sockets, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.UPSTREAM_MAX_RETRIES = 0
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="anyone there?", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["code"] == "upstream_unavailable"
    assert (await database_sync_to_async(Message.objects.get)(pk=reply.message_id)).status == "error"


async def test_a_retryable_failure_before_the_first_token_is_retried(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    directive = 'fake:{"status": 503, "retry_after": 0, "fail_times": 1}'
    await tab.send(type="send", content=f"retry me {directive}", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["status"] == "complete"
    assert len(upstream.requests) == 2
    assert reply.text == upstream.requests[1]["streamed_text"]


async def test_an_oversize_reply_is_cut_at_the_limit_and_kept(alice, upstream, sockets, settings):
    settings.MAX_REPLY_CHARS = 100
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='long fake:{"tokens": 200}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["code"] == "too_large"
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert row.content == reply.text and len(row.content) == 100
    assert upstream.requests[0]["streamed_text"].startswith(row.content)
