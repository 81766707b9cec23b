"""The channel layer (chat/layer.py): this process's members are served without Redis, other
processes through it, and a reply's deltas stay in the process while no other listens."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis.asyncio
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

from conversations.chat import broadcast
from conversations.chat.layer import LocalFirstPubSubLayer
from tests.conftest import drain_replies, follow_reply, open_tab

REDIS = os.environ["REDIS_URL"]


@pytest.fixture
async def processes():
    """Two layers, as two app processes have: each its own origin and its own Redis connections."""
    prefix = f"layer-test-{os.getpid()}-{id(object())}"
    made = [LocalFirstPubSubLayer(hosts=[REDIS], prefix=prefix) for _ in range(2)]
    yield made
    for layer in made:
        await layer.flush()


async def next_message(layer, channel, timeout=5):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def until_subscribed(layer, group: str, processes: int = 2) -> None:
    """Until Redis counts `processes` subscribers of the group. group_add sends SUBSCRIBE without
    waiting for Redis's answer, so a PUBLISH on another connection could otherwise pass it."""
    name = layer._get_layer()._get_group_channel_name(group)
    client = redis.asyncio.from_url(REDIS)
    try:
        for _ in range(500):
            if dict(await client.pubsub_numsub(name)).get(name.encode(), 0) >= processes:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"Redis never counted {processes} subscribers of {group}")
    finally:
        await client.aclose()


def counting_publishes(layer):
    loop_layer = layer._get_layer()
    counted = []
    real = loop_layer._publish

    async def publish(name, payload):
        counted.append(name)
        return await real(name, payload)

    loop_layer._publish = publish
    return counted


async def test_members_here_get_the_message_as_it_is_and_others_through_redis(processes):
    here, there = processes
    mine, theirs = await here.new_channel(), await there.new_channel()
    await here.group_add("conversation.x", mine)
    await there.group_add("conversation.x", theirs)
    await until_subscribed(here, "conversation.x")
    event = {"type": "reply.frame", "frame": "{}", "nested": {"a": [1, 2]}}
    await here.group_send("conversation.x", event)
    assert await next_message(here, mine) is event  # no serialising on the way
    assert await next_message(there, theirs) == event


async def test_deltas_stay_here_while_no_other_process_listens_and_resume_when_one_does(processes):
    here, there = processes
    mine = await here.new_channel()
    await here.group_add("conversation.y", mine)
    published = counting_publishes(here)
    for offset in range(5):
        await here.group_send_lossy("conversation.y", {"type": "reply.delta", "offset": offset})
    assert [(await next_message(here, mine))["offset"] for _ in range(5)] == [0, 1, 2, 3, 4]
    group_name = here._get_layer()._get_group_channel_name("conversation.y")
    assert published.count(group_name) == 1  # the first asked Redis: nobody else; the rest stayed here

    theirs = await there.new_channel()
    await there.group_add("conversation.y", theirs)  # another process starts listening: it says hello
    for _ in range(100):
        if group_name not in here._get_layer().quiet:
            break
        await asyncio.sleep(0.01)
    await here.group_send_lossy("conversation.y", {"type": "reply.delta", "offset": 5})
    assert (await next_message(there, theirs))["offset"] == 5
    assert (await next_message(here, mine))["offset"] == 5


async def test_frames_that_must_arrive_are_always_published(processes):
    here, there = processes
    mine = await here.new_channel()
    await here.group_add("conversation.z", mine)
    published = counting_publishes(here)
    await here.group_send_lossy("conversation.z", {"type": "reply.delta"})  # learns it is alone
    await here.group_send("conversation.z", {"type": "reply.frame", "frame": "done"})
    group_name = here._get_layer()._get_group_channel_name("conversation.z")
    assert published.count(group_name) == 2


async def test_a_message_to_a_channel_here_never_leaves_the_process(processes):
    here, _there = processes
    channel = await here.new_channel()
    published = counting_publishes(here)
    await here.send(channel, {"type": "reply.sync", "text": "so far"})
    assert (await next_message(here, channel))["text"] == "so far" and published == []


# --------------------------------------------------------------------------- several at once


def counting_round_trips(layer):
    """Every PUBLISH (one each) and every pipeline (the names it carried) the layer sends."""
    loop_layer = layer._get_layer()
    trips: list[list[str]] = []
    single, many = loop_layer._publish, loop_layer._publish_many

    async def publish(name, payload):
        trips.append([name])
        return await single(name, payload)

    async def publish_many(shard, items):
        trips.append([name for name, _payload in items])
        return await many(shard, items)

    loop_layer._publish, loop_layer._publish_many = publish, publish_many
    return trips


async def test_a_batch_reaches_every_member_on_both_processes_in_order_exactly_once(processes):
    here, there = processes
    members = {
        "conversation.a": [await here.new_channel(), await here.new_channel(), await there.new_channel()],
        "member.7": [await here.new_channel(), await there.new_channel()],
    }
    for group, channels in members.items():
        for channel in channels:
            layer = here if channel in here._get_layer().channels else there
            await layer.group_add(group, channel)
        await until_subscribed(here, group)
    events = [("conversation.a" if n % 3 else "member.7", {"type": "reply.frame", "n": n}) for n in range(12)]
    trips = counting_round_trips(here)

    await here.group_send_many(events)
    assert len(trips) == 1 and len(trips[0]) == 12  # one round trip to Redis for the lot

    for group, channels in members.items():
        await here.group_send(group, {"type": "reply.frame", "n": "end"})  # after the batch, on every path
        expected = [event["n"] for name, event in events if name == group] + ["end"]
        for channel in channels:
            layer = here if channel in here._get_layer().channels else there
            got = [(await next_message(layer, channel))["n"] for _ in expected]
            assert got == expected, (group, channel)  # in order, none twice, none missing before the end


async def test_a_failing_redis_raises_what_callers_already_handle(monkeypatch):
    down = LocalFirstPubSubLayer(hosts=[{"address": "redis://127.0.0.1:1/0"}], prefix="layer-test-down")
    events = [("conversation.b", {"type": "reply.frame", "n": 1}), ("member.3", {"type": "member.frame"})]
    try:
        with pytest.raises(broadcast.LAYER_ERRORS):
            await down.group_send_many(events)
        monkeypatch.setattr(broadcast, "get_channel_layer", lambda: down)
        with pytest.raises(broadcast.Unavailable) as caught:
            await broadcast.send_all(events)
        assert caught.value.pending == events  # none is known to have left: a retry sends them all
    finally:
        await down.flush()


async def test_without_redis_a_batch_goes_one_by_one_in_order(monkeypatch):
    memory = InMemoryChannelLayer()
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: memory)
    channel = await memory.new_channel()
    await memory.group_add("conversation.c", channel)
    await broadcast.send_all([("conversation.c", {"type": "reply.frame", "n": n}) for n in range(3)])
    assert [(await memory.receive(channel))["n"] for _ in range(3)] == [0, 1, 2]


async def test_announcements_made_together_leave_in_one_round_trip():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("member.9", channel)
    trips = counting_round_trips(layer)
    broadcast.bind_loop(asyncio.get_running_loop())
    for n in range(3):  # as three writes' after-commit hooks in a request thread do
        broadcast._sender.hand("member.9", {"type": "member.frame", "n": n})
    await broadcast.flush()
    assert trips == [[layer._get_layer()._get_group_channel_name("member.9")] * 3]
    assert [(await next_message(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]


# --------------------------------------------------------------------------- what a join costs


async def test_only_joining_a_conversation_says_hello(processes):
    here, _there = processes
    published = counting_publishes(here)
    for group in ("member.5", "reply-control.d", "conversation.d"):
        await here.group_add(group, await here.new_channel())
    assert published == [here._get_layer()._get_group_channel_name("conversation.d")]


async def test_groups_without_hellos_are_never_kept_quiet(processes):
    """A process joining a control group says no hello, and needs none: nothing sent there is held back."""
    here, there = processes
    mine = await here.new_channel()
    await here.group_add("reply-control.e", mine)
    published = counting_publishes(here)
    await here.group_send("reply-control.e", {"type": "reply.sync"})  # nobody else listens yet
    await here.group_send_lossy("reply-control.e", {"type": "reply.stop"})  # lossy here means nothing
    theirs = await there.new_channel()
    await there.group_add("reply-control.e", theirs)  # no hello
    await here.group_send_lossy("reply-control.e", {"type": "reply.stop", "n": 2})
    assert len(published) == 3
    assert (await next_message(there, theirs))["n"] == 2


async def test_a_local_channel_gets_its_groups_messages_without_a_subscription_of_its_own(processes):
    here, there = processes
    channel = await here.new_local_channel()
    await here.group_add("reply-control.f", channel)
    await there.group_send("reply-control.f", {"type": "reply.stop"})  # from another process
    assert (await next_message(here, channel))["type"] == "reply.stop"
    await here.send(channel, {"type": "reply.end"})
    assert (await next_message(here, channel))["type"] == "reply.end"
    loop_layer = here._get_layer()
    assert channel not in loop_layer._get_shard(channel)._subscribed_to
    await here.group_discard("reply-control.f", channel)
    here.forget_channel(channel)
    assert channel not in loop_layer.channels


@pytest.mark.django_db(transaction=True)
async def test_a_finished_reply_leaves_no_channel_and_no_subscription_behind(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='hi fake:{"tokens": 5}', client_id=str(uuid.uuid4()))
    assert (await follow_reply(tab.recv)).end["type"] == "done"
    await tab.close()
    await drain_replies()
    loop_layer = get_channel_layer()._get_layer()
    assert loop_layer.channels == {} and loop_layer.groups == {}
    assert all(shard._subscribed_to == set() for shard in loop_layer._shards)
