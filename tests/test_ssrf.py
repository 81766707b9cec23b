"""SSRF defence: model server URLs and image URLs cannot reach loopback, private,
link-local or other non-public addresses, in any spelling, nor be redirected
there, unless the operator allows the host (conversations/netguard.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import uuid

import httpcore
import httpx
import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError

from conversations.chat.errors import describe
from conversations.models import Message
from conversations.realtime.frames import FrameError, clean_content
from conversations.upstream import netguard
from conversations.upstream.catalogue import list_models
from conversations.upstream.client import Endpoint, UpstreamError, stream_chat
from tests.conftest import follow_reply
from tests.test_settings import start as start_app

KEY = "sk-test-SECRET-upstream-key-0123456789"
ELSEWHERE = "https://api.openai.com/v1"  # an OPENAI_BASE_URL that is not the fake server


@pytest.fixture
def nothing_allowed(settings):
    """The operator allowed no host (tests/testenv.py allows 127.0.0.1 for the rest of the suite)."""
    settings.UPSTREAM_ALLOWED_HOSTS = []


@pytest.fixture
def no_exceptions(settings, nothing_allowed):
    """Nothing allowed, and OPENAI_BASE_URL (implicitly allowed) somewhere else."""
    settings.OPENAI_BASE_URL = ELSEWHERE


class FakeDNS:
    """Names resolve to what the test says; the machine's own resolver is not asked."""

    def __init__(self):
        self.answers: dict = {}
        self.asked: list[str] = []

    def __setitem__(self, name, addresses):
        self.answers[name] = addresses

    def lookup(self, host) -> list:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        answer = self.answers[host]
        return [ipaddress.ip_address(a) for a in (answer() if callable(answer) else answer)]


@pytest.fixture
def fake_dns(monkeypatch):
    dns = FakeDNS()

    async def resolve(host, port):
        return dns.lookup(host)

    monkeypatch.setattr(netguard, "_resolve", resolve)
    monkeypatch.setattr(netguard, "_resolve_blocking", lambda host, port: dns.lookup(host))
    return dns


@pytest.fixture
def connects(monkeypatch):
    """Every TCP connection actually opened through the guard: (host, port)."""
    opened: list[tuple[str, int]] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self, host, port, **kwargs):
        opened.append((host, port))
        return await real(self, host, port, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return opened


def body_for(text: str) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": True,
            "stream_options": {"include_usage": True}}


async def run(base_url: str, directive: dict | None = None) -> tuple[str, UpstreamError | None]:
    text = "hello" + (f" fake:{json.dumps(directive)}" if directive else "")
    received = []
    try:
        async with contextlib.aclosing(stream_chat(Endpoint(base_url, KEY), body_for(text))) as stream:
            async for chunk in stream:
                received.append(chunk.content)
    except UpstreamError as error:
        return "".join(received), error
    return "".join(received), None


# --------------------------------------------------------------------------- the address policy

ADDRESSES = [
    ("127.0.0.1", False), ("127.255.0.9", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("172.31.255.254", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("255.255.255.255", False), ("224.0.0.1", False), ("198.18.0.1", False),
    ("240.0.0.1", False), ("192.0.2.1", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fc00::1", False),
    ("fd12:3456::1", False), ("fec0::1", False), ("ff02::1", False), ("2001:db8::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::ffff:10.0.0.1", False),
    ("::127.0.0.1", False),  # deprecated IPv4-compatible
    ("2002:7f00:0001::", False), ("2002:a9fe:a9fe::1", False),  # 6to4 of loopback, of metadata
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b:1::1", False),  # NAT64
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700::1111", True), ("2001:4860:4860::8888", True),
    ("::ffff:8.8.8.8", True), ("64:ff9b::808:808", True), ("2002:808:808::1", True),
]


@pytest.mark.parametrize("address,public", ADDRESSES, ids=[a for a, _ in ADDRESSES])
def test_only_globally_reachable_unicast_addresses_are_public(address, public):
    assert netguard.is_public_address(address) is public


BLOCKED_URLS = [
    "http://127.0.0.1/x.png",
    "http://127.1/x.png",
    "http://2130706433/x.png",  # decimal
    "http://017700000001/x.png",  # octal
    "http://0x7f.1/x.png",  # hex shorthand
    "http://0x7f000001/x.png",
    "http://0/x.png",
    "http://[::1]/x.png",
    "http://[::ffff:127.0.0.1]/x.png",
    "http://[::ffff:7f00:1]/x.png",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://[fe80::1%25eth0]/x.png",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1:8080/x.png",
    "http://192.168.1.1/x.png",
    "http://100.64.0.1/x.png",
    "https://[fd00::1]/x.png",
    "http://localhost/x.png",
    "http://LOCALHOST./x.png",
    "http://images.localhost/x.png",
    "http://metadata/computeMetadata/v1/",  # one label: a local name
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/x.png",
    "http://router.home.arpa/x.png",
    "http://１２７.０.０.１/x.png",  # full-width digits, as IDNA reads them
    "http://127。0。0。1/x.png",  # ideographic full stops
    "http://08.1.1.1/x.png",  # ends in a number but is no address
    "http://example.com\\@127.0.0.1/x.png",  # parsers disagree on the backslash
    "http://127.0.0.1\\@example.com/x.png",
    "http://user:pw@example.com/x.png",
    "http://exa mple.com/x.png",
    "http:///x.png",
    "http://[::1/x.png",
    "http://example.com:99999/x.png",
    "ftp://example.com/x.png",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_urls_to_local_addresses_are_refused_without_dns(url, no_exceptions, fake_dns):
    with pytest.raises(netguard.Blocked):
        netguard.check_url_static(url, netguard.image_policy())
    assert fake_dns.asked == []


@pytest.mark.parametrize("url", [
    "https://example.com/cat.png", "http://8.8.8.8/x.png", "https://[2606:4700::1111]/x.png",
    "https://images.example.org:8443/a/b.png?size=2#x", "https://example.com/my cat.png",
])
def test_public_urls_pass_the_static_check(url, no_exceptions):
    netguard.check_url_static(url, netguard.image_policy())


def test_the_refusal_says_what_and_how_to_allow_it(no_exceptions):
    with pytest.raises(netguard.Blocked) as caught:
        netguard.check_url_static("http://2130706433/", netguard.image_policy())
    assert "127.0.0.1" in caught.value.message and "loopback" in caught.value.message
    assert "UPSTREAM_ALLOWED_HOSTS" in caught.value.message


# --------------------------------------------------------------------------- the operator's list


@pytest.mark.parametrize("entry,kind,value,port", [
    ("ollama.lan", "name", "ollama.lan", None),
    ("Ollama.LAN.", "name", "ollama.lan", None),
    ("ollama:11434", "name", "ollama", 11434),
    ("127.0.0.1", "network", ipaddress.ip_network("127.0.0.1/32"), None),
    ("127.0.0.1:8000", "network", ipaddress.ip_network("127.0.0.1/32"), 8000),
    ("2130706433", "network", ipaddress.ip_network("127.0.0.1/32"), None),
    ("::1", "network", ipaddress.ip_network("::1/128"), None),
    ("[::1]:8000", "network", ipaddress.ip_network("::1/128"), 8000),
    ("10.20.0.0/16", "network", ipaddress.ip_network("10.20.0.0/16"), None),
    ("fd00::/8", "network", ipaddress.ip_network("fd00::/8"), None),
])
def test_allowed_host_entries(entry, kind, value, port):
    assert netguard.parse_allowed_host(entry) == (kind, value, port)


@pytest.mark.parametrize("entry", ["http://ollama:11434", "10.0.0.0/33", "host:port", "host:0", "a b", "[::1",
                                   "user@host"])
def test_bad_allowed_host_entries_are_refused(entry):
    with pytest.raises(ValueError):
        netguard.parse_allowed_host(entry)


def test_a_bad_allowed_host_entry_stops_the_app_at_start():
    result = start_app(UPSTREAM_ALLOWED_HOSTS="127.0.0.1,http://ollama:11434")
    assert result.returncode != 0
    assert "UPSTREAM_ALLOWED_HOSTS: 'http://ollama:11434' is a URL" in result.stderr


def test_allowed_hosts_pass_and_their_ports_bind(settings):
    settings.OPENAI_BASE_URL = ELSEWHERE
    settings.UPSTREAM_ALLOWED_HOSTS = ["127.0.0.1:8000", "ollama", "10.20.0.0/16"]
    policy = netguard.image_policy()
    for url in ("http://127.0.0.1:8000/x.png", "http://[::ffff:127.0.0.1]:8000/x.png", "http://ollama/x.png",
                "http://ollama:11434/x.png", "http://10.20.3.4/x.png"):
        netguard.check_url_static(url, policy)
    for url in ("http://127.0.0.1:6379/x.png", "http://127.0.0.2:8000/x.png", "http://localhost:8000/x.png",
                "http://10.21.0.1/x.png"):
        with pytest.raises(netguard.Blocked):
            netguard.check_url_static(url, policy)


def test_the_configured_model_server_is_allowed_for_connections_but_not_for_images(settings):
    settings.UPSTREAM_ALLOWED_HOSTS = []
    settings.OPENAI_BASE_URL = "http://127.0.0.1:11434/v1"
    netguard.check_url_static("http://127.0.0.1:11434/v1/models", netguard.upstream_policy())
    with pytest.raises(netguard.Blocked):  # only that server, not the machine
        netguard.check_url_static("http://127.0.0.1:6379/", netguard.upstream_policy())
    with pytest.raises(netguard.Blocked):  # and members cannot point it at itself
        netguard.check_url_static("http://127.0.0.1:11434/x.png", netguard.image_policy())

    settings.OPENAI_BASE_URL = "http://host.docker.internal:11434/v1"
    netguard.check_url_static("http://host.docker.internal:11434/v1", netguard.upstream_policy())
    with pytest.raises(netguard.Blocked):
        netguard.check_url_static("http://host.docker.internal:11434/v1", netguard.image_policy())


# --------------------------------------------------------------------------- names that resolve


async def test_every_address_of_a_name_must_be_public(no_exceptions, fake_dns):
    fake_dns["public.example.test"] = ["8.8.8.8", "2606:4700::1111"]
    fake_dns["mixed.example.test"] = ["8.8.8.8", "10.0.0.7"]
    fake_dns["sneaky.example.test"] = ["::ffff:169.254.169.254"]
    policy = netguard.upstream_policy()
    await netguard.check_url("https://public.example.test/v1", policy)
    for name in ("mixed", "sneaky"):
        with pytest.raises(netguard.Blocked) as caught:
            await netguard.check_url(f"https://{name}.example.test/v1", policy)
        assert f"{name}.example.test" in caught.value.message


async def test_a_name_that_does_not_resolve_is_refused_unless_asked_otherwise(no_exceptions, fake_dns):
    with pytest.raises(netguard.Blocked):
        await netguard.check_url("https://nowhere.example.test/", netguard.upstream_policy())
    await netguard.check_url("https://nowhere.example.test/", netguard.image_policy(), unresolvable_ok=True)


def test_the_form_validator_refuses_private_model_servers(no_exceptions, fake_dns):
    fake_dns["models.example.test"] = ["203.0.113.9", "8.8.4.4"]  # a documentation address
    fake_dns["gpu.example.test"] = ["8.8.4.4"]
    for url in ("http://169.254.169.254/v1", "http://localhost:11434/v1", "https://models.example.test/v1",
                "https://nowhere.example.test/v1", "ftp://gpu.example.test/v1"):
        with pytest.raises(ValidationError):
            netguard.validate_public_url(url)
    netguard.validate_public_url("https://gpu.example.test/v1")
    netguard.validate_public_url(ELSEWHERE)  # OPENAI_BASE_URL's own host, unresolved


# --------------------------------------------------------------------------- at connect time

LOOPBACK_SPELLINGS = ["localhost", "LocalHost.", "[::ffff:127.0.0.1]", "127.1", "2130706433", "0x7f.0.0.1"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_a_model_server_on_loopback_is_refused_before_connecting(
    host, upstream, nothing_allowed, settings, connects, caplog
):
    settings.OPENAI_BASE_URL = ELSEWHERE
    settings.UPSTREAM_MAX_RETRIES = 2
    text, error = await run(f"http://{host}:{upstream.port}/v1")
    assert error is not None and text == ""
    assert error.code == "upstream_unavailable" and not error.retryable
    reason = "local network name" if "localhost" in host.lower() else "loopback"
    assert describe(error.code, error.detail) == (
        f"The model server's address is not allowed ({reason}). "
        "An operator can allow it with UPSTREAM_ALLOWED_HOSTS."
    )
    assert connects == [] and upstream.requests == []
    refusals = [r for r in caplog.records if "upstream connection refused" in r.getMessage()]
    assert len(refusals) == 1  # refused once: never retried


@pytest.mark.parametrize("host,allow", [
    ("localhost", "localhost"),  # a local name needs its name listed; its address is not enough
    ("[::ffff:127.0.0.1]", "127.0.0.1"),
    ("2130706433", "127.0.0.0/8"),
])
async def test_a_model_server_the_operator_allowed_is_reached(host, allow, upstream, settings, connects):
    settings.OPENAI_BASE_URL = ELSEWHERE
    settings.UPSTREAM_ALLOWED_HOSTS = [f"{allow}:{upstream.port}" if "/" not in allow else allow]
    text, error = await run(f"http://{host}:{upstream.port}/v1", {"text": "reached"})
    assert error is None and text == "reached"
    assert len(upstream.requests) == 1 and len(connects) == 1


async def test_list_models_is_guarded_too(upstream, nothing_allowed, settings):
    settings.OPENAI_BASE_URL = ELSEWHERE
    with pytest.raises(UpstreamError) as caught:
        await list_models(Endpoint(f"http://localhost:{upstream.port}/v1", KEY))
    assert caught.value.code == "upstream_unavailable"
    assert "UPSTREAM_ALLOWED_HOSTS" in describe(caught.value.code, caught.value.detail)


async def test_the_connection_goes_to_the_address_that_was_checked(upstream, settings, fake_dns, connects):
    """model.example.test exists only in the guard's answer: reaching the server proves
    the connection used the checked address, and the request still names the host."""
    settings.OPENAI_BASE_URL = ELSEWHERE
    settings.UPSTREAM_ALLOWED_HOSTS = ["127.0.0.1"]
    fake_dns["model.example.test"] = ["127.0.0.1"]
    text, error = await run(f"http://model.example.test:{upstream.port}/v1", {"text": "via the checked address"})
    assert error is None and text == "via the checked address"
    assert connects == [("127.0.0.1", upstream.port)]
    assert upstream.requests[0]["headers"]["host"] == f"model.example.test:{upstream.port}"


async def test_dns_rebinding_after_the_check_is_caught_at_connect_time(
    upstream, nothing_allowed, settings, fake_dns, connects
):
    settings.OPENAI_BASE_URL = ELSEWHERE
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    fake_dns["rebind.example.test"] = lambda: next(answers)
    url = f"http://rebind.example.test:{upstream.port}/v1"
    await netguard.check_url(url, netguard.upstream_policy())  # what a form would have seen: public
    _, error = await run(url)
    assert error is not None and error.code == "upstream_unavailable" and "not allowed" in describe(error.code, error.detail)
    assert connects == [] and upstream.requests == []


async def test_one_private_address_among_public_ones_refuses_the_name(
    upstream, nothing_allowed, settings, fake_dns, connects
):
    settings.OPENAI_BASE_URL = ELSEWHERE
    fake_dns["mixed.example.test"] = ["8.8.8.8", "127.0.0.1"]
    _, error = await run(f"http://mixed.example.test:{upstream.port}/v1")
    assert error is not None and "not allowed" in describe(error.code, error.detail)
    assert connects == [] and upstream.requests == []


class _RecordingStream(httpcore.AsyncMockStream):
    def __init__(self, log: dict):
        super().__init__([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                          b'{"data":[]}'])
        self.log = log

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        self.log["server_hostname"] = server_hostname
        return self


class _RecordingBackend(httpcore.AsyncMockBackend):
    def __init__(self):
        super().__init__([])
        self.log: dict = {}

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.log["connected_to"] = (host, port)
        return _RecordingStream(self.log)


async def test_tls_is_to_the_host_name_while_the_socket_goes_to_the_checked_address(no_exceptions, fake_dns):
    fake_dns["models.example.test"] = ["8.8.8.8"]
    inner = _RecordingBackend()
    transport = netguard.GuardedTransport(limits=httpx.Limits(), backend=netguard.GuardedBackend(inner=inner))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://models.example.test/v1/models")
    assert response.json() == {"data": []}
    assert inner.log == {"connected_to": ("8.8.8.8", 443), "server_hostname": "models.example.test"}


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("status,where", [
    (307, "http://169.254.169.254/latest/meta-data/"),
    (302, "http://169.254.169.254/latest/meta-data/"),
    (307, "http://127.0.0.1:{port}/v1/chat/completions"),  # the allowed server itself: still not followed
    (308, "http://localhost:{port}/v1/chat/completions"),
])
async def test_a_redirect_from_the_model_server_is_an_error_and_is_not_followed(
    upstream, nothing_allowed, connects, status, where
):
    target = where.format(port=upstream.port)
    _, error = await run(upstream.base_url, {"status": status, "redirect": target})
    assert error is not None and (error.code, error.status) == ("upstream_error", status)
    assert "redirect" in describe(error.code, error.detail) and target not in describe(error.code, error.detail)
    assert len(upstream.requests) == 1
    assert connects == [("127.0.0.1", upstream.port)]


@pytest.mark.django_db(transaction=True)
async def test_a_redirect_reaches_the_tab_as_an_upstream_error(alice, upstream, sockets, nothing_allowed, connects):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    directive = json.dumps({"redirect": "http://169.254.169.254/latest/meta-data/"})
    await tab.send(type="send", content=f"hi fake:{directive}", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["code"] == "upstream_error" and "redirect" in reply.end["message"]
    assert len(upstream.requests) == 1 and {host for host, _ in connects} == {"127.0.0.1"}


# --------------------------------------------------------------------------- image URLs


def image_parts(url: str) -> list[dict]:
    return [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://localhost/x.png",
                                 "http://2130706433/x.png", "http://[::ffff:127.0.0.1]/x.png"])
def test_an_image_url_on_a_local_address_is_an_invalid_frame(url, nothing_allowed):
    with pytest.raises(FrameError) as caught:
        clean_content(image_parts(url))
    assert caught.value.code == "invalid"
    assert caught.value.message.startswith("This image URL cannot be used")


def test_inline_and_public_images_and_allowed_hosts_still_pass(settings):
    settings.UPSTREAM_ALLOWED_HOSTS = ["images.lan", "10.0.0.0/8"]
    for url in ("data:image/png;base64,iVBORw0KGgo=", "https://example.com/cat.png", "http://images.lan/x.png",
                "http://10.1.2.3/x.png"):
        assert clean_content(image_parts(url))[1][1]["image_url"]["url"] == url


async def tab_in_new_conversation(sockets, member):
    conversation = await database_sync_to_async(member.conversation)()
    tab = sockets(member, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    return tab


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data",
    "http://localhost/x.png",
    "http://images.example.test/cat.png",  # resolves to a private address (fake_dns)
    "http://sneaky.example.test/cat.png",  # one of its addresses is private
])
async def test_a_send_with_a_private_image_url_is_invalid_and_stores_nothing(
    url, alice, upstream, sockets, nothing_allowed, fake_dns
):
    fake_dns["images.example.test"] = ["10.0.0.7"]
    fake_dns["sneaky.example.test"] = ["8.8.8.8", "::ffff:192.168.0.1"]
    tab = await tab_in_new_conversation(sockets, alice)
    await tab.send(type="send", content=image_parts(url), client_id=str(uuid.uuid4()))
    frame = await tab.recv()
    assert frame["type"] == "error" and frame["code"] == "invalid"
    assert "This image URL cannot be used" in frame["message"] and "UPSTREAM_ALLOWED_HOSTS" in frame["message"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert upstream.requests == []

    await tab.send(type="send", content="still here?", client_id=str(uuid.uuid4()))
    assert (await follow_reply(tab.recv)).end["status"] == "complete"


@pytest.mark.django_db(transaction=True)
async def test_an_edit_with_a_private_image_url_is_invalid(alice, upstream, sockets, nothing_allowed, fake_dns):
    fake_dns["images.example.test"] = ["192.168.1.20"]
    tab = await tab_in_new_conversation(sockets, alice)
    await tab.send(type="send", content="first", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    question = await database_sync_to_async(Message.objects.get)(role="user")
    await tab.send(type="edit", message_id=str(question.id), content=image_parts("http://images.example.test/a.png"))
    frame = await tab.recv()
    assert frame["type"] == "error" and frame["code"] == "invalid"
    assert await database_sync_to_async(Message.objects.count)() == 2


@pytest.mark.django_db(transaction=True)
async def test_an_image_on_a_public_or_allowed_host_goes_upstream(alice, upstream, sockets, settings, fake_dns):
    settings.UPSTREAM_ALLOWED_HOSTS = ["10.0.0.0/8"]
    fake_dns["images.example.test"] = ["10.0.0.7"]
    fake_dns["cdn.example.test"] = ["8.8.8.8"]
    tab = await tab_in_new_conversation(sockets, alice)
    parts = image_parts("http://images.example.test/a.png") + [
        {"type": "image_url", "image_url": {"url": "https://cdn.example.test/b.png"}},
        {"type": "image_url", "image_url": {"url": "https://unresolvable.example.test/c.png"}},
    ]
    await tab.send(type="send", content=parts, client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["status"] == "complete"
    assert upstream.requests[0]["body"]["messages"][-1]["content"] == parts
    assert {"images.example.test", "cdn.example.test", "unresolvable.example.test"} <= set(fake_dns.asked)
