"""The Chat Completions API as real servers and gateways answer it: the seeds' own example
responses and error bodies (tests/data/seeds/vectors.json, copied byte for byte from the articles
in the team's shared seeds), each named after its seed, through the real client: served as they
are by the fake upstream over HTTP, read by httpx + httpx-sse and parsed by upstream/client.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from conversations.chat.errors import describe
from conversations.models import Message
from conversations.upstream.client import Endpoint, UpstreamError, stream_chat
from tests.conftest import follow_reply, open_tab

VECTORS = json.loads((Path(__file__).parent / "data/seeds/vectors.json").read_text())
ANSWERS = {name: v for name, v in VECTORS.items() if v["kind"] != "error"}
ERRORS = {name: v for name, v in VECTORS.items() if v["kind"] == "error"}


def raw(vector: dict) -> dict:
    content_type = "text/event-stream" if vector["kind"] == "sse" else "application/json"
    return {"raw": {"status": vector.get("status", 200), "content_type": content_type, "body": vector["body"]}}


async def read(upstream, vector: dict):
    body = {"model": "m", "messages": [{"role": "user", "content": "fake:" + json.dumps(raw(vector))}], "stream": True}
    chunks, error = [], None
    try:
        async for chunk in stream_chat(Endpoint(upstream.base_url, upstream.api_key), body):
            chunks.append(chunk)
    except UpstreamError as caught:
        error = caught
    return chunks, error


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_each_seed_answer_is_read_whole(name, upstream, settings):
    vector = ANSWERS[name]
    chunks, error = await read(upstream, vector)
    assert error is None, (name, error)
    assert "".join(c.content for c in chunks) == vector["content"]
    finishes = [c.finish_reason for c in chunks if c.finish_reason]
    assert finishes[-1:] == ([vector["finish_reason"]] if vector["finish_reason"] else [])
    usages = [c.usage for c in chunks if c.usage]
    if vector["usage"] is None:
        assert usages == []
    else:
        assert [(usages[-1]["prompt_tokens"], usages[-1]["completion_tokens"])] == [tuple(vector["usage"])]


@pytest.mark.parametrize("name", list(ERRORS))
async def test_each_seed_error_body_keeps_the_servers_words_and_trace_id(name, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 0
    vector = ERRORS[name]
    _chunks, error = await read(upstream, vector)
    assert error is not None and error.code == vector["code"]
    assert error.detail["upstream_message"] == vector["upstream_message"]
    assert error.detail["trace_id"] == vector["trace_id"]
    assert vector["upstream_message"] in describe(error.code, error.detail)  # the member reads their words too


@pytest.mark.django_db(transaction=True)
async def test_a_cut_off_answer_is_stored_with_its_finish_reason(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="fake:" + json.dumps(raw(ANSWERS["001-finish-reason-cutoff"])),
                   client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["type"] == "done" and reply.end["finish_reason"] == "cutoff"
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert (row.status, row.finish_reason, row.content) == ("complete", "cutoff", ANSWERS["001-finish-reason-cutoff"]["content"])
    assert row.usage["prompt_tokens"] == 9 and not row.usage.get("estimated")
