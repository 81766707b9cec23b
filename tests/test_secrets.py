"""The upstream API key never reaches a frame, a stored error or a log line,
even when the model server echoes it back in its error texts (OpenAI does)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from conversations.chat.errors import describe
from conversations.models import Message
from tests.conftest import follow_reply

pytestmark = pytest.mark.django_db(transaction=True)

ECHO = "Incorrect API key provided: {key}. You can find your API key at https://example.invalid."

FAILURES = [
    {"status": 401, "error_message": ECHO},
    {"status": 403, "error_message": ECHO},
    {"status": 400, "error_message": "Invalid request for key {key}"},
    {"status": 500, "error_message": "upstream crashed while using {key}"},
    {"status": 429, "error_message": "Rate limit reached for {key}", "retry_after": 0},
    {"error_after": 2, "error_message": "stream failed for {key}"},
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: str(f.get("status", "mid-stream")))
async def test_an_echoed_key_is_never_shown_stored_or_logged(alice, upstream, sockets, caplog, failure):
    key = settings.OPENAI_API_KEY
    for name in ("", "conversations", "httpx", "httpcore", "django", "channels"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    await tab.send(type="send", content="hello fake:" + json.dumps(failure), client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)

    assert reply.end["type"] == "error"
    assert upstream.requests, "the request never reached the model server"
    assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {key}"  # so the echo held the key
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert row.error_code, "the error was not stored"
    for where, text in (
        ("a frame", json.dumps(tab.frames)),
        ("the stored error", json.dumps(row.error_detail) + row.content + json.dumps(row.request)),
        ("the error's words", describe(row.error_code, row.error_detail)),
        ("the log", caplog.text),
    ):
        assert key not in text, f"the API key is in {where}"
        assert key[8:24] not in text, f"part of the API key is in {where}"
