"""A client that never reads its socket: the server drops it, its memory stays
bounded, and the tab that does read gets every character of the reply.

A real app process started through chatsite.server, as in production (the
bound lives there, under the ASGI app: see that module). The unread sockets
are raw: they do the websocket handshake by hand, with a tiny receive buffer,
and never call recv again. The process gets a 16 KiB kernel send buffer per
socket (DaphneProcess(sndbuf=...)), as on a real network: on loopback Linux
would give each socket about 4 MiB, which would swallow the whole reply.

Memory is VmRSS of that process, read before and after one long reply, and
compared with what the unread sockets would have queued without the bound.
Measured here (48 sockets, a 1.1 MB reply, so 52.8 MB to queue): with the
bound the process grew about 13.5 MB (each dropped socket held at most twisted's
64 KiB, the 64 KiB limit and a frame or two before it was dropped, plus the reply's
own growth); with WS_SEND_BUFFER_BYTES raised to 10**9 it grew 57.6 MB and kept
all 48 sockets open. To see this test fail without the bound:
    SLOW_READER_SEND_BUFFER=1000000000 pytest tests/test_slow_reader.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket as socketlib
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from conversations.models import Message
from tests.conftest import DaphneProcess, daphne_tab, follow_reply

pytestmark = pytest.mark.django_db(transaction=True)

# WS_SEND_BUFFER_BYTES of the process under test: the smallest allowed.
SEND_BUFFER = int(os.environ.get("SLOW_READER_SEND_BUFFER", 64 * 1024))
UNREAD_SOCKETS = 48
# About 1.1 million characters, streamed unpaced: several times what a dropped socket
# may hold, so the bound shows in RSS above the reply's own allocations.
LONG = 'long fake:{"tokens": 150000}'
SHORT = 'short fake:{"tokens": 10000}'


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_unread_socket(process: DaphneProcess, member, conversation) -> socketlib.socket:
    """A websocket that completes its handshake and then never reads another byte."""
    sock = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    # Before connect, so the window it advertises is tiny from the start.
    sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", process.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/conversations/{conversation.id}/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{process.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {process.origin}\r\n"
            f"Cookie: {settings.SESSION_COOKIE_NAME}={member.session}\r\n\r\n"
        ).encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # a byte at a time: not one byte of a frame is read
        byte = sock.recv(1)
        assert byte, f"the server closed the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def still_open(socks: list[socketlib.socket], wait: float = 10.0) -> int:
    """Read each socket to its end (EOF or reset): how many the server still held open after `wait`."""
    left = set(socks)
    deadline = time.monotonic() + wait
    while left and (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(list(left), [], [], remaining)
        for sock in readable:
            try:
                if sock.recv(65536):
                    continue
            except ConnectionResetError:
                pass
            left.discard(sock)
    return len(left)


async def ask(ws, content: str):
    """Send a message and follow its reply exactly; also count the bytes of the frames received."""
    assert json.loads(await ws.recv())["type"] == "snapshot"
    received = 0

    async def recv():
        nonlocal received
        raw = await asyncio.wait_for(ws.recv(), 60)
        received += len(raw.encode())
        return json.loads(raw)

    await ws.send(json.dumps({"type": "send", "content": content, "client_id": str(uuid.uuid4())}))
    return await follow_reply(recv), received


@sync_to_async
def reply_row(message_id):
    return Message.objects.get(pk=message_id)


async def test_sockets_that_never_read_are_dropped_and_the_reading_tab_gets_everything(app_env, alice, upstream):
    env = dict(app_env, WS_SEND_BUFFER_BYTES=str(SEND_BUFFER), MAX_REPLY_CHARS="2000000")
    process = DaphneProcess(env, sndbuf=16 * 1024)
    pid = process.proc.pid
    unread: list[socketlib.socket] = []
    try:
        # A first, short reply: the process makes its first-time allocations (imports,
        # connections) here, so the measurement below is of the long reply and the sockets.
        async with daphne_tab(process, alice, await sync_to_async(alice.conversation)()) as ws:
            await ask(ws, SHORT)

        conversation = await sync_to_async(alice.conversation)()
        async with daphne_tab(process, alice, conversation) as ws:
            for _ in range(UNREAD_SOCKETS):
                unread.append(await asyncio.to_thread(open_unread_socket, process, alice, conversation))
            before = rss_bytes(pid)
            (reply, frame_bytes) = await ask(ws, LONG)
            growth = rss_bytes(pid) - before
        held_open = await asyncio.to_thread(still_open, unread)
    finally:
        for sock in unread:
            sock.close()
        process.stop()
    dropped = [line for line in process.log_lines if "bytes unread" in line]

    row = await reply_row(reply.message_id)
    assert reply.end["status"] == "complete"
    assert reply.text == row.content == upstream.requests[-1]["streamed_text"]
    assert len(reply.text) > 1_000_000
    assert row.status == "complete"
    assert held_open == 0, f"the server kept {held_open} of {UNREAD_SOCKETS} sockets that read nothing"
    assert len(dropped) == UNREAD_SOCKETS, dropped  # one warning line per socket
    queued = UNREAD_SOCKETS * frame_bytes  # what the unread sockets would have held without the bound
    assert growth < queued / 2, f"the process grew {growth} bytes; without the bound it would queue {queued}"
