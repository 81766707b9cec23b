"""The Chat Completions API's features in the conversation: reasoning apart from the answer (and
never sent back), logprobs kept, parameters typed and bounded, `user` an opaque id, n refused,
and the context budget visible. The fake upstream records the exact request it received."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.chat.params import ParamsError, clean_params
from conversations.models import Message
from tests.conftest import follow_reply, open_tab

pytestmark = pytest.mark.django_db(transaction=True)

THINKING = "Let me think. The member asks for a greeting; a short one fits. "


async def follow_with_reasoning(recv) -> tuple[dict, str, str]:
    """A reply's end, its answer and its reasoning, each assembled with exact offsets."""
    answer, reasoning, message_id = "", "", None
    while True:
        frame = await recv()
        if frame["type"] == "message" and frame["message"]["status"] == "streaming":
            message_id = frame["message"]["id"]
        elif frame["type"] == "reasoning" and frame["message_id"] == message_id:
            assert frame["offset"] == len(reasoning)
            reasoning += frame["content"]
        elif frame["type"] == "delta" and frame["message_id"] == message_id:
            assert frame["offset"] == len(answer)
            assert reasoning == THINKING, "the reasoning streams before the answer"
            answer += frame["content"]
        elif frame["type"] in ("done", "error") and frame.get("message_id") == message_id:
            return frame, answer, reasoning


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_apart_is_stored_apart_and_never_goes_back_upstream(alice, upstream, sockets, key):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    directive = json.dumps({"reasoning": THINKING, "reasoning_key": key, "text": "Hello there!"})
    await tab.send(type="send", content=f"greet me fake:{directive}", client_id=str(uuid.uuid4()))
    end, answer, reasoning = await follow_with_reasoning(tab.recv)
    assert end["type"] == "done" and answer == "Hello there!" and reasoning == THINKING
    row = await database_sync_to_async(Message.objects.get)(pk=end["message_id"])
    assert (row.content, row.reasoning) == ("Hello there!", THINKING)

    later = await open_tab(sockets, alice, conversation)  # a snapshot shows both, apart
    stored = later.frames[0]["messages"][-1]
    assert (stored["content"], stored["reasoning"]) == ("Hello there!", THINKING)

    await tab.send(type="send", content="and now?", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    sent = upstream.requests[-1]["body"]["messages"]
    assert [m for m in sent if m["role"] == "assistant"] == [{"role": "assistant", "content": "Hello there!"}]
    assert not any(set(m) - {"role", "content"} for m in sent)  # no reasoning field either


async def test_a_tab_joining_mid_reasoning_continues_it_exactly(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    directive = json.dumps({"reasoning": THINKING * 3, "delay": 0.02, "text": "Done thinking."})
    await tab.send(type="send", content=f"think fake:{directive}", client_id=str(uuid.uuid4()))
    await tab.until(lambda f: f["type"] == "reasoning")
    late = sockets(alice, conversation.id)
    assert (await late.connect())[0]
    snapshot = await late.recv()
    reasoning = snapshot["active"].get("reasoning", "")
    answer = snapshot["active"]["content"]
    while True:
        frame = await late.recv()
        if frame["type"] == "reasoning":
            assert frame["offset"] == len(reasoning)
            reasoning += frame["content"]
        elif frame["type"] == "delta":
            assert frame["offset"] == len(answer)
            answer += frame["content"]
        elif frame["type"] == "done":
            break
    assert (reasoning, answer) == (THINKING * 3, "Done thinking.")


async def test_logprobs_asked_for_are_kept_with_the_reply(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)(params={"logprobs": True, "top_logprobs": 2})
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='tokens fake:{"text": "one two three"}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    body = upstream.requests[-1]["body"]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert [entry["token"] for entry in row.logprobs] == ["one ", "two ", "three"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in row.logprobs)
    later = await open_tab(sockets, alice, conversation)
    assert later.frames[0]["messages"][-1]["logprobs"] == row.logprobs


async def test_parameters_reach_the_model_server_typed_and_user_is_opaque(alice, upstream, sockets):
    params = {"temperature": 0.4, "top_p": 0.9, "max_tokens": 64, "presence_penalty": 0.5,
              "frequency_penalty": -0.5, "stop": ["END"], "seed": 7, "response_format": {"type": "json_object"},
              "logit_bias": {"50256": -100, "1234": 5.5}, "user": "alice@example.com"}
    conversation = await database_sync_to_async(alice.conversation)(params=clean_params(params))
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="hi", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    body = upstream.requests[-1]["body"]
    for name, value in params.items():
        if name != "user":
            assert body[name] == value and type(body[name]) is type(value), name
    assert body["user"].startswith("member-") and "alice" not in body["user"]
    assert body["user"] == alice.user.opaque_id  # stable: the same on every request of the member
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("params", "words"), [
    ({"n": 2}, "n must be 1"),
    ({"top_logprobs": 3}, "needs logprobs"),
    ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logit_bias": {"abc": 1}}, "token ids"),
    ({"logit_bias": {"12": 101}}, "logit_bias[12]"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "at most 300"),
    ({"logit_bias": ["12"]}, "object"),
])
def test_bad_parameters_are_refused_with_a_reason(params, words):
    with pytest.raises(ParamsError) as caught:
        clean_params(params)
    assert words in str(caught.value)


async def test_the_reply_says_where_the_models_context_began(alice, upstream, sockets, settings):
    settings.CONTEXT_TOKEN_BUDGET = 300  # room for about two turns
    conversation = await database_sync_to_async(alice.conversation)(system_prompt="Be brief.")
    tab = await open_tab(sockets, alice, conversation)
    for i in range(4):
        await tab.send(type="send", content=f"question {i} " + "words " * 40, client_id=str(uuid.uuid4()))
        reply = await follow_reply(tab.recv)
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    sent = upstream.requests[-1]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}  # the system prompt is always kept
    assert 0 < row.request["dropped_messages"] and len(sent) - 1 == len(row.request["message_ids"])
    later = await open_tab(sockets, alice, conversation)
    last = later.frames[0]["messages"][-1]
    assert last["context"] == {"first_message_id": row.request["message_ids"][0],
                               "dropped": row.request["dropped_messages"]}
    ids = [m["id"] for m in later.frames[0]["messages"]]
    assert ids.index(last["context"]["first_message_id"]) > 0  # the cut is inside the branch on screen
