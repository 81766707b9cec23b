"""The upstream client's connection pool (upstream/pool.py), against a real HTTP server:
connections are reused, bounded, handed to waiting requests in turn, never leaked by a
request that gives up, never reused once the server closed them, and still guarded."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from conversations.upstream import netguard, pool
from tests.fake_upstream import FakeUpstream

KEY = "sk-test-pool"


@pytest.fixture(scope="module")
def server():
    with FakeUpstream(api_key=KEY) as up:
        yield up


@pytest.fixture(scope="module")
def other_server():
    """A second origin."""
    with FakeUpstream(api_key=KEY) as up:
        yield up


@pytest.fixture(autouse=True)
def clean(server, other_server):
    server.reset()
    other_server.reset()
    yield
    server.drop_connections()
    other_server.drop_connections()


def make_client(*, max_connections=10, keepalive=10, expiry=60.0, pool_timeout=10.0) -> httpx.AsyncClient:
    """A client on the upstream transport, as upstream/client.py builds it, with these limits."""
    transport = netguard.GuardedTransport(limits=httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=keepalive, keepalive_expiry=expiry))
    assert isinstance(transport._pool, pool.LinearPool)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, pool=pool_timeout),
                             headers={"Authorization": f"Bearer {KEY}"})


def the_pool(client: httpx.AsyncClient) -> pool.LinearPool:
    return client._transport._pool


def body(text: str, **directive) -> dict:
    if directive:
        text += f" fake:{json.dumps(directive)}"
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": True}


async def ask(client, up: FakeUpstream, text: str, **directive) -> str:
    """One whole streamed request; returns the body."""
    async with client.stream("POST", f"{up.base_url}/chat/completions", json=body(text, **directive)) as response:
        assert response.status_code == 200
        return (await response.aread()).decode()


async def until(predicate, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def peers(up: FakeUpstream, texts=None) -> list:
    return [r["peer"] for r in up.requests if texts is None or r["body"]["messages"][0]["content"] in texts]


def waiting(client) -> int:
    return sum(not waiter.granted.done() for waiter in the_pool(client)._waiters)


class Held:
    """A streamed request that keeps its connection until released."""

    def __init__(self, client, up: FakeUpstream, text: str):
        self.text = text
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(client, up))

    async def _run(self, client, up):
        async with client.stream("POST", f"{up.base_url}/chat/completions", json=body(self.text)) as response:
            self.started.set()
            await self.release.wait()
            return (await response.aread()).decode()


async def test_sequential_requests_reuse_one_connection(server):
    async with make_client() as client:
        for n in range(3):
            assert "[DONE]" in await ask(client, server, f"question {n}")
        assert len(set(peers(server))) == 1 and len(server.requests) == 3
        assert len(the_pool(client).connections) == 1


async def test_streams_beyond_the_limit_wait_their_turn_then_proceed(server):
    async with make_client(max_connections=3) as client:
        held = []
        for n in range(5):  # one at a time, so the queue's order is the order of asking
            held.append(Held(client, server, f"stream {n}"))
            await until(lambda n=n: held[-1].started.is_set() or waiting(client) == n - 2, f"stream {n} started or queued")
        assert [h.started.is_set() for h in held] == [True, True, True, False, False]
        assert len(server.requests) == 3 and len(the_pool(client).connections) == 3 and waiting(client) == 2

        held[1].release.set()  # the first connection back goes to the first in the queue
        await until(lambda: held[3].started.is_set(), "the first waiter got a connection")
        assert not held[4].started.is_set() and waiting(client) == 1
        held[0].release.set()
        await until(lambda: held[4].started.is_set(), "the second waiter got a connection")
        for h in held:
            h.release.set()
        texts = await asyncio.gather(*(h.task for h in held))
        assert all("[DONE]" in text for text in texts)
        assert len(set(peers(server))) == 3  # the waiters were served on the connections that came back
        assert peers(server, ["stream 3"]) == peers(server, ["stream 1"])
        assert peers(server, ["stream 4"]) == peers(server, ["stream 0"])
        assert len(the_pool(client).connections) == 3 and waiting(client) == 0


async def test_a_cancelled_waiting_request_gives_its_place_to_the_next(server):
    async with make_client(max_connections=1) as client:
        first = Held(client, server, "first")
        await first.started.wait()
        cancelled = Held(client, server, "cancelled")
        await until(lambda: waiting(client) == 1, "a request waits")
        last = Held(client, server, "last")
        await until(lambda: waiting(client) == 2, "two requests wait")
        cancelled.task.cancel()
        await asyncio.wait([cancelled.task])
        assert waiting(client) == 1
        first.release.set()
        last.release.set()
        assert "[DONE]" in await last.task
        assert [r["body"]["messages"][0]["content"] for r in server.requests] == ["first", "last"]
        assert len(set(peers(server))) == 1


async def test_a_request_cancelled_as_it_is_handed_a_connection_passes_it_on(server):
    async with make_client(max_connections=1, pool_timeout=5.0) as client:
        request = client.build_request("POST", f"{server.base_url}/chat/completions", json=body("first"))
        response = await client.send(request, stream=True)
        async for _ in response.stream:  # the whole body, without closing the response (aread would)
            pass
        unlucky = asyncio.create_task(ask(client, server, "unlucky"))
        await until(lambda: waiting(client) == 1, "a request waits")
        await response.aclose()  # the connection is handed to the waiting request...
        assert waiting(client) == 0
        unlucky.cancel()  # ...which is cancelled before it runs again: it must pass the connection on
        await asyncio.wait([unlucky])
        assert unlucky.cancelled()
        assert "[DONE]" in await ask(client, server, "after")  # the one place is free: no PoolTimeout
        assert [r["body"]["messages"][0]["content"] for r in server.requests] == ["first", "after"]
        assert len(the_pool(client).connections) == 1 and len(set(peers(server))) == 1


async def test_a_request_that_waits_too_long_gets_a_pool_timeout_and_leaves_its_place(server):
    async with make_client(max_connections=1, pool_timeout=0.2) as client:
        first = Held(client, server, "first")
        await first.started.wait()
        with pytest.raises(httpx.PoolTimeout):
            await asyncio.wait_for(ask(client, server, "too late"), 10)  # not forever, should it never end
        first.release.set()
        await first.task
        assert "[DONE]" in await ask(client, server, "next")
        assert waiting(client) == 0 and len(the_pool(client).connections) == 1


async def test_a_connection_the_server_closed_is_not_reused(server):
    async with make_client() as client:
        await ask(client, server, "before")
        [old] = the_pool(client).connections
        server.drop_connections()  # as a server ending an idle keep-alive does
        assert "[DONE]" in await ask(client, server, "after")
        before, after = peers(server)
        assert before != after
        assert old.is_closed() and old not in the_pool(client).connections


async def test_expired_idle_connections_are_closed(server, other_server, monkeypatch):
    monkeypatch.setattr(pool, "SWEEP_SECONDS", 0.0)  # sweep on every request, not once a second
    async with make_client(expiry=0.05) as client:
        await ask(client, other_server, "to the other server")
        [idle] = the_pool(client).connections
        await until(idle.has_expired, "the keep-alive time passed")
        await ask(client, server, "to this server")  # not reusing `idle`: only the sweep can close it
        assert idle.is_closed() and idle not in the_pool(client).connections
        assert len(the_pool(client).connections) == 1


async def test_idle_connections_beyond_the_keepalive_limit_are_closed(server):
    async with make_client(max_connections=10, keepalive=1) as client:
        held = [Held(client, server, f"burst {n}") for n in range(3)]
        for h in held:
            await h.started.wait()
        opened = the_pool(client).connections
        assert len(opened) == 3
        for h in held:
            h.release.set()
        await asyncio.gather(*(h.task for h in held))
        assert len(the_pool(client).connections) == 1
        assert sum(connection.is_closed() for connection in opened) == 2
        assert "[DONE]" in await ask(client, server, "again")
        assert len(the_pool(client).connections) == 1


async def test_the_guard_still_refuses_private_addresses_through_the_pool(server, settings):
    settings.UPSTREAM_ALLOWED_HOSTS = []
    settings.OPENAI_BASE_URL = "https://api.openai.com/v1"
    async with make_client(max_connections=1, pool_timeout=2.0) as client:
        for _ in range(2):  # a refused connection gives its place back: no PoolTimeout the second time
            with pytest.raises(netguard.BlockedConnection):
                await ask(client, server, "to loopback")
        assert server.requests == [] and the_pool(client).connections == []
