"""Websockets are same-origin only.

Browsers send cookies with cross-site websocket handshakes, so a page on
another site could otherwise drive a signed-in member's socket. A handshake
is let through only when its Origin names this very host (or matches
CSRF_TRUSTED_ORIGINS, for proxies that rewrite Host) and that host is in
ALLOWED_HOSTS. A missing Origin is refused: browsers always send one.

CSRF_TRUSTED_ORIGINS is read as Django's CSRF check reads it, so an entry
such as `https://*.example.com` lets in what it lets in for forms: the same
scheme, and the domain or any subdomain of it.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def is_same_origin(scope) -> bool:
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    if not origin or not host:
        return False
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        return False
    if is_trusted_origin(origin):
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def is_trusted_origin(origin: str) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lets this origin in: exactly, or by a `*.` subdomain wildcard."""
    try:
        parts = urlsplit(origin)
        netloc = parts.netloc.lower()
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        allowed = urlsplit(trusted)
        # Django's CsrfViewMiddleware: the netloc after the "*" matches the domain and its subdomains.
        if allowed.scheme == parts.scheme and is_same_domain(netloc, allowed.netloc.lstrip("*")):
            return True
    return False


class SameOriginValidator:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not is_same_origin(scope):
            return await WebsocketDenier.as_asgi()(scope, receive, send)
        return await self.application(scope, receive, send)
