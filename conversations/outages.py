"""Postgres or Redis unreachable: "try again later", once logged.

Pages and the API (`OutageMiddleware`): 503 with Retry-After and a plain
message (JSON under /api/), not a server error page, when a view cannot reach
Postgres, or Redis (the cache behind sign-in throttling).

Websockets and Postgres:
Every websocket path reads the database: the session at the handshake
(Channels' AuthMiddleware), ownership, each action. When that fails, the
exception leaves the application and daphne drops the connection; the page
sees a failed handshake it cannot tell from a refusal, or a bare 1006. This
wrapper, outermost on the websocket stack, answers instead: it completes the
handshake if it was not yet, and closes with 1013 (try again later) and a
reason, so the page shows it and reconnects with backoff. (Redis outages are
met in consumers.py with the same close code.)

`warn_now_and_then` keeps the log to one line per 10 s per kind of outage:
during an outage every tab retries.
"""

from __future__ import annotations

import logging
import time

from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext_lazy
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# DATABASE_OUTAGE_ERRORS: a lost or refused connection. Any other database error is a bug,
# not an outage, and stays one (a 500, a dropped socket) rather than "try again later".
from conversations.chat.threads import DATABASE_OUTAGE_ERRORS, check_pool

log = logging.getLogger(__name__)

TRY_AGAIN_LATER_CLOSE_CODE = 1013  # RFC 6455
SOCKET_REASONS = {  # a close frame's reason
    "database": "The server cannot reach its database; reconnect shortly.",
    "channel layer": "The server cannot reach its message broker; reconnect shortly.",
}
HTTP_REASONS = {
    "database": gettext_lazy("The server cannot reach its database; try again shortly."),
    "redis": gettext_lazy("The server cannot reach Redis; try again shortly."),
}
LOG_EVERY_SECONDS = 10
_last_logged: dict[str, float] = {}


def warn_now_and_then(kind: str, message: str, *args) -> None:
    """log.warning, at most once per LOG_EVERY_SECONDS for each kind."""
    now = time.monotonic()
    if now - _last_logged.get(kind, -1e9) >= LOG_EVERY_SECONDS:
        _last_logged[kind] = now
        log.warning(message, *args)


class CloseOnDatabaseOutage:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        seen = {"connect": False, "accept": False, "close": False}

        async def watched_receive():
            message = await receive()
            if message["type"] == "websocket.connect":
                seen["connect"] = True
            return message

        async def watched_send(message):
            if message["type"] == "websocket.accept":
                seen["accept"] = True
            elif message["type"] == "websocket.close":
                seen["close"] = True
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        except DATABASE_OUTAGE_ERRORS as error:
            warn_now_and_then(
                "database", "the database is unavailable (%s): sockets are closed with %d, try again later",
                error.__class__.__name__, TRY_AGAIN_LATER_CLOSE_CODE,
            )
            if seen["close"]:
                return
            if not seen["connect"] and (await receive())["type"] != "websocket.connect":
                return  # the client left before its handshake was read
            if not seen["accept"]:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER_CLOSE_CODE, "reason": SOCKET_REASONS["database"]})



class OutageMiddleware:
    """A view that cannot reach Postgres or Redis answers 503, try again shortly."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        # Only connection errors: any other database or Redis error is a bug and stays a 500.
        if isinstance(exception, DATABASE_OUTAGE_ERRORS):
            kind = "database"
            check_pool()  # its other idle connections were likely cut too
        elif isinstance(exception, RedisConnectionError | RedisTimeoutError):
            kind = "redis"
        else:
            return None
        warn_now_and_then(kind, "the %s is unavailable (%s): requests are answered 503",
                          kind, exception.__class__.__name__)
        if request.path.startswith("/api/"):
            # The API's error shape (web/api.py), built here: this module sits below the edges.
            response = JsonResponse({"error": {"code": "unavailable", "message": str(HTTP_REASONS[kind])}}, status=503)
        else:
            response = HttpResponse(str(HTTP_REASONS[kind]), status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response
