"""Websockets while Postgres is unreachable: "try again later", not a dropped socket.

Every websocket path reads the database: the session at the handshake
(Channels' AuthMiddleware), ownership, each action. When that fails, the
exception leaves the application and daphne drops the connection; the page
sees a failed handshake it cannot tell from a refusal, or a bare 1006. This
wrapper, outermost on the websocket stack, answers instead: it completes the
handshake if it was not yet, and closes with 1013 (try again later) and a
reason, so the page shows it and reconnects with backoff. One warning per
10 s at most: during an outage every tab retries.
"""

from __future__ import annotations

import logging
import time

from django.db import Error as DatabaseError

log = logging.getLogger(__name__)

TRY_AGAIN_LATER_CLOSE_CODE = 1013
REASON = "The server cannot reach its database; reconnect shortly."
_last_log = -1e9


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
        except DatabaseError as error:
            _log(error)
            if seen["close"]:
                return
            if not seen["connect"] and (await receive())["type"] != "websocket.connect":
                return  # the client left before its handshake was read
            if not seen["accept"]:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER_CLOSE_CODE, "reason": REASON})


def _log(error: Exception) -> None:
    global _last_log
    now = time.monotonic()
    if now - _last_log >= 10:
        _last_log = now
        log.warning("the database is unavailable (%s): sockets are closed with %d, try again later",
                    error.__class__.__name__, TRY_AGAIN_LATER_CLOSE_CODE)
