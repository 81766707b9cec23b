"""Where the server may send requests, and where members may point the model server.

SSRF defence. Two kinds of address come from data rather than from the
operator: the base URLs of providers that staff add (later), and the image URLs
that members put in `image_url` content parts, which the model server fetches.
Neither may reach loopback, private, link-local (169.254.169.254, the cloud
metadata service), shared, reserved or multicast addresses, in any spelling
(decimal `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`, 6to4, NAT64, ...),
unless the operator allows the host in `UPSTREAM_ALLOWED_HOSTS`.

The policy:

- `is_public_address(ip)`: the address test (with embedded IPv4 unwrapped).
- `upstream_policy()`: for the relay's own connections. `UPSTREAM_ALLOWED_HOSTS`
  plus, implicitly, the host and port of `OPENAI_BASE_URL`: the operator set
  that server on purpose, and a local Ollama or vLLM is a real use.
- `image_policy()`: for image URLs. `UPSTREAM_ALLOWED_HOSTS` only: allowing the
  relay to reach a local model server does not let members point that server
  at other services on its machine.

Enforcement happens at three points:

- `check_url_static`: pure, no DNS (frames.py): literal addresses and names
  that are local by design (`localhost`, `*.local`, single labels, ...).
- `check_url` / `check_url_blocking`: the same, then every address the name
  resolves to must pass (chat.py for images; `validate_public_url` for forms).
- `GuardedBackend`: at connect time, inside httpx, for every connection the
  upstream client makes. It resolves the name itself, checks every address
  and connects to the address it checked, so DNS rebinding between a check
  and the connection cannot get around it. TLS still verifies and sends SNI
  for the host name (httpcore takes `server_hostname` from the URL's host,
  not from the address the stream is connected to).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.upstream.pool import LinearPool
from conversations.upstream.streams import QuickReadStream

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_HINT = gettext_lazy("An operator can allow it with UPSTREAM_ALLOWED_HOSTS.")

# Not public whatever a Python version's `is_global` says (its tables changed in 3.11.10/3.12.4).
_NON_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/96",  # the unspecified and loopback addresses, and deprecated IPv4-compatible ones
        "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215)
        "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Names that only mean something on a local network (RFC 6761, 6762, 8375; ICANN's .internal).
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")
_NAME_CHARS = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
# What inet_aton (and so getaddrinfo, and many URL parsers) may read as an IPv4 address.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


class Blocked(Exception):
    """A URL or connection the policy refuses; `message` is fit to show a member."""

    def __init__(self, message: str, *, detail: str = "", reason: str = "not a valid URL"):
        super().__init__(message)
        self.message = message
        self.detail = detail or message  # for the log: may name the resolved address
        self.reason = reason  # short: "loopback", "link-local", "local network name", ...


# --------------------------------------------------------------------------- addresses


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to, if any."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip) -> bool:
    """True only for a globally reachable unicast address (embedded IPv4 included)."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])
    if ip.version == 6 and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public_address(inner):
        return False
    if ip.version == 6 and (ip.ipv4_mapped is not None or ip in _NAT64):
        # ::ffff:a.b.c.d is a.b.c.d; 64:ff9b::a.b.c.d is a.b.c.d through a NAT64 gateway
        # (what DNS64 answers on IPv6-only hosts). Python counts both as reserved.
        return True
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    if ip.is_loopback or ip.is_link_local or ip.is_private:
        return False
    if ip.version == 6 and ip.is_site_local:
        return False
    return not any(ip in net for net in _NON_PUBLIC if net.version == ip.version)


def _reason(ip: IPAddress) -> str:
    inner = embedded_ipv4(ip) or ip
    if inner.is_loopback:
        return "loopback"
    if inner.is_link_local:
        return "link-local"
    if inner.is_multicast:
        return "multicast"
    return "private or reserved network"


# --------------------------------------------------------------------------- hosts


def parse_ip(host: str) -> IPAddress | None:
    """The address a host names literally, in any form a resolver or URL parser accepts.

    `127.1`, `0x7f.1`, `017700000001` and `2130706433` are all 127.0.0.1 to
    inet_aton (and so to getaddrinfo and browsers): they are treated as such.
    Raises Blocked for a host that looks like an address but is not a valid one.
    """
    if ":" in host:
        try:
            return ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise Blocked(_("The URL's host is not a valid IPv6 address.")) from None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    labels = host.rstrip(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # A name never ends in a number (WHATWG URL: such a host is an IPv4 address or invalid).
        raise Blocked(_("The URL's host is not a valid address."))
    return None


def normalize_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot, international names as ASCII (IDNA)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # nameprep: full-width digits become digits
        except UnicodeError:
            raise Blocked(_("The URL's host is not a valid host name.")) from None
    host = host.lower()
    if host.endswith(".") and ":" not in host:
        host = host[:-1]
    if not host:
        raise Blocked(_("The URL has no host."))
    if ":" not in host and not _NAME_CHARS.fullmatch(host):
        raise Blocked(_("The URL's host is not a plain host name."))
    return host


def is_local_name(host: str) -> bool:
    """`localhost`, single-label names and local-only suffixes: never public by design."""
    return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """The operator's exceptions: host names and addresses or networks, each maybe port-bound."""

    names: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None], ...] = ()

    def allows_name(self, host: str, port: int) -> bool:
        return (host, None) in self.names or (host, port) in self.names

    def allows_address(self, ip: IPAddress, port: int) -> bool:
        if is_public_address(ip):
            return True
        candidates = [ip]
        if ip.version == 6 and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # the same destination on a dual-stack socket
        return any(
            candidate in network and allowed_port in (None, port)
            for network, allowed_port in self.networks
            for candidate in candidates
            if candidate.version == network.version
        )


def parse_allowed_host(entry: str) -> tuple[str | None, object, int | None]:
    """One UPSTREAM_ALLOWED_HOSTS entry: `name`, `name:port`, an address (IPv6 in brackets
    when a port follows), `address:port`, or a CIDR range. Returns (kind, value, port).

    Raises ValueError with a message naming the entry.
    """
    text = entry.strip()
    if "://" in text or "@" in text:
        raise ValueError(f"{entry!r} is a URL; give a host name, an address or a CIDR range")
    if "/" in text:
        try:
            return "network", ipaddress.ip_network(text, strict=False), None
        except ValueError:
            raise ValueError(f"{entry!r} is not a CIDR range") from None
    port = None
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if match:
        host, port_text = match.group(1), match.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r} has no valid port")
        port = int(port_text)
    try:
        host = normalize_host(host)
        ip = parse_ip(host)
    except Blocked:
        raise ValueError(f"{entry!r} is not a host name or address") from None
    if ip is not None:
        return "network", ipaddress.ip_network(ip), port
    return "name", host, port


def _build_policy(entries: tuple[str, ...]) -> Policy:
    names, networks = set(), []
    for entry in entries:
        kind, value, port = parse_allowed_host(entry)
        if kind == "name":
            names.add((value, port))
        else:
            networks.append((value, port))
    return Policy(frozenset(names), tuple(networks))


@functools.lru_cache(maxsize=32)
def _policy(entries: tuple[str, ...], implicit_url: str | None) -> Policy:
    policy = _build_policy(entries)
    if implicit_url is None:
        return policy
    try:
        target = parse_url(implicit_url)
    except Blocked:
        return policy
    if target.ip is not None:
        network = ipaddress.ip_network(target.ip)
        return Policy(policy.names, policy.networks + ((network, target.port),))
    return Policy(policy.names | {(target.host, target.port)}, policy.networks)


def image_policy() -> Policy:
    """For URLs the model server will fetch: only what the operator listed."""
    return _policy(tuple(settings.UPSTREAM_ALLOWED_HOSTS), None)


# A provider staff marked "allow a private address": its base URL, trusted for the requests
# made while this is set (upstream/client.py sets it around each request to that provider).
# A context variable, so it holds for the task making the request and for no other.
trusted_base_url: contextvars.ContextVar[str | None] = contextvars.ContextVar("trusted_base_url", default=None)


def upstream_policy() -> Policy:
    """For the relay's own connections: the operator's list, plus OPENAI_BASE_URL's host and port,
    plus the base URL of a provider allowed a private address, for its own requests."""
    policy = _policy(tuple(settings.UPSTREAM_ALLOWED_HOSTS), settings.OPENAI_BASE_URL)
    trusted = trusted_base_url.get()
    if trusted is None:
        return policy
    extra = _policy((), trusted)
    return Policy(policy.names | extra.names, policy.networks + extra.networks)


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class Target:
    host: str  # normalized
    port: int
    ip: IPAddress | None  # when the host is an address literal


def parse_url(url: str) -> Target:
    """The host and port an http(s) URL leads to; Blocked for URLs parsers may disagree on.

    Parsers differ on backslashes and spaces in the authority (WHATWG reads `\\` as
    `/`, urllib does not) and on control characters: such URLs are refused, so
    the host checked here is the host any fetcher would connect to.
    """
    if any(ord(ch) < 32 or ch == "\x7f" for ch in url):
        raise Blocked(_("The URL contains control characters."))
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    if any(ch.isspace() or ch == "\\" for ch in authority):
        raise Blocked(_("The URL's host part contains spaces or backslashes."))
    try:
        parts = urlsplit(url)
    except ValueError:
        raise Blocked(_("The URL is not valid.")) from None
    if parts.scheme not in ("http", "https"):
        raise Blocked(_("Only http(s) URLs are allowed."))
    if "@" in parts.netloc:
        raise Blocked(_("URLs with a user name or password are not allowed."))
    try:
        port = parts.port
    except ValueError:
        raise Blocked(_("The URL's port is not valid.")) from None
    if parts.hostname is None:
        raise Blocked(_("The URL has no host."))
    host = normalize_host(parts.hostname)
    return Target(host, port or (443 if parts.scheme == "https" else 80), parse_ip(host))


def _check_target(target: Target, policy: Policy) -> bool:
    """The checks that need no DNS. True: allowed outright; False: its addresses decide."""
    if policy.allows_name(target.host, target.port):
        return True
    if target.ip is not None:
        _check_addresses(target, [target.ip], policy)
        return True
    if is_local_name(target.host):
        raise Blocked(
            _("The host %(host)s is a local network name. %(hint)s") % {"host": repr(target.host), "hint": ALLOW_HINT},
            detail=f"{target.host}:{target.port} is a local name", reason="local network name",
        )
    return False


def _check_addresses(target: Target, addresses, policy: Policy) -> None:
    for ip in addresses:
        if not policy.allows_address(ip, target.port):
            shown = target.host if target.host == str(ip) else f"{target.host} ({ip})"
            reason = _reason(ip)
            raise Blocked(
                _("The address %(address)s is not allowed (%(reason)s). %(hint)s")
                % {"address": shown, "reason": reason, "hint": ALLOW_HINT},
                detail=f"{target.host}:{target.port} -> {ip} ({reason})", reason=reason,
            )


def check_url_static(url: str, policy: Policy) -> None:
    """Refuse a URL by its text alone: address literals and local names (no DNS)."""
    _check_target(parse_url(url), policy)


def _addresses(infos) -> list[IPAddress]:
    seen: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address a name resolves to (non-blocking); OSError when it does not resolve."""
    return _addresses(await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _resolve_blocking(host: str, port: int) -> list[IPAddress]:
    return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


async def check_url(url: str, policy: Policy, *, unresolvable_ok: bool = False,
                    timeout: float | None = None) -> None:
    """Refuse a URL whose host is, or resolves to, an address the policy does not allow.

    Every address the name resolves to must pass. `unresolvable_ok`: a name that
    does not resolve (or not within `timeout`) passes instead of being refused.
    """
    target = parse_url(url)
    if _check_target(target, policy):
        return
    try:
        with anyio.fail_after(timeout):
            addresses = await _resolve(target.host, target.port)
    except (OSError, TimeoutError, UnicodeError):
        if unresolvable_ok:
            return
        raise Blocked(_("The host %(host)s could not be resolved.") % {"host": repr(target.host)}, reason="unresolvable") from None
    _check_addresses(target, addresses, policy)


def check_url_blocking(url: str, policy: Policy, *, unresolvable_ok: bool = False) -> None:
    """check_url for synchronous code (forms): resolves with a blocking getaddrinfo."""
    target = parse_url(url)
    if _check_target(target, policy):
        return
    try:
        addresses = _resolve_blocking(target.host, target.port)
    except (OSError, UnicodeError):
        if unresolvable_ok:
            return
        raise Blocked(_("The host %(host)s could not be resolved.") % {"host": repr(target.host)}, reason="unresolvable") from None
    _check_addresses(target, addresses, policy)


def validate_public_url(value: str) -> None:
    """Django validator for a model server's base URL (e.g. a provider form's field).

    Uses the upstream policy, as the connection will: the operator's list and
    OPENAI_BASE_URL's host pass; anything else must resolve to public addresses
    only. Passing it is not what keeps the server safe (DNS can change before
    the first request): GuardedBackend checks again on every connection.
    """
    try:
        check_url_blocking(value, upstream_policy())
    except Blocked as error:
        raise ValidationError(error.message, code="blocked_host") from None


# --------------------------------------------------------------------------- connections


class BlockedConnection(Blocked):
    """Raised by GuardedBackend: the connection was refused before any packet was sent."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy applied to every TCP connection.

    The host is checked, resolved here (non-blocking) and every address it has
    must pass; the connection then goes to those checked addresses, one after
    another, never to the name, so a second DNS answer cannot redirect it. A
    host the operator allowed by name is connected to as usual.
    """

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None, policy=upstream_policy):
        self._inner = inner or httpcore.AnyIOBackend()
        self._policy = policy

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options=None) -> httpcore.AsyncNetworkStream:
        policy = self._policy()
        try:
            name = normalize_host(host)  # httpx hands over "localhost." or "0x7f.1" as written
            target = Target(name, port, parse_ip(name))
            allowed = _check_target(target, policy)
        except Blocked as error:
            log.warning("upstream connection refused: %s", error.detail)
            raise BlockedConnection(error.message, detail=error.detail, reason=error.reason) from None
        if allowed and target.ip is None:
            return QuickReadStream(await self._inner.connect_tcp(
                host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            ))
        try:
            with anyio.fail_after(timeout):
                addresses = [target.ip] if target.ip is not None else await _resolve(target.host, port)
                try:
                    _check_addresses(target, addresses, policy)
                except Blocked as error:
                    log.warning("upstream connection refused: %s", error.detail)
                    raise BlockedConnection(error.message, detail=error.detail, reason=error.reason) from None
                return await self._connect_any(addresses, port, local_address, socket_options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {target.host} timed out") from None
        except OSError as error:  # the name did not resolve
            raise httpcore.ConnectError(f"could not resolve {target.host}: {error}") from None

    async def _connect_any(self, addresses, port, local_address, socket_options) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for ip in addresses:
            try:
                return QuickReadStream(await self._inner.connect_tcp(
                    str(ip), port, timeout=None, local_address=local_address, socket_options=socket_options
                ))
            except httpcore.ConnectError as error:
                failure = error
        raise failure or httpcore.ConnectError("no address to connect to")

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        return await self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool built on GuardedBackend.

    httpx does not let a caller pass a network backend, so the pool it builds is
    replaced (httpx 0.28 / httpcore 1.0 keep it in `_pool`; the check below fails
    loudly, not silently unguarded, should that change). The replacement is
    `pool.LinearPool`, httpcore's pool with bookkeeping that stays cheap with
    hundreds of streams in flight; every connection it makes goes through the
    backend given here. Like any custom transport, it does not read HTTP(S)_PROXY:
    through a proxy the guard would check the proxy's address instead of the server's.
    """

    def __init__(self, *, limits: httpx.Limits, backend: httpcore.AsyncNetworkBackend | None = None):
        super().__init__(limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx's transport no longer keeps its pool in _pool: update netguard")
        self._pool = LinearPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend or GuardedBackend(),
        )
