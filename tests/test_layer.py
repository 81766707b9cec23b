"""The channel layer (chat/layer.py): this process's members are served without Redis, other
processes through it, and a reply's deltas stay in the process while no other listens."""

from __future__ import annotations

import asyncio
import os

import pytest

from conversations.chat.layer import LocalFirstPubSubLayer

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
