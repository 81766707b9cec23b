"""The upstream's TCP streams, read with asyncio's timeout instead of an anyio cancel scope.

Why: a streamed reply arrives one SSE chunk per read, and httpcore's anyio
stream enters `anyio.fail_after` (a cancel scope) and an exception-mapping
context for every read. In the profile of 100 paced replies that was about a
tenth of the app's samples (docs/benchmarks.md); on this stack a read with
`asyncio.timeout` costs about a fifth less in all (a probe: one chunk per read).
The meaning is httpcore's: `timeout` seconds without a byte is a ReadTimeout, a
broken or closed socket a ReadError, the peer's end of stream an empty read.
Writes, TLS and closing stay httpcore's own. Only asyncio runs this app, so
asyncio's timeout is the one that applies; a stream that is not httpcore's
anyio stream is read as httpcore reads it.
"""

from __future__ import annotations

import asyncio
import ssl
import typing

import anyio
import httpcore
from httpcore._backends.anyio import AnyIOStream  # what httpcore's AnyIOBackend connects


class QuickReadStream(httpcore.AsyncNetworkStream):
    """One upstream connection: httpcore's stream, with reads of its own."""

    def __init__(self, stream: httpcore.AsyncNetworkStream):
        self._stream = stream
        # anyio's byte stream under httpcore's AnyIOStream (httpcore 1.0 keeps it in `_stream`).
        self._socket = getattr(stream, "_stream", None) if isinstance(stream, AnyIOStream) else None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._socket is None:
            return await self._stream.read(max_bytes, timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self._socket.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data for {timeout} s") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            raise httpcore.ReadError(str(error) or type(error).__name__) from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return QuickReadStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)

