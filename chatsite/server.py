"""daphne, with a bound on what a websocket may leave unread: `python -m chatsite.server [daphne args]`.

Every place that starts the app runs this module instead of `daphne` (Makefile,
docker/entrypoint.sh, the tests' and the benchmark's processes). The arguments
are daphne's own, e.g. `python -m chatsite.server -b 0.0.0.0 -p 8000 chatsite.asgi:application`.

Why the bound is here and not in the app
----------------------------------------
Replies stream to every socket of a conversation. daphne hands each frame to
the twisted transport, whose write buffer grows without limit when the peer's
TCP window is full, so a tab that stops reading (a suspended laptop, a client
that sends but never reads) makes the process grow for as long as replies
stream: `await send()` in the app returns at once whatever the peer does, so
the ASGI app cannot see it. The transport can: twisted calls a registered
streaming producer's `pauseProducing()` when its buffer passes `bufferSize`
(64 KiB), after the kernel's socket buffers are already full, and
`resumeProducing()` once it has drained completely.

So each websocket registers a small producer (`SendBacklog`) and counts the
bytes written to the transport while it is paused, that is, written after the
peer had stopped keeping up and before it caught up again. Past
`WS_SEND_BUFFER_BYTES` (settings.py) the connection is aborted (RST, buffer
discarded): a close frame would only queue behind what the peer is not reading.
The app sees an ordinary disconnect (code 1006), the reply goes on for every
other socket, and one warning line is logged. The frame that filled the buffer
is not counted, so a slow but reading tab receiving one large snapshot is not
dropped for it; a socket holds at most that frame, 64 KiB and the limit.

Only public interfaces are used: daphne's `CommandLineInterface.server_class`,
its `Server(ready_callable=...)`, the websocket factory's `protocol`, and
twisted's `registerProducer`. daphne itself leaves its HTTP channel registered
as the transport's producer after the upgrade (idle from then on: it only ever
paused the HTTP request being handled); the websocket takes its place. The one
assumption about daphne's inside, that `Server.run()` has built `ws_factory`
when it calls `ready_callable`, is checked at start (`_install_send_bound`),
and tests/test_slow_reader.py fails if the bound stops working.

Graceful drain
--------------
Twisted stops the reactor on SIGTERM, which would cut every reply short and
leave its row `streaming` until its lease passed. Here SIGTERM first drains
(conversations/chat/drain.py): no new replies, running ones get DRAIN_SECONDS
to finish, the rest are saved as `interrupted` at once; then the reactor
stops as before. A second SIGTERM ends the wait. SIGINT (Ctrl-C) still stops
at once. The process also sweeps, every REPLY_LEASE_SECONDS, replies whose
process died, so their usage is recorded even if nobody opens them.

Keepalive pings (daphne's `--ping-interval`, default 20 s, and
`--ping-timeout`, default 30 s, kept as they are): daphne pings a socket that
has sent nothing for the interval and autobahn drops it when no pong comes in
the timeout. That ends a frozen tab about 50 s after its last frame, whatever
it was sent meanwhile; it does nothing against a client that keeps sending
(any incoming frame counts as alive and postpones the ping) but never reads.
The byte bound covers that one, and caps what a frozen tab costs before its
ping runs out. Each bounds a different thing: pings bound time, this bounds bytes.
"""

from __future__ import annotations

# uvloop under twisted's asyncio reactor (UVLOOP=false for the standard loop): set before
# daphne.server makes its loop. The relay spends much of its time in the loop's socket and timer
# handling, which uvloop does in C. Read from the environment directly: Django is not set up yet.
import asyncio  # isort: skip
import os  # isort: skip

if os.environ.get("UVLOOP", "true").strip().lower() not in ("0", "false", "no", "off"):
    import uvloop  # isort: skip

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

# Imported next: daphne.server makes its event loop and installs twisted's asyncio reactor on import.
from daphne.server import Server  # isort: skip

import logging

from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

log = logging.getLogger("chatsite.server")


@implementer(IPushProducer)
class SendBacklog:
    """The transport's producer for one websocket: counts what is written while the peer lags."""

    def __init__(self, protocol: SendBoundedWebSocketProtocol, limit: int):
        self.protocol = protocol
        self.limit = limit
        self.paused = False  # the transport's buffer passed its bufferSize and has not drained since
        self.unread = 0  # bytes written while paused

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        # Twisted resumes only once its buffer is empty: the peer has caught up.
        self.paused = False
        self.unread = 0

    def stopProducing(self) -> None:
        self.paused = False

    def written(self, size: int) -> None:
        self.unread += size
        if self.unread > self.limit:
            self.protocol.send_backlog_exceeded(self.unread)


class SendBoundedWebSocketProtocol(WebSocketProtocol):
    """daphne's websocket protocol, dropped when it leaves more than the limit unread."""

    send_backlog: SendBacklog | None = None
    dropped_for_backlog = False

    def connectionMade(self) -> None:
        super().connectionMade()
        limit = self.factory.server_class.ws_send_buffer_bytes  # daphne's Server, despite the name
        self.send_backlog = SendBacklog(self, limit)
        # After the upgrade the transport still has daphne's HTTP channel as its producer;
        # nothing else will pause that channel's request again, so the websocket replaces it.
        self.transport.unregisterProducer()
        self.transport.registerProducer(self.send_backlog, True)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Every frame autobahn writes (messages, pings, pongs, close) passes here."""
        backlog = self.send_backlog
        lagging = backlog is not None and backlog.paused  # before: the write that fills it is not counted
        super().sendData(data, sync, chopsize)
        if lagging and not self.dropped_for_backlog:
            backlog.written(len(data))

    def send_backlog_exceeded(self, unread: int) -> None:
        self.dropped_for_backlog = True
        client = getattr(self, "client_addr", None)
        request = getattr(self, "request", None)
        log.warning(
            "websocket %s %s dropped: it left %d bytes unread (WS_SEND_BUFFER_BYTES is %d)",
            f"{client[0]}:{client[1]}" if client else "-",
            request.path if request is not None else "-",
            unread,
            self.send_backlog.limit,
        )
        self.wasClean = False
        self.wasNotCleanReason = "the peer did not read what was sent to it"
        # Abort: discard the buffer and reset, rather than queue a close frame behind it.
        self.dropConnection(abort=True)


class SendBoundedServer(Server):
    """daphne's Server, whose websockets are SendBoundedWebSocketProtocol."""

    def __init__(self, *args, ready_callable=None, **kwargs):
        from django.conf import settings  # configured: the CLI has imported the application

        # daphne closes a socket (1009) on a message over its own limit, 1 MiB unless told,
        # before the app sees it. The app answers `too_large` and keeps the socket up to
        # WS_MAX_FRAME_BYTES, so daphne's limits sit above that (an operator may raise them).
        room = 2 * settings.WS_MAX_FRAME_BYTES
        for name in ("websocket_max_message_size", "websocket_max_frame_size"):
            kwargs[name] = max(kwargs.get(name) or 0, room)
        self._then_ready = ready_callable
        super().__init__(*args, ready_callable=self._install_send_bound, **kwargs)

    def _install_send_bound(self) -> None:
        # Called by Server.run() once its factories exist, before the reactor runs.
        from django.conf import settings

        factory = getattr(self, "ws_factory", None)
        if not isinstance(factory, WebSocketFactory) or not issubclass(factory.protocol, WebSocketProtocol):
            raise RuntimeError(
                "chatsite.server: this daphne version builds its websocket factory differently; "
                "the send bound cannot be installed (see chatsite/server.py)"
            )
        self.ws_send_buffer_bytes = settings.WS_SEND_BUFFER_BYTES
        factory.protocol = SendBoundedWebSocketProtocol
        if settings.WS_COMPRESSION:
            factory.setProtocolOptions(perMessageCompressionAccept=_accept_deflate)
        _install_drain()
        if self._then_ready is not None:
            self._then_ready()


def _accept_deflate(offers):
    """Accept a browser's permessage-deflate offer, with a small window and little memory.

    A reply's deltas are small frames whose envelope (type, message id, offset) repeats:
    with the context kept between messages it compresses to a few bytes, which is what
    keeps a paced reply's frames near the size of its text. 2^WS_COMPRESSION_WINDOW_BITS
    bytes of window and a low memory level keep each socket's compressor near 12 KiB.
    """
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
    from django.conf import settings

    bits = settings.WS_COMPRESSION_WINDOW_BITS
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(
                offer, request_max_window_bits=bits if offer.accept_max_window_bits else 0,
                window_bits=bits, mem_level=settings.WS_COMPRESSION_MEM_LEVEL,
            )
    return None


def _install_drain() -> None:
    """SIGTERM drains before the reactor stops; a sweeper of dead replies runs alongside."""
    from twisted.internet import reactor

    # Twisted installs its signal handlers when the reactor starts, from this attribute.
    reactor.sigTerm = _on_sigterm
    reactor.callWhenRunning(_start_sweeper)


_drain_task: asyncio.Task | None = None


def _on_sigterm(number, frame) -> None:
    from twisted.internet import reactor

    reactor.callFromThread(_drain_then_stop)


def _drain_then_stop() -> None:
    global _drain_task
    from conversations.chat import drain

    if _drain_task is not None:
        log.warning("a second SIGTERM: interrupting the replies still running")
        drain.hurry()
        return
    _drain_task = asyncio.get_event_loop().create_task(_drain())


async def _drain() -> None:
    from django.conf import settings
    from twisted.internet import reactor

    from conversations.chat import drain

    try:
        await drain.drain(settings.DRAIN_SECONDS)
    except Exception:
        log.exception("draining failed; stopping anyway")
    finally:
        reactor.stop()


def _start_sweeper() -> None:
    from conversations.chat import sweeper

    asyncio.get_event_loop().create_task(sweeper.run())


class SendBoundedCommandLineInterface(CommandLineInterface):
    description = "daphne with a bound on each websocket's unread bytes (chatsite/server.py)"
    server_class = SendBoundedServer

    def __init__(self):
        super().__init__()
        self.parser.prog = "python -m chatsite.server"


if __name__ == "__main__":
    SendBoundedCommandLineInterface.entrypoint()
