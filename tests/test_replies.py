"""From a send to a streamed, stored reply, over the real ASGI app, Postgres,
Redis and the fake upstream as a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations.chat import broadcast as events
from conversations.chat import generation
from conversations.models import Message
from tests.conftest import assert_silent, drain_replies, follow_reply, open_tab

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def stored(message_id) -> Message:
    return Message.objects.get(pk=message_id)


@database_sync_to_async
def messages_of(conversation) -> list[Message]:
    return list(conversation.messages.order_by("created_at"))


async def test_a_reply_streams_and_is_stored(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='What is up? fake:{"tokens": 20}', client_id=str(uuid.uuid4()))

    question = await tab.until(lambda f: f["type"] == "message")
    assert question["message"]["role"] == "user"
    reply = await follow_reply(tab.recv)

    assert reply.end == {
        "type": "done", "message_id": reply.message_id, "status": "complete",
        "finish_reason": "stop", "usage": reply.end["usage"],
    }
    assert reply.end["usage"]["completion_tokens"] == 20
    row = await stored(reply.message_id)
    assert row.status == "complete"
    assert row.content == reply.text == upstream.requests[0]["streamed_text"]
    assert row.usage == reply.end["usage"]
    assert row.parent_id == uuid.UUID(question["message"]["id"])
    assert row.lease_expires_at is None
    body = upstream.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert row.request["message_ids"] == [question["message"]["id"]]
    assert row.request["model"] == "fake-model"


async def test_twenty_members_at_once_each_get_exactly_their_own_reply(make_member, upstream, sockets):
    members = [await database_sync_to_async(make_member)(f"member{i}") for i in range(20)]
    conversations = [await database_sync_to_async(m.conversation)() for m in members]
    tabs = [await open_tab(sockets, m, c) for m, c in zip(members, conversations)]
    await asyncio.gather(*(
        tab.send(type="send", content=f'question-{i} fake:{{"tokens": 25, "delay": 0.003}}',
                 client_id=str(uuid.uuid4()))
        for i, tab in enumerate(tabs)
    ))
    replies = await asyncio.gather(*(follow_reply(tab.recv) for tab in tabs))

    streamed = {r["body"]["messages"][-1]["content"].split()[0]: r["streamed_text"] for r in upstream.requests}
    assert len(upstream.requests) == 20, [(r["body"]["messages"][-1]["content"], r["streamed_text"][-20:], r["finished"]) for r in upstream.requests]
    assert len(streamed) == 20
    for i, (tab, reply, conversation) in enumerate(zip(tabs, replies, conversations)):
        row = await stored(reply.message_id)
        assert row.conversation_id == conversation.id
        assert row.content == reply.text == streamed[f"question-{i}"]
        assert reply.text.startswith(f"You said: question-{i} ")
        own_ids = {str(m.id) for m in await messages_of(conversation)}
        for frame in tab.frames:
            about = frame.get("message_id") or frame.get("message", {}).get("id")
            if about:
                assert about in own_ids, f"tab {i} received a frame of another conversation"


async def test_the_second_turn_is_sent_with_the_first_from_the_database(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)(system_prompt="Be brief.")
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="first question", client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    await tab.send(type="send", content="second question", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)

    sent = upstream.requests[1]["body"]["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "second question"},
    ]
    rows = await messages_of(conversation)
    assert [m.role for m in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[3].request["message_ids"] == [str(m.id) for m in rows[:3]]
    assert rows[2].parent_id == rows[1].id


async def test_two_tabs_sending_at_once_start_exactly_one_reply(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    one = await open_tab(sockets, alice, conversation)
    two = await open_tab(sockets, alice, conversation)
    slow = 'fake:{"tokens": 30, "delay": 0.02}'
    await asyncio.gather(
        one.send(type="send", content=f"from one {slow}", client_id=str(uuid.uuid4())),
        two.send(type="send", content=f"from two {slow}", client_id=str(uuid.uuid4())),
    )
    busy = []
    for tab in (one, two):
        frame = await tab.until(lambda f: f["type"] in ("done", "error"))
        if frame["type"] == "error":
            busy.append(frame)
    await drain_replies()
    rows = await messages_of(conversation)
    assert len(busy) == 1 and busy[0]["code"] == "busy" and "message_id" not in busy[0]
    assert [m.role for m in rows] == ["user", "assistant"]
    assert len(upstream.requests) == 1


async def test_the_reply_goes_on_when_the_tab_goes_away(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='bye fake:{"tokens": 40, "delay": 0.01}', client_id=str(uuid.uuid4()))
    delta = await tab.until(lambda f: f["type"] == "delta")
    await tab.close()
    await drain_replies()
    row = await stored(delta["message_id"])
    assert row.status == "complete"
    assert row.content == upstream.requests[0]["streamed_text"]
    assert row.content.endswith("w39 ")


async def test_a_tab_joining_mid_reply_gets_snapshot_then_every_character_once(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    first = await open_tab(sockets, alice, conversation)
    await first.send(type="send", content='long fake:{"tokens": 150, "delay": 0.01}', client_id=str(uuid.uuid4()))
    for _ in range(5):
        await first.until(lambda f: f["type"] == "delta")

    late = sockets(alice, conversation.id)
    assert (await late.connect())[0]
    snapshot = await late.recv()
    active = snapshot["active"]
    assert active is not None and active["status"] == "streaming" and active["content"]
    assert snapshot["messages"][-1] == active
    reply = await follow_reply(late.recv, text=active["content"], message_id=active["id"])

    row = await stored(active["id"])
    assert reply.text == row.content == upstream.requests[0]["streamed_text"]


async def test_stop_keeps_the_text_so_far_and_frees_the_conversation(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='stop me fake:{"tokens": 500, "delay": 0.02}', client_id=str(uuid.uuid4()))
    first = await tab.until(lambda f: f["type"] == "delta")
    await tab.send(type="stop")
    reply = await follow_reply(tab.recv, text=first["content"], message_id=first["message_id"])

    assert reply.end["type"] == "done" and reply.end["status"] == "stopped"
    row = await stored(reply.message_id)
    assert row.status == "stopped"
    assert row.content and "w499" not in row.content
    assert upstream.requests[0]["streamed_text"].startswith(row.content)

    await tab.send(type="send", content="next", client_id=str(uuid.uuid4()))
    after = await follow_reply(tab.recv)
    assert after.end["status"] == "complete"


async def test_a_resent_client_id_creates_no_second_message(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    client_id = str(uuid.uuid4())
    await tab.send(type="send", content="once", client_id=client_id)
    question = await tab.until(lambda frame: frame["type"] == "message")
    assert question["message"]["client_id"] == client_id  # the page clears its box on seeing it
    await follow_reply(tab.recv)
    await tab.send(type="send", content="once", client_id=client_id)
    echo = await tab.recv()
    assert echo["type"] == "message" and echo["message"]["content"] == "once"
    assert echo["message"]["client_id"] == client_id
    await assert_silent(tab, alice)
    rows = await messages_of(conversation)
    assert [m.role for m in rows] == ["user", "assistant"]
    assert echo["message"]["id"] == str(rows[0].id)
    assert len(upstream.requests) == 1


async def test_regenerate_and_edit_make_sibling_branches(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="original", client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    await tab.send(type="regenerate", message_id=first.message_id)
    second = await follow_reply(tab.recv)
    rows = {str(m.id): m for m in await messages_of(conversation)}
    assert rows[second.message_id].parent_id == rows[first.message_id].parent_id

    question_id = str(rows[first.message_id].parent_id)
    await tab.send(type="edit", message_id=question_id, content="edited", client_id=str(uuid.uuid4()))
    edited = await follow_reply(tab.recv)
    rows = {str(m.id): m for m in await messages_of(conversation)}
    new_question = rows[str(rows[edited.message_id].parent_id)]
    assert new_question.content == "edited" and new_question.parent_id is None
    assert upstream.requests[-1]["body"]["messages"] == [{"role": "user", "content": "edited"}]

    snapshot_tab = await open_tab(sockets, alice, conversation)
    snapshot = snapshot_tab.frames[0]
    assert [m["id"] for m in snapshot["messages"]] == [str(new_question.id), edited.message_id]


async def test_selecting_a_branch_shows_it_in_every_tab_and_the_next_question_follows_it(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    other = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='first fake:{"text": "answer one"}', client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    await tab.send(type="regenerate", message_id=first.message_id, client_id=str(uuid.uuid4()))
    regenerated = await tab.until(lambda f: f["type"] == "message" and f["message"]["status"] == "streaming")
    assert regenerated["message"]["sibling_ids"] == [first.message_id, regenerated["message"]["id"]]
    await follow_reply(tab.recv, message_id=regenerated["message"]["id"])

    await tab.send(type="select", message_id=first.message_id)
    for each in (tab, other):
        snapshot = await each.until(lambda f: f["type"] == "snapshot")
        assert snapshot["messages"][-1]["id"] == first.message_id
        assert snapshot["messages"][-1]["sibling_ids"] == regenerated["message"]["sibling_ids"]

    await tab.send(type="send", content="and then?", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    row = await database_sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert first.message_id in row.request["message_ids"]  # the branch on screen went upstream
    assert regenerated["message"]["id"] not in row.request["message_ids"]


async def test_a_branch_cannot_be_switched_while_a_reply_streams(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="quick", client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    await tab.send(type="send", content='slow fake:{"tokens": 40, "delay": 0.05}', client_id=str(uuid.uuid4()))
    await tab.until(lambda f: f["type"] == "delta")
    await tab.send(type="select", message_id=first.message_id)
    refused = await tab.until(lambda f: f["type"] == "error")
    assert refused["code"] == "busy"
    await tab.send(type="stop")
    await tab.until(lambda f: f["type"] == "done")
    await tab.send(type="select", message_id=str(uuid.uuid4()))
    assert (await tab.until(lambda f: f["type"] == "error"))["code"] == "not_found"


async def test_a_resent_regenerate_frame_makes_no_second_sibling(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="original", client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    client_id = str(uuid.uuid4())
    await tab.send(type="regenerate", message_id=first.message_id, client_id=client_id)
    second = await follow_reply(tab.recv)
    await tab.send(type="regenerate", message_id=first.message_id, client_id=client_id)  # a resend
    echo = await tab.recv()
    assert echo["type"] == "message" and echo["message"]["id"] == second.message_id
    await assert_silent(tab, alice)
    assert [m.role for m in await messages_of(conversation)] == ["user", "assistant", "assistant"]
    assert len(upstream.requests) == 2


async def test_content_parts_reach_the_upstream_as_sent(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.png", "detail": "low"}},
    ]
    await tab.send(type="send", content=parts, client_id=str(uuid.uuid4()))
    question = await tab.until(lambda f: f["type"] == "message")
    assert question["message"]["content"] == parts
    await follow_reply(tab.recv)
    assert upstream.requests[0]["body"]["messages"][-1] == {"role": "user", "content": parts}


async def test_the_first_message_titles_the_conversation(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="How do   I bake bread?", client_id=str(uuid.uuid4()))
    title = await tab.until(lambda f: f["type"] == "title")
    assert title["title"] == "How do I bake bread?"
    reply = next(f["message"] for f in tab.frames if f["type"] == "message" and f["message"]["role"] == "assistant")
    await follow_reply(tab.recv, message_id=reply["id"])
    row = await database_sync_to_async(lambda: type(conversation).objects.get(pk=conversation.id))()
    assert row.title == "How do I bake bread?"


async def test_deleting_the_conversation_mid_reply_ends_the_reply_quietly(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='long fake:{"tokens": 500, "delay": 0.02}', client_id=str(uuid.uuid4()))
    await tab.until(lambda f: f["type"] == "delta")
    response = await database_sync_to_async(alice.client.delete)(f"/api/conversations/{conversation.id}/")
    assert response.status_code == 204
    await drain_replies()
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert not upstream.requests[0]["streamed_text"].endswith("w499 ")


async def test_a_stop_whose_cancel_was_swallowed_still_stops_the_reply(alice, upstream, sockets):
    """On Python 3.11 a cancel can be lost inside a library's wait_for; the stop flag backs it up."""
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='long fake:{"tokens": 400, "delay": 0.01}', client_id=str(uuid.uuid4()))
    started = await tab.until(lambda f: f["type"] == "message" and f["message"]["status"] == "streaming")
    await tab.until(lambda f: f["type"] == "delta")
    _task, reply = generation._running[uuid.UUID(started["message"]["id"])]
    reply.stop_requested = True  # stop() without its cancel

    end = await tab.until(lambda f: f["type"] in ("done", "error"))
    assert end["status"] == "stopped"
    row = await stored(started["message"]["id"])
    whole = "You said: long " + "".join(f"w{i} " for i in range(1, 400))
    assert row.status == "stopped"
    assert row.content and whole.startswith(row.content) and len(row.content) < len(whole)


async def test_a_stop_meant_for_an_earlier_reply_does_not_stop_the_next(alice, upstream, sockets):
    """A stop names its reply; one that raced the end of the last reply reaches the next one's group."""
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='go on fake:{"tokens": 60, "delay": 0.01}', client_id=str(uuid.uuid4()))
    await tab.until(lambda f: f["type"] == "delta")
    await get_channel_layer().group_send(
        events.control_group(conversation.id), {"type": "reply.stop", "message_id": str(uuid.uuid4())}
    )
    reply = await follow_reply(tab.recv, text=tab.frames[-1]["content"], message_id=tab.frames[-1]["message_id"])
    assert reply.end["type"] == "done" and reply.end["status"] == "complete"
    assert (await stored(reply.message_id)).content == upstream.requests[0]["streamed_text"]


async def test_stored_params_never_replace_what_the_server_builds(alice, upstream, sockets):
    """Params edited outside the API (the admin saves any JSON) cannot swap the context or the stream."""
    conversation = await database_sync_to_async(alice.conversation)(
        params={"temperature": 0.5, "messages": [], "stream": False, "model": "other"}
    )
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='hello fake:{"tokens": 3}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["status"] == "complete"
    body = upstream.requests[0]["body"]
    assert body["stream"] is True and body["model"] == "fake-model" and body["temperature"] == 0.5
    assert [m["content"] for m in body["messages"]] == ['hello fake:{"tokens": 3}']


async def test_an_overlong_finish_reason_is_cut_to_fit_and_the_reply_is_saved(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    reason = "x" * 200
    content = "hi fake:" + json.dumps({"tokens": 3, "finish_reason": reason})
    await tab.send(type="send", content=content, client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["type"] == "done" and reply.end["finish_reason"] == reason[:64]
    row = await stored(reply.message_id)
    assert row.status == "complete" and row.finish_reason == reason[:64]


async def test_the_upstream_request_starts_before_the_turn_is_announced_and_tabs_still_see_it_in_order(
        alice, upstream, sockets, monkeypatch):
    """The reply's request does not wait for the announcements' Redis round trips, and the
    reply's deltas still reach the tab only after its `message` frame."""
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    send_all = events.send_all
    seen_before_sending: list[int] = []

    async def announce_once_the_upstream_has_the_request(pending):
        if any('"role":"assistant"' in event.get("frame", "") for _group, event in pending):
            # Hold the announcements until the upstream has the request: without the
            # early start the request would wait for them, and this would time out.
            for _ in range(1000):
                if upstream.requests:
                    break
                await asyncio.sleep(0.01)
            seen_before_sending.append(len(upstream.requests))
        await send_all(pending)

    monkeypatch.setattr(events, "send_all", announce_once_the_upstream_has_the_request)
    await tab.send(type="send", content='Hi fake:{"tokens": 30}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)

    assert seen_before_sending == [1]
    kinds = [(f["type"], f.get("message", {}).get("role")) for f in tab.frames]
    first_delta = kinds.index(("delta", None))
    assert ("message", "assistant") in kinds[:first_delta]
    assert reply.end["status"] == "complete" and reply.text == upstream.requests[0]["streamed_text"]


async def test_a_turn_is_announced_only_once_its_reply_can_hear_a_stop(alice, upstream, sockets, monkeypatch):
    """Tabs may stop a reply as soon as they see it: the reply joins its control group first."""
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    layer = get_channel_layer()
    order: list[str] = []
    group_add, send_all = layer.group_add, events.send_all

    async def slow_control_join(group, channel):
        if group.startswith("reply-control."):
            await asyncio.sleep(0.3)  # a slow Redis: the announcements must wait for it
            await group_add(group, channel)
            order.append("joined")
        else:
            await group_add(group, channel)

    async def recording_send_all(pending):
        if any('"role":"assistant"' in event.get("frame", "") for _group, event in pending):
            order.append("announced")
        await send_all(pending)

    monkeypatch.setattr(layer, "group_add", slow_control_join)
    monkeypatch.setattr(events, "send_all", recording_send_all)
    await tab.send(type="send", content='Hi fake:{"tokens": 400, "delay": 0.01}', client_id=str(uuid.uuid4()))
    started = await tab.until(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
    await tab.send(type="stop")
    reply = await follow_reply(tab.recv, message_id=started["message"]["id"])

    assert order == ["joined", "announced"]
    assert reply.end["status"] == "stopped"
    assert (await stored(started["message"]["id"])).status == "stopped"
