"""Titles the model writes after the first reply, in the background: a `title` frame, the member's
sidebars told, a title the member edited never overwritten, the first words kept on failure."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.chat import titles
from conversations.models import Conversation, Usage
from conversations.upstream.client import Endpoint
from tests.conftest import drain_replies, follow_reply, free_port, open_tab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def titles_on(settings):
    settings.MODEL_TITLES = True


async def test_the_model_titles_the_conversation_after_its_first_reply(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="如何学习 Python 编程", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    first_words = next(f for f in tab.frames if f["type"] == "title")
    assert first_words["title"] == "如何学习 Python 编程"
    titled = await tab.until(lambda f: f["type"] == "title")
    request = upstream.requests[-1]["body"]
    assert "如何学习 Python 编程" in request["messages"][0]["content"] and request["max_tokens"] == 24
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert titled["title"] == stored.title == titles.clean(upstream.requests[-1]["streamed_text"])
    assert stored.title_source == "model"
    updated = await tab.until(lambda f: f["type"] == "conversation_updated")
    assert updated["conversation"]["title"] == stored.title
    assert await database_sync_to_async(Usage.objects.filter(status="title").count)() == 1

    await tab.send(type="send", content="second question", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    await drain_replies()
    assert len(upstream.requests) == 3  # no second title request


async def test_a_title_the_member_edited_is_never_overwritten(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='slow fake:{"tokens": 20, "delay": 0.02}', client_id=str(uuid.uuid4()))
    delta = await tab.until(lambda f: f["type"] == "delta")
    renamed = await database_sync_to_async(alice.client.patch)(
        f"/api/conversations/{conversation.id}/", json.dumps({"title": "My own name"}),
        content_type="application/json")
    assert renamed.status_code == 200
    await follow_reply(tab.recv, text=delta["content"], message_id=delta["message_id"])
    await drain_replies()
    assert len(upstream.requests) == 1  # not even asked: the member named it
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert (stored.title, stored.title_source) == ("My own name", "member")


def test_a_rename_while_the_title_request_runs_wins(alice):
    conversation = alice.conversation(title="auto words")
    Conversation.objects.filter(pk=conversation.pk).update(title_source="first_words")
    Conversation.objects.filter(pk=conversation.pk).update(title="mine", title_source="member")  # meanwhile
    assert titles._write(conversation.id, alice.user.id, "m", "", "Model's title", None, "p", "t") is False
    assert Conversation.objects.get(pk=conversation.pk).title == "mine"


async def test_a_failed_title_request_keeps_the_first_words(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="hello there", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    await drain_replies()
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        title="hello there", title_source="first_words")
    down = Endpoint(f"http://127.0.0.1:{free_port()}/v1", "k")  # nothing listens there
    await titles._name(conversation.id, alice.user.id, "fake-model", down, "hello there", "an answer")
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert (stored.title, stored.title_source) == ("hello there", "first_words")


@pytest.mark.parametrize(("said", "title"), [
    ('"Learning Python"', "Learning Python"), ("Title: Rust lifetimes\nMore text", "Rust lifetimes"),
    ("**学习 Python**", "学习 Python"), ("标题：《机器学习入门》", "机器学习入门"), ("  \n  ", ""),
])
def test_the_models_answer_is_cleaned_into_a_title(said, title):
    assert titles.clean(said) == title
