"""The upstream client's connection pool: work per request that does not grow with the load.

httpcore's own pool re-plans every connection and every queued request each time a
request starts or a response closes (`_assign_requests_to_connections`), and asks
each connection whether it has expired, a system call per idle socket. With a
hundred streams in flight that is tens of thousands of steps per event, and a
burst of a hundred sends waited most of a second before their requests left.

`LinearPool` keeps the same connections (httpcore's, HTTP/1.1, made with the pool's
network backend, which for the upstream client is the SSRF guard) and only its own
bookkeeping changes:

- Idle connections wait per origin in a deque. A request takes the most recently
  used one, and only that one is checked (`has_expired()`: its keep-alive time,
  and whether the server closed it); a failing one is closed and the next tried.
- Expired idle connections are swept at most once a second, on a request or a
  release, never by a background task.
- Idle connections beyond `max_keepalive_connections` are closed as they come
  back, the oldest of their origin first.
- At `max_connections`, requests wait in one FIFO queue. A connection coming
  back goes straight to the first waiter (closed and replaced by a new one when
  the waiter wants another origin); a connection that closed gives its place to
  the first waiter. A waiter that is cancelled or runs out of time leaves its
  place to the next, including a connection handed to it as it gave up.

Everything that changes the pool's state runs without awaiting, so a
cancellation can only land before or after it; connections leave the books first
and are closed afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import time
import typing

import anyio
import httpcore
from httpcore import AsyncConnectionInterface, Origin, Request, Response

SWEEP_SECONDS = 1.0  # the longest an expired idle connection stays open while the pool is used


# httpcore's Origin compares by value but is not hashable.
OriginKey = tuple[bytes, bytes, int]


def _key(origin: Origin) -> OriginKey:
    return origin.scheme, origin.host, origin.port


class _Waiter(typing.NamedTuple):
    origin: Origin
    granted: asyncio.Future  # the connection this request may use


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's AsyncConnectionPool with O(1) bookkeeping per request (HTTP/1.1 only)."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("http2"):
            raise ValueError("LinearPool hands one request at a time to a connection: HTTP/1.1 only")
        super().__init__(*args, **kwargs)
        self._idle: dict[OriginKey, collections.deque[AsyncConnectionInterface]] = {}
        self._idle_count = 0
        self._open: dict[AsyncConnectionInterface, OriginKey] = {}  # every connection holding a place
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        self._closed = False

    @property
    def connections(self) -> list[AsyncConnectionInterface]:
        return list(self._open)

    async def handle_async_request(self, request: Request) -> Response:
        scheme = request.url.scheme.decode()
        if scheme == "":
            raise httpcore.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol.")
        if scheme not in ("http", "https", "ws", "wss"):
            raise httpcore.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
        timeout = request.extensions.get("timeout", {}).get("pool", None)
        origin = request.url.origin
        while True:
            connection = await self._acquire(origin, timeout)
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await self._release(connection)  # it refused the request after all: take another
                continue
            except BaseException:
                await self._release(connection)
                raise
            break
        return Response(
            status=response.status,
            headers=response.headers,
            content=_PooledStream(response.stream, self, connection),
            extensions=response.extensions,
        )

    # ------------------------------------------------------------------ taking a connection

    async def _acquire(self, origin: Origin, timeout: float | None) -> AsyncConnectionInterface:
        if self._closed:
            raise httpcore.ConnectError("the connection pool is closed")
        closing = self._sweep_if_due()
        connection = None
        key = _key(origin)
        idle = self._idle.get(key)
        while idle and connection is None:
            candidate = self._take_idle(key, idle)
            if candidate.is_available() and not candidate.has_expired():
                connection = candidate
            else:
                closing.append(self._discard(candidate))
        if connection is None and not self._has_live_waiter():
            if len(self._open) < self._max_connections:
                connection = self._new(origin)
            elif self._idle_count:  # full, but with idle connections to other origins: replace one
                other = next(iter(self._idle))
                closing.append(self._forget(self._take_idle(other, self._idle[other], oldest=True)))
                connection = self._new(origin)
        try:
            await self._close(closing)
        except BaseException:  # cancelled while closing others (a shield does not stop asyncio's cancel)
            if connection is not None:
                await self._release(connection)
            raise
        if connection is not None:
            return connection
        return await self._wait(origin, timeout)

    async def _wait(self, origin: Origin, timeout: float | None) -> AsyncConnectionInterface:
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(origin, granted))
        try:
            async with asyncio.timeout(timeout):
                return await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                await self._release(granted.result())  # handed over as this request gave up: pass it on
            else:
                granted.cancel()  # skipped when its turn comes
            if isinstance(exc, TimeoutError):
                raise httpcore.PoolTimeout("no connection became free in time") from None
            raise

    def _has_live_waiter(self) -> bool:
        while self._waiters and self._waiters[0].granted.done():
            self._waiters.popleft()
        return bool(self._waiters)

    def _next_waiter(self) -> _Waiter | None:
        return self._waiters.popleft() if self._has_live_waiter() else None

    # ------------------------------------------------------------------ giving it back

    async def _release(self, connection: AsyncConnectionInterface) -> None:
        """A request is done with `connection`: reuse it, hand it on, or close it."""
        closing = self._sweep_if_due()
        if connection not in self._open:
            pass  # the pool was closed meanwhile, or it was already given back
        elif self._closed or not connection.is_available() or connection.has_expired():
            closing.append(self._discard(connection))
        else:
            waiter = self._next_waiter()
            if waiter is None:
                closing.extend(self._keep_idle(connection))
            elif _key(waiter.origin) == self._open[connection]:
                waiter.granted.set_result(connection)
            else:
                closing.append(self._forget(connection))
                waiter.granted.set_result(self._new(waiter.origin))
        await self._close(closing)

    def _keep_idle(self, connection: AsyncConnectionInterface) -> list[AsyncConnectionInterface]:
        key = self._open[connection]
        idle = self._idle.setdefault(key, collections.deque())
        idle.append(connection)
        self._idle_count += 1
        if self._idle_count <= self._max_keepalive_connections:
            return []
        return [self._discard(self._take_idle(key, idle, oldest=True))]

    def _take_idle(self, key: OriginKey, idle: collections.deque, oldest: bool = False) -> AsyncConnectionInterface:
        connection = idle.popleft() if oldest else idle.pop()
        self._idle_count -= 1
        if not idle:
            del self._idle[key]
        return connection

    # ------------------------------------------------------------------ places

    def _new(self, origin: Origin) -> AsyncConnectionInterface:
        connection = self.create_connection(origin)
        self._open[connection] = _key(origin)
        return connection

    def _forget(self, connection: AsyncConnectionInterface) -> AsyncConnectionInterface:
        """Stop counting `connection` (its place is being reused at once); the caller closes it."""
        self._open.pop(connection, None)
        return connection

    def _discard(self, connection: AsyncConnectionInterface) -> AsyncConnectionInterface:
        """Stop counting `connection` and give its place to the first waiter; the caller closes it."""
        self._forget(connection)
        if not self._closed:
            waiter = self._next_waiter()
            if waiter is not None:
                waiter.granted.set_result(self._new(waiter.origin))
        return connection

    def _sweep_if_due(self) -> list[AsyncConnectionInterface]:
        now = time.monotonic()
        if now < self._next_sweep:
            return []
        self._next_sweep = now + SWEEP_SECONDS
        closing = []
        for key, idle in list(self._idle.items()):
            keep, expired = [], []
            for connection in idle:
                usable = connection.is_available() and not connection.has_expired()
                (keep if usable else expired).append(connection)
            if not expired:
                continue
            self._idle_count -= len(expired)
            if keep:
                self._idle[key] = collections.deque(keep)
            else:
                del self._idle[key]
            closing.extend(self._discard(connection) for connection in expired)
        return closing

    async def _close(self, connections: list[AsyncConnectionInterface]) -> None:
        if not connections:
            return
        with anyio.CancelScope(shield=True):
            for connection in connections:
                if not connection.is_closed():
                    await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        closing = list(self._open)
        self._open.clear()
        self._idle.clear()
        self._idle_count = 0
        while self._waiters:
            granted = self._waiters.popleft().granted
            if not granted.done():
                granted.set_exception(httpcore.ConnectError("the connection pool is closed"))
        await self._close(closing)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} [{len(self._open)} connections, {self._idle_count} idle, "
                f"{sum(not waiter.granted.done() for waiter in self._waiters)} waiting]>")


class _PooledStream:
    """A response's body; closing it gives the connection back to the pool."""

    def __init__(self, stream: typing.AsyncIterable[bytes], pool: LinearPool,
                 connection: AsyncConnectionInterface):
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                if hasattr(self._stream, "aclose"):
                    await self._stream.aclose()
        finally:
            await self._pool._release(self._connection)
