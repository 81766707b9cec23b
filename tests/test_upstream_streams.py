"""The upstream's connections read with asyncio's timeout (upstream/streams.py) and mean what
httpcore's reads mean: bytes, an empty read at the peer's end, ReadTimeout, ReadError."""

from __future__ import annotations

import asyncio
import ipaddress

import httpcore
import httpx
import pytest

from conversations.upstream import netguard
from conversations.upstream.streams import QuickReadStream

LOOPBACK = netguard.Policy(networks=((ipaddress.ip_network("127.0.0.1/32"), None),))


@pytest.fixture
async def server():
    """A loopback server that runs, per connection, whatever the test put in `server.handle`."""

    class Server:
        handle = None

    async def serve(reader, writer):
        try:
            await Server.handle(reader, writer)
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    Server.port = listening.sockets[0].getsockname()[1]
    yield Server
    listening.close()
    await listening.wait_closed()


def backend() -> netguard.GuardedBackend:
    return netguard.GuardedBackend(policy=lambda: LOOPBACK)


async def test_every_guarded_connection_reads_without_an_anyio_cancel_scope(server):
    async def greet(reader, writer):
        writer.write(b"hello")
        await writer.drain()
        await asyncio.sleep(0.5)

    server.handle = greet
    stream = await backend().connect_tcp("127.0.0.1", server.port, timeout=5)
    try:
        assert isinstance(stream, QuickReadStream)
        assert stream._socket is not None  # httpcore's anyio stream was recognised: the quick path
        assert await stream.read(100, timeout=5) == b"hello"
    finally:
        await stream.aclose()


async def test_a_silent_server_is_a_read_timeout_and_a_closed_one_an_empty_read(server):
    ended = asyncio.Event()

    async def silent_then_gone(reader, writer):
        await ended.wait()

    server.handle = silent_then_gone
    stream = await backend().connect_tcp("127.0.0.1", server.port, timeout=5)
    try:
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.2)
        ended.set()  # the server closes the connection
        assert await stream.read(100, timeout=5) == b""
    finally:
        await stream.aclose()
    with pytest.raises(httpcore.ReadError):
        await stream.read(100, timeout=5)  # our own end closed it


async def test_a_stream_that_stalls_mid_reply_times_out_through_httpx(server):
    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\ndata:\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    server.handle = stall
    transport = netguard.GuardedTransport(limits=httpx.Limits(max_connections=10), backend=backend())
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, read=0.3)) as client:
        async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            chunks = response.aiter_raw()
            assert await chunks.__anext__() == b"data:"
            with pytest.raises(httpx.ReadTimeout):
                await chunks.__anext__()
