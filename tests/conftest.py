"""Shared fixtures: members with real sessions, sockets on the real ASGI app,
the fake upstream as a real HTTP server, and daphne processes for the
tests that need more than one."""

from __future__ import annotations

import asyncio
import json
import os
import socket as socketlib
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from websockets.asyncio.client import connect as websocket_connect

from chatsite.asgi import application
from conversations.chat import broadcast, generation, titles
from conversations.chat import service as chat
from conversations.models import Conversation, memo
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, whose worker-thread connections are ended before it is dropped."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def fake_upstream_server():
    with FakeUpstream(api_key=os.environ["OPENAI_API_KEY"]) as server:
        yield server


@pytest.fixture
def upstream(fake_upstream_server, settings):
    """The fake model server, emptied, and the app pointed at it."""
    fake_upstream_server.reset()
    settings.OPENAI_BASE_URL = fake_upstream_server.base_url
    return fake_upstream_server


@dataclass
class Member:
    user: object
    session: str
    client: Client

    def conversation(self, **fields) -> Conversation:
        fields.setdefault("model", "fake-model")
        return Conversation.objects.create(owner=self.user, **fields)


@pytest.fixture
def make_member(transactional_db):
    def make(name: str, **extra) -> Member:
        user = get_user_model().objects.create_user(name, password=f"pw-{name}-123", **extra)
        client = Client()
        client.force_login(user)
        return Member(user, client.cookies[django_settings.SESSION_COOKIE_NAME].value, client)

    return make


@pytest.fixture
def alice(make_member):
    return make_member("alice")


@pytest.fixture
def bob(make_member):
    return make_member("bob")


class Socket:
    """A browser tab on the real ASGI app: frames in, exact replies assembled."""

    def __init__(self, member: Member | None, conversation_id, origin: str | None = "http://testserver",
                 path: str | None = None):
        """`path`: another socket than the conversation's (the member's own: /ws/member/)."""
        headers = [(b"host", b"testserver")]
        if origin:
            headers.append((b"origin", origin.encode()))
        if member:
            headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={member.session}".encode()))
        self.comm = WebsocketCommunicator(application, path or f"/ws/conversations/{conversation_id}/", headers)
        self.frames: list[dict] = []
        self.connected = False

    async def connect(self) -> tuple[bool, int | None]:
        connected, code = await self.comm.connect(timeout=10)
        self.connected = connected
        return connected, code

    async def send(self, **frame) -> None:
        await self.comm.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        # Straight to the app: the communicator's send_to refuses an empty text frame, a browser does not.
        await self.comm.send_input({"type": "websocket.receive", "text": text})

    async def recv(self, timeout: float = 15) -> dict:
        frame = json.loads(await self.comm.receive_from(timeout))
        self.frames.append(frame)
        return frame

    async def until(self, predicate, timeout: float = 20) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            frame = await self.recv(timeout=max(remaining, 0.01))
            if predicate(frame):
                return frame

    def heard_nothing_more(self) -> bool:
        """Nothing is waiting unread in this tab (for a tab that was closed: it left its groups)."""
        return self.comm.output_queue.empty()

    async def close(self) -> None:
        if self.connected:
            self.connected = False
            await self.comm.disconnect()


async def send_marker(member) -> dict:
    """A frame sent now through the member's group: every socket of the member gets it after
    whatever was published before it (one Redis subscription per process, first in first out)."""
    await broadcast.flush()  # what writes outside a socket announced goes first
    marker = {"type": "marker", "id": uuid.uuid4().hex}
    await get_channel_layer().group_send(broadcast.member_group(member.user.pk), broadcast.member_event(marker))
    return marker


async def assert_silent(tab: Socket, member) -> None:
    """Nothing reached the tab since its last frame read: the next frame it gets is a marker sent now.

    A proof, not a wait: a frame that would have come is published before the marker and
    reaches the tab first (no sleep that a slow machine could outrun)."""
    marker = await send_marker(member)
    frame = await tab.recv()
    assert frame == marker, f"the tab heard {frame} before the marker"


async def open_tab(sockets, member, conversation) -> Socket:
    """A connected tab on the ASGI app, past its first snapshot."""
    tab = sockets(member, conversation.id)
    connected, _ = await tab.connect()
    assert connected
    snapshot = await tab.recv()
    assert snapshot["type"] == "snapshot"
    return tab


def daphne_tab(process, member, conversation):
    """A browser tab on a daphne process (websockets client): same origin, the member's session cookie."""
    return websocket_connect(
        process.ws_url(conversation.id),
        origin=process.origin,
        additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={member.session}"},
        open_timeout=10,
        max_size=None,
    )


@dataclass
class Reply:
    message_id: str
    text: str
    end: dict  # the done or error frame


async def follow_reply(recv, *, text: str = "", message_id: str | None = None) -> Reply:
    """Assemble a streaming reply from its frames, insisting on exact offsets.

    `text` is what a snapshot already showed; every delta must start exactly
    where the text so far ends: no gap and no double.
    """
    parts = [text]
    length = len(text)
    while True:
        frame = await recv()
        kind = frame["type"]
        if kind == "message" and frame["message"]["status"] == "streaming" and message_id is None:
            message_id = frame["message"]["id"]
        elif kind == "delta" and frame["message_id"] == message_id:
            assert frame["offset"] == length, f"delta at {frame['offset']}, expected {length}"
            parts.append(frame["content"])
            length += len(frame["content"])
        elif kind in ("done", "error") and frame.get("message_id") == message_id and message_id:
            return Reply(message_id, "".join(parts), frame)
        elif kind == "error" and not frame.get("message_id"):
            raise AssertionError(f"unexpected error frame {frame}")


@pytest.fixture
async def sockets():
    """Open tabs, closed at the end; then every reply still running is awaited."""
    opened: list[Socket] = []

    def open_socket(member, conversation_id, **kwargs) -> Socket:
        tab = Socket(member, conversation_id, **kwargs)
        opened.append(tab)
        return tab

    yield open_socket
    for tab in opened:
        await tab.close()
    await drain_replies()


@pytest.fixture(autouse=True)
def fresh_memos():
    """Each test reads providers and quotas afresh: flushing tables between tests sends no signals."""
    memo.clear_all()
    yield
    memo.clear_all()


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    """A channel layer per test: channels-redis binds its locks to one event loop."""
    channel_layers.backends.clear()
    yield
    for layer in list(channel_layers.backends.values()):
        await layer.flush()  # the Pub/Sub layer also closes its connections here
    channel_layers.backends.clear()


async def drain_replies(timeout: float = 20) -> None:
    turns = chat.pending_turns()  # a turn whose socket went away still starts its reply
    if turns:
        await asyncio.wait(turns, timeout=timeout)
    tasks = generation.running_tasks()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        assert not pending, "a reply was still running at the end of the test"
    naming = titles.pending()  # a first reply's title request, started as the reply ended
    if naming:
        await asyncio.wait(naming, timeout=timeout)


def free_port() -> int:
    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaphneProcess:
    """The app as a real daphne process sharing this test's Postgres and Redis,
    started as in production: through chatsite.server, daphne with the send bound."""

    def __init__(self, env: dict, *, sndbuf: int | None = None, port: int | None = None):
        """`sndbuf`: the kernel send buffer of its sockets. Loopback's 64 KiB segments let Linux
        give each socket about 4 MiB, where a real network starts near 16 KiB; a listening
        socket made here with SO_SNDBUF (which accepted sockets inherit) goes to daphne's --fd.
        `port`: a given one (a restart on the port a browser's page already uses)."""
        listener = None
        if sndbuf is None:
            self.port = port or free_port()
            where, pass_fds = ["-b", "127.0.0.1", "-p", str(self.port)], ()
        else:
            listener = socketlib.socket()
            listener.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_SNDBUF, sndbuf)
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            where, pass_fds = ["--fd", str(listener.fileno())], (listener.fileno(),)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatsite.server", *where, "chatsite.asgi:application"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=pass_fds,
            )
        finally:
            if listener is not None:
                listener.close()  # the process has its own copy
        self.log_lines: list[str] = []
        self.logged = threading.Condition()
        self.log_reader = threading.Thread(target=self._read_log, daemon=True)
        self.log_reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"daphne exited: {''.join(self.log_lines)[-2000:]}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("daphne did not start")

    def _read_log(self) -> None:
        """Keep the process's stderr read (a full pipe would stall it) and searchable."""
        for raw in self.proc.stderr:
            with self.logged:
                self.log_lines.append(raw.decode(errors="replace"))
                self.logged.notify_all()

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """The first line of the process's log that contains `text`, waiting for it."""
        with self.logged:
            found = self.logged.wait_for(lambda: next((line for line in self.log_lines if text in line), None), timeout)
        if found is None:
            raise AssertionError(f"the process never logged {text!r}: {''.join(self.log_lines)[-2000:]}")
        return found

    def _answers(self) -> bool:
        """An HTTP answer, not just a connection: a listening socket made here accepts before daphne runs."""
        try:
            with socketlib.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                probe.sendall(b"HEAD /accounts/login/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return probe.recv(16).startswith(b"HTTP/")
        except OSError:
            return False

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, conversation_id) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/conversations/{conversation_id}/"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_reader.join(timeout=5)  # every line it wrote is in log_lines
        self.proc.stderr.close()


@pytest.fixture
def app_env(transactional_db, upstream):
    """Environment for app processes: this test's database, Redis prefix and upstream."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        OPENAI_BASE_URL=upstream.base_url,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def daphne_pair(app_env):
    """Two app processes, as behind a load balancer."""
    started = [DaphneProcess(app_env), DaphneProcess(app_env)]
    yield started
    for process in started:
        process.stop()


# Staff review (tests/test_admin_*.py): staff with and without the content permission.

@pytest.fixture
def make_staff(make_member):
    """A staff member with a real session; `perms`: codenames of the conversations app to grant."""
    from django.contrib.auth.models import Permission

    def make(name: str, *, superuser: bool = False, perms: tuple[str, ...] = ()) -> Member:
        staff = make_member(name, is_staff=True, is_superuser=superuser)
        for codename in perms:
            staff.user.user_permissions.add(
                Permission.objects.get(content_type__app_label="conversations", codename=codename))
        return staff

    return make


@pytest.fixture
def reviewer(make_staff):
    """A superuser: every permission, the content one included."""
    return make_staff("reviewer", superuser=True)
