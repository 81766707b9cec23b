"""Disconnects and cancellations at every await, under load, with several members.

The failure this guards against is the one that leaked other people's chats
from a hosted assistant in 2023: a request cancelled half-way left a shared
connection with a reply still in it, and the next user read that reply. Here
the shared parts are the channel layer's Redis connection, the database
thread pool and the upstream's pooled HTTP connections.

Each member's replies carry that member's marker. Sockets connect, send, stop
and vanish at many different moments (a sweep of delays puts the cancellation
at a different await each time: the session lookup, the ownership query, the
group join, the snapshot, the send's transaction, the channel layer), while an
observer socket per conversation stays open. At the end: no frame, row or
upstream request of one member holds another member's marker, every reply has
ended, and every conversation still answers.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message
from tests.conftest import Socket, drain_replies, follow_reply, send_marker

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = ("alice", "bob", "carol")
# Delays (seconds) after which a socket is cut off: 0 cancels before the first await.
# Small ones land inside the handshake, larger ones after the send or mid-reply.
CUT_DELAYS = [0, 0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.1, 0.15, 0.25, 0.4]


def marker(name: str) -> str:
    return f"MARK-{name.upper()}-"


def question(name: str, index: int) -> str:
    reply = " ".join(f"{marker(name)}{index}-{i}" for i in range(30))
    return f"{marker(name)}q{index} fake:" + json.dumps({"text": reply, "delay": 0.002})


def foreign_markers(name: str) -> list[str]:
    return [marker(other) for other in NAMES if other != name]


def assert_clean(name: str, text: str, where: str) -> None:
    for foreign in foreign_markers(name):
        assert foreign not in text, f"{where} of {name} holds {foreign}: {text[:300]}"


async def cut(tab: Socket, delay: float) -> None:
    """Cancel the socket's application after `delay`, wherever it is.

    Cancelled again until it ends, as daphne does (it re-cancels an app that
    outlives a closed connection every second): on Python 3.11 a cancel that
    lands as redis-py's `asyncio.wait_for` completes is swallowed (CPython
    gh-86296, fixed in 3.12), and the app would go on as if nothing happened.
    """
    if delay:
        await asyncio.sleep(delay)
    app = tab.comm.future
    while not app.done():
        app.cancel()  # the ASGI app is cancelled at whatever it awaits
        await asyncio.wait([app], timeout=0.5)
    tab.connected = False
    if not app.cancelled() and app.exception() is not None:
        raise AssertionError("a churning socket's app crashed") from app.exception()


async def churn(member, name: str, conversation, rng: random.Random, rounds: int, sent: list) -> None:
    """One member's restless tabs: connect, maybe send or stop, and vanish at a random moment.

    A round cut "early" counts its delay from the start (the handshake, the
    send's transaction); one cut "late" from when its send or stop went out
    (mid-reply). The seed fixes which rounds are late, so they always act.
    """
    for index in range(rounds):
        tab = Socket(member, conversation.id)
        delay = rng.choice(CUT_DELAYS)
        action = rng.choice(("connect", "send", "send", "send-and-stop", "stop"))
        pause = rng.choice((0, 0.005, 0.02, 0.05))
        late = rng.random() < 0.5
        acted = asyncio.Event()

        async def act(tab=tab, action=action, index=index, pause=pause, acted=acted) -> None:
            connected, _ = await tab.connect()
            if not connected:
                return
            if action.startswith("send"):
                client_id = str(uuid.uuid4())
                sent.append(client_id)
                await tab.send(type="send", content=question(name, index), client_id=client_id)
            if action.endswith("stop"):
                await asyncio.sleep(pause)
                await tab.send(type="stop")
            acted.set()
            while True:  # read until cut off
                frame = json.loads(await tab.comm.receive_from(timeout=30))
                assert_clean(name, json.dumps(frame), "a churning socket's frame")

        task = asyncio.ensure_future(act())
        if late:
            await asyncio.wait([asyncio.ensure_future(acted.wait()), task], return_when=asyncio.FIRST_COMPLETED)
        await cut(tab, delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass  # cut off, as meant; anything else (a crash the app raised into the tab) fails the test


async def observe(tab: Socket, name: str, frames: list) -> None:
    """A tab that stays open and keeps every frame it hears, until cancelled.

    (A timeout in the communicator's receive would cancel the app, so it waits long.)
    """
    while True:
        frame = json.loads(await tab.comm.receive_from(timeout=300))
        assert_clean(name, json.dumps(frame), "an observing socket's frame")
        frames.append(frame)


@database_sync_to_async
def conversation_rows(conversation_id) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id))


async def test_cut_offs_at_every_await_never_cross_members(make_member, upstream, sockets):
    rng = random.Random(20261122)
    members = {name: await database_sync_to_async(make_member)(name) for name in NAMES}
    conversations = {
        name: [await database_sync_to_async(member.conversation)() for _ in range(2)]
        for name, member in members.items()
    }
    observers = {}
    for name, convs in conversations.items():
        for conversation in convs:
            tab = sockets(members[name], conversation.id)
            assert (await tab.connect())[0]
            assert (await tab.recv())["type"] == "snapshot"
            observers[conversation.id] = (name, tab, [])

    watchers = [asyncio.ensure_future(observe(tab, name, frames)) for name, tab, frames in observers.values()]
    sent: dict[str, list] = {name: [] for name in NAMES}
    await asyncio.gather(*(
        churn(members[name], name, conversation, random.Random(rng.random()), rounds=12, sent=sent[name])
        for name, convs in conversations.items() for conversation in convs
    ))
    await drain_replies(timeout=60)
    # The last frames reach the observers: each has heard a marker sent after them.
    markers = {name: await send_marker(member) for name, member in members.items()}
    for name, _tab, frames in observers.values():
        while markers[name] not in frames:
            await asyncio.wait(watchers, timeout=0.05)  # an observer that failed ends the wait
            assert not any(watcher.done() for watcher in watchers), "an observer failed"
    for watcher in watchers:
        assert not watcher.done(), watcher  # an observer that failed (or was cut off) ends the test here
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)

    assert sum(len(ids) for ids in sent.values()) > 10, "the churn sent too little to prove anything"
    replies = 0
    for conversation_id, (name, _tab, frames) in observers.items():
        rows = await conversation_rows(conversation_id)
        for row in rows:
            assert_clean(name, row.content, "a stored message")
            assert row.status != "streaming", f"a reply of {name} never ended"
        replies += sum(row.role == "assistant" for row in rows)
        ids = {str(row.id) for row in rows}
        for frame in frames:  # every message an observer heard of is a message of its conversation
            heard = frame.get("message_id") or frame.get("message", {}).get("id")
            if heard:
                assert heard in ids, f"{name}'s observer heard of a message outside its conversation"
    assert replies > 5, "too few replies started to prove anything"
    for request in upstream.requests:
        context = json.dumps(request["body"]["messages"])
        owner = next(name for name in NAMES if f"{marker(name)}q" in context)
        assert_clean(owner, context + request["streamed_text"], "an upstream request")

    # Every conversation still answers, and with its own member's reply only.
    for name, convs in conversations.items():
        for conversation in convs:
            _name, tab, _frames = observers[conversation.id]
            await tab.send(type="send", content=question(name, 99), client_id=str(uuid.uuid4()))
            reply = await follow_reply(tab.recv)
            assert reply.end["type"] == "done", reply.end
            assert f"{marker(name)}99-29" in reply.text
            assert_clean(name, reply.text, "a final reply")
    assert await database_sync_to_async(Conversation.objects.count)() == 6
