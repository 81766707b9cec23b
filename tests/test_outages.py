"""Redis and Postgres going away while replies stream: nothing is lost silently.

Real parts only: a redis-server process of the test's own (killed and started
again on the same port; the machine's shared Redis is never touched), the
test database on the real Postgres (its connections terminated, or refused
for a while with ALLOW_CONNECTIONS), the ASGI app through the conftest
sockets and the fake upstream as a real HTTP server. What each outage must
do is in docs/protocol.md, "Outages".
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket as socketlib
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import application as channels_testing_application
from django.conf import settings as django_settings
from django.db import close_old_connections, connection
from redis import asyncio as aioredis

from conversations.chat import broadcast as events
from conversations.chat import generation
from conversations.models import Message
from conversations.realtime import consumers, delivery
from tests.conftest import DaphneProcess, drain_replies, follow_reply, free_port, open_tab

pytestmark = pytest.mark.django_db(transaction=True)

LONG = 'fake:{"tokens": 300, "delay": 0.02}'  # about 6 s of streaming
TRY_AGAIN_LATER = 1013


class RedisServer:
    """A redis-server process for one test, stopped and started again on one port."""

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socketlib.create_connection(("127.0.0.1", self.port), timeout=0.2) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Kill it, as a crash or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def subscribed_channels(self) -> list[str]:
        client = aioredis.Redis.from_url(self.url)
        try:
            return [name.decode() for name in await client.pubsub_channels()]
        finally:
            await client.aclose()


@pytest.fixture
async def redis_server(settings):
    """The app's channel layer on a redis-server of this test's own.

    Every frame goes through Redis here (channels-redis's own Pub/Sub layer): the tabs of
    these tests stand for tabs on another process than the reply's, which is what loses
    frames when Redis goes away. (The app's layer serves sockets of the reply's own process
    without Redis: tests/test_layer.py.)
    """
    server = RedisServer()
    default = dict(settings.CHANNEL_LAYERS["default"])
    assert default["BACKEND"] == "conversations.chat.layer.LocalFirstPubSubLayer", "run with REDIS_URL set"
    default["BACKEND"] = "channels_redis.pubsub.RedisPubSubChannelLayer"
    default["CONFIG"] = dict(default["CONFIG"], hosts=[{"address": server.url, "socket_timeout": 15}])
    settings.CHANNEL_LAYERS = {"default": default}
    channel_layers.backends.clear()
    yield server
    for layer in list(channel_layers.backends.values()):
        await layer.flush()  # close its connections while the settings still name it
    channel_layers.backends.clear()
    server.stop()


class PostgresAdmin:
    """Cuts the app's connections to the test database from outside, as a Postgres restart would."""

    def __init__(self):
        with connection.cursor() as cursor:  # the test's own connection, which must survive
            cursor.execute("SELECT pg_backend_pid()")
            self.spared = cursor.fetchone()[0]
        db = connection.settings_dict
        self.name = db["NAME"]
        # Connected to another database: one cannot refuse connections to the database one is in.
        self.admin = psycopg.connect(
            host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
            dbname="postgres", autocommit=True,
        )

    def terminate(self) -> int:
        """End every connection to the test database but the test's own: the worker threads'."""
        return self.admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> %s", [self.name, self.spared],
        ).fetchone()[0]

    def refuse(self) -> None:
        """Refuse new connections and end the open ones: the database is down for the app."""
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.terminate()

    def allow(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def postgres(transactional_db, monkeypatch):
    # Channels' test communicator swaps close_old_connections for a no-op while it waits
    # for a frame, that is, nearly all the time here. Keep the real one, as under daphne:
    # it is what closes a connection the database dropped and opens a fresh one.
    monkeypatch.setattr(channels_testing_application, "no_op", close_old_connections)
    admin = PostgresAdmin()
    yield admin
    admin.allow()
    admin.admin.close()
    # The pool may have given up reconnecting while the database refused it: the next test
    # gets a fresh one (Django opens it on first use). Waiting for the old one to refill
    # instead closes it for good when a loaded machine is slow, and every later test fails.
    connection.close_pool()
    # The connection of the thread that plain sync_to_async uses may have been terminated
    # and not touched since: have it checked before its next use, as database_sync_to_async would.
    asyncio.run(database_sync_to_async(close_old_connections)())


@database_sync_to_async
def stored(message_id) -> Message:
    return Message.objects.get(pk=message_id)


async def first_delta(tab, *, beyond: int = 0) -> tuple[str, str]:
    """Follow the start of a reply until its text passes `beyond`: (message id, text so far)."""
    text = ""
    while True:
        frame = await tab.recv()
        if frame["type"] == "delta":
            assert frame["offset"] == len(text)
            text += frame["content"]
            if len(text) > beyond:
                return frame["message_id"], text


async def follow_exactly(tab, message_id: str, text: str = "") -> tuple[str, dict | None, int]:
    """The reply's text as this tab shows it, insisting on exact offsets.

    A fresh snapshot may come in the middle (a tab that missed frames starts
    again from one); the text restarts from the reply as it shows it. Returns
    (text, end frame or None if a snapshot showed the reply ended, snapshots).
    """
    snapshots = 0
    while True:
        frame = await tab.recv(timeout=30)
        kind = frame["type"]
        if kind == "snapshot":
            snapshots += 1
            shown = next((m for m in frame["messages"] if m["id"] == message_id), None)
            assert shown is not None, "the snapshot lost the reply"
            text = shown["content"]
            if shown["status"] != "streaming":
                assert frame["active"] is None
                return text, None, snapshots
            assert frame["active"] == shown
        elif kind == "delta" and frame["message_id"] == message_id:
            assert frame["offset"] == len(text), f"delta at {frame['offset']}, expected {len(text)}"
            text += frame["content"]
        elif kind in ("done", "error") and frame.get("message_id") == message_id:
            return text, frame, snapshots


async def wait_for_close(tab, timeout: float = 15) -> dict:
    output = await tab.comm.receive_output(timeout)
    assert output["type"] == "websocket.close", output
    tab.connected = False
    return output


async def reconnect(sockets, member, conversation, attempts: int = 20):
    """What the page does after a 1013: connect again, with a pause, until a snapshot comes
    (the database pool may take a moment to reconnect once Postgres is back)."""
    for _ in range(attempts):
        tab = sockets(member, conversation.id)
        connected, _ = await tab.connect()
        assert connected
        output = await tab.comm.receive_output(15)
        if output["type"] == "websocket.send":
            snapshot = json.loads(output["text"])
            assert snapshot["type"] == "snapshot"
            tab.frames.append(snapshot)
            return tab
        assert output == {"type": "websocket.close", "code": 1013,
                          "reason": "The server cannot reach its database; reconnect shortly."}
        tab.connected = False
        await asyncio.sleep(0.5)
    raise AssertionError(f"no snapshot after {attempts} attempts")


def warnings_from(caplog, logger: str, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and text in r.getMessage()]


# Redis


async def test_a_reply_goes_on_through_a_redis_restart_and_the_open_tab_gets_every_character(
    redis_server, alice, upstream, sockets, caplog
):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=f"through a restart {LONG}", client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab, beyond=100)

    redis_server.stop()
    await asyncio.sleep(1.5)  # deltas published meanwhile are lost for every socket
    redis_server.start()

    text, end, _ = await follow_exactly(tab, message_id, text)
    await drain_replies()
    row = await stored(message_id)
    streamed = upstream.requests[0]["streamed_text"]
    assert row.status == "complete" and row.content == streamed
    assert text == streamed
    if end is not None:
        assert end["type"] == "done" and end["status"] == "complete"
    # One warning for the outage, not one per lost delta, and one when it is over.
    failed = warnings_from(caplog, "conversations.chat.generation", f"publishing to the sockets of reply {message_id} failed")
    assert len(failed) == 1
    assert warnings_from(caplog, "conversations.chat.generation", f"reply {message_id} works again")

    await tab.send(type="send", content="and after it?", client_id=str(uuid.uuid4()))
    after = await follow_reply(tab.recv)
    assert after.end["status"] == "complete"


async def test_a_tab_that_missed_deltas_catches_up_from_the_reply(
    redis_server, alice, upstream, sockets, monkeypatch
):
    """The gap-resync path, forced: the tab's channel leaves the conversation's group
    for half a second through the channel layer, so the deltas published meanwhile
    never reach it and its next delta starts past what it has."""
    filled = []
    reply_sync = consumers.ConversationConsumer.reply_sync

    async def spy(consumer, event):
        delivery = consumer.delivery
        if event["message_id"] in delivery.resyncing:
            filled.append(len(event["text"]) - delivery.forwarded.get(event["message_id"], 0))
        await reply_sync(consumer, event)

    monkeypatch.setattr(consumers.ConversationConsumer, "reply_sync", spy)
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    # Before any reply the tab's is the only process-specific channel Redis knows.
    (channel,) = [name for name in await redis_server.subscribed_channels() if "specific." in name]
    await tab.send(type="send", content=f"gap {LONG}", client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab, beyond=100)

    layer, group = get_channel_layer(), events.conversation_group(conversation.id)
    await layer.group_discard(group, channel)
    await asyncio.sleep(0.5)  # about 25 deltas' worth
    await layer.group_add(group, channel)

    text, end, snapshots = await follow_exactly(tab, message_id, text)
    streamed = upstream.requests[0]["streamed_text"]
    assert text == streamed and end["type"] == "done" and snapshots == 0
    assert filled and max(filled) > 0, "the gap was not filled from the reply"
    assert (await stored(message_id)).content == streamed


async def test_a_tab_that_missed_the_end_of_a_reply_gets_a_fresh_snapshot(
    redis_server, alice, upstream, sockets, monkeypatch, caplog
):
    """Redis is down from mid-reply until after the reply ended and gave up announcing
    it: the tab would wait for a `done` that never comes. It asks the database instead."""
    monkeypatch.setattr(generation, "FINAL_WRITE_DELAYS", (0.1, 0.1))
    monkeypatch.setattr(delivery, "STALL_SECONDS", 1.0)
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='short fake:{"tokens": 60, "delay": 0.02}', client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab)

    redis_server.stop()
    await drain_replies()  # the reply ended, was saved, and could not be announced
    assert warnings_from(caplog, "conversations.chat.generation", f"the end of reply {message_id} could not be announced")
    redis_server.start()

    text, end, snapshots = await follow_exactly(tab, message_id, text)
    assert end is None and snapshots == 1
    streamed = upstream.requests[0]["streamed_text"]
    assert text == streamed == (await stored(message_id)).content


async def test_a_socket_that_cannot_reach_redis_is_told_to_try_again_later(
    redis_server, alice, upstream, sockets
):
    conversation = await database_sync_to_async(alice.conversation)()
    redis_server.stop()

    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]  # accepted, so the page can read the close code
    closed = await wait_for_close(tab)
    assert closed["code"] == TRY_AGAIN_LATER and closed["reason"]

    anonymous = sockets(None, conversation.id)
    assert (await anonymous.connect()) == (False, 1000)  # still refused at the handshake

    redis_server.start()
    again = await open_tab(sockets, alice, conversation)
    await again.send(type="send", content="hello again", client_id=str(uuid.uuid4()))
    assert (await follow_reply(again.recv)).end["status"] == "complete"


async def test_a_message_sent_while_redis_is_down_is_stored_and_answered(
    redis_server, alice, upstream, sockets
):
    """The sending tab is closed with 1013 (nobody could be told); the reply runs
    anyway, and a tab that stayed open starts again from a snapshot once Redis is back."""
    conversation = await database_sync_to_async(alice.conversation)()
    sender = await open_tab(sockets, alice, conversation)
    watcher = await open_tab(sockets, alice, conversation)
    redis_server.stop()

    await sender.send(type="send", content=f"while down {LONG}", client_id=str(uuid.uuid4()))
    assert (await wait_for_close(sender))["code"] == TRY_AGAIN_LATER
    await asyncio.sleep(1)
    redis_server.start()

    # The watcher heard nothing of the new turn: the reply's deltas make it start again.
    snapshot = await watcher.until(lambda f: f["type"] == "snapshot", timeout=30)
    active = snapshot["active"]
    assert active is not None and [m["role"] for m in snapshot["messages"]] == ["user", "assistant"]
    assert snapshot["messages"][0]["content"] == f"while down {LONG}"
    text, end, _ = await follow_exactly(watcher, active["id"], active["content"])

    await drain_replies()
    streamed = upstream.requests[0]["streamed_text"]
    row = await stored(active["id"])
    assert row.status == "complete" and row.content == streamed == text
    assert end is None or end["status"] == "complete"
    back = await open_tab(sockets, alice, conversation)
    assert back.frames[0]["messages"][-1]["content"] == streamed


# Postgres


async def test_a_reply_survives_its_database_connections_being_terminated(alice, upstream, sockets, postgres):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=f"cut {LONG}", client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab, beyond=100)

    terminated = []

    async def keep_terminating():
        while True:
            # The worker threads' connections, mid-flush or between flushes.
            terminated.append(postgres.terminate())
            await asyncio.sleep(0.15)

    killer = asyncio.create_task(keep_terminating())
    try:
        text, end, _ = await follow_exactly(tab, message_id, text)
    finally:
        killer.cancel()
    assert sum(terminated) >= 5  # the reply's connections were cut again and again
    streamed = upstream.requests[0]["streamed_text"]
    assert end["type"] == "done" and end["status"] == "complete"
    assert text == streamed
    row = await stored(message_id)
    assert row.status == "complete" and row.content == streamed and row.lease_expires_at is None


async def test_a_reply_survives_postgres_refusing_connections_for_a_while(
    alice, upstream, sockets, postgres, caplog
):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=f"refused {LONG}", client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab, beyond=100)

    postgres.refuse()
    await asyncio.sleep(2)  # ten flush intervals, less than the lease
    postgres.allow()

    text, end, _ = await follow_exactly(tab, message_id, text)
    streamed = upstream.requests[0]["streamed_text"]
    assert end["type"] == "done" and end["status"] == "complete" and text == streamed
    row = await stored(message_id)
    assert row.status == "complete" and row.content == streamed
    # The flushes that failed were logged once, and the recovery once (one writer saves every reply).
    assert len(warnings_from(caplog, "conversations.chat.progress", "saving the progress of streaming replies failed")) == 1
    assert warnings_from(caplog, "conversations.chat.progress", "saving the progress of streaming replies works again")


async def test_a_reply_that_cannot_be_saved_ends_with_an_error_and_becomes_interrupted(
    alice, upstream, sockets, postgres, monkeypatch, caplog
):
    monkeypatch.setattr(generation, "FINAL_WRITE_DELAYS", (0.1, 0.1))
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='doomed fake:{"tokens": 150, "delay": 0.02}', client_id=str(uuid.uuid4()))
    message_id, text = await first_delta(tab, beyond=60)
    await asyncio.sleep(0.5)  # a flush or two land first
    postgres.refuse()
    try:
        text, end, _ = await follow_exactly(tab, message_id, text)
        assert end["type"] == "error" and end["code"] == "interrupted" and end["message"]
        assert warnings_from(caplog, "conversations.chat.generation", f"reply {message_id} could not be saved")
    finally:
        postgres.allow()
    streamed = upstream.requests[0]["streamed_text"]
    assert text == streamed  # the tab saw it all; the database has what was flushed

    # Once its lease has passed, the reply is interrupted with the text saved before, and
    # the conversation takes the next question.
    for _ in range(100):
        later = await reconnect(sockets, alice, conversation)  # the pool may still be reconnecting
        reply = later.frames[0]["messages"][-1]
        if reply["status"] == "interrupted":
            break
        assert reply["status"] == "streaming"
        await later.close()
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the reply was never marked interrupted")
    assert reply["error"]["code"] == "interrupted"
    assert reply["content"] and streamed.startswith(reply["content"]) and len(reply["content"]) < len(streamed)
    await later.send(type="send", content="next", client_id=str(uuid.uuid4()))
    assert (await follow_reply(later.recv)).end["status"] == "complete"


async def test_a_socket_that_cannot_reach_postgres_is_told_to_try_again_later(alice, upstream, sockets, postgres):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)

    postgres.refuse()
    try:
        # An open socket acting, and a new one connecting (its session cannot be read).
        await tab.send(type="send", content="while the database is down", client_id=str(uuid.uuid4()))
        assert await wait_for_close(tab) == {
            "type": "websocket.close", "code": 1013, "reason": "The server cannot reach its database; reconnect shortly."
        }
        late = sockets(alice, conversation.id)
        connected, _ = await late.connect()
        assert connected
        assert (await wait_for_close(late))["code"] == 1013
    finally:
        postgres.allow()

    # Back: the page reconnects and the conversation works; nothing half-stored.
    again = await reconnect(sockets, alice, conversation)
    await again.send(type="send", content="after the outage", client_id=str(uuid.uuid4()))
    reply = await follow_reply(again.recv)
    assert reply.end["status"] == "complete"
    contents = [m.content for m in await database_sync_to_async(list)(conversation.messages.order_by("created_at"))]
    assert contents[0] == "after the outage" and len(contents) == 2


async def test_pages_and_the_api_answer_503_while_postgres_is_down(alice, app_env, postgres):
    process = DaphneProcess(app_env)
    cookies = {django_settings.SESSION_COOKIE_NAME: alice.session}
    try:
        async with httpx.AsyncClient(base_url=process.origin, cookies=cookies, timeout=20) as client:
            assert (await client.get("/api/conversations/")).status_code == 200
            postgres.refuse()
            try:
                api = await client.get("/api/conversations/")
                page = await client.get("/")
            finally:
                postgres.allow()
            back = await client.get("/api/conversations/")
    finally:
        process.stop()
    assert api.status_code == 503 and api.headers["Retry-After"] == "5"
    assert api.json() == {"error": {"code": "unavailable", "message": "The server cannot reach its database; try again shortly."}}
    assert page.status_code == 503 and "cannot reach its database" in page.text
    assert back.status_code == 200
