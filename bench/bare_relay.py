"""The smallest honest relay on our stack: the benchmark's "bare relay" baseline.

    python -m bench.bare_relay -b 127.0.0.1 -p PORT

that is, `python -m daphne ... bench.bare_relay:application` on the event loop the
app's daphne runs on (uvloop, unless UVLOOP=false, as chatsite/server.py does).

A plain ASGI app in daphne (no Django, no Channels, no database, no auth, no
channel layer, no coalescing, no compression): a websocket that, for each `send` frame it gets,
streams a Chat Completions request to the upstream with httpx + httpx-sse, as
the app does (same timeouts, same connection limits, same `stream_options`),
and forwards each content chunk to that same socket as a `delta` frame.

Beside the app in the same run, it separates what our features cost (sessions,
the database, Redis fan-out, coalescing, the send bound) from what the stack
costs (daphne, httpx, httpx-sse, json). It speaks just enough of the protocol
for bench/clients.py's relay mode to drive it unchanged: a `snapshot` on
connect, then per reply a `message` (status `streaming`), the `delta` frames
(with `message_id` and `offset`) and `done`; a failure is an `error` frame.

Configured by the app's own environment variables: OPENAI_BASE_URL,
OPENAI_API_KEY, DEFAULT_MODEL, UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_READ_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from httpx_sse import EventSource


@dataclass(frozen=True)
class Upstream:
    base_url: str
    api_key: str = field(default="", repr=False)
    model: str = "fake-model"
    connect_timeout: float = 10.0  # the app's defaults (chatsite/settings.py)
    read_timeout: float = 120.0

    @classmethod
    def from_env(cls) -> Upstream:
        return cls(
            base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1").rstrip("/"),
            api_key=os.environ.get("OPENAI_API_KEY", ""),
            model=os.environ.get("DEFAULT_MODEL", "fake-model"),
            connect_timeout=float(os.environ.get("UPSTREAM_CONNECT_TIMEOUT", "10")),
            read_timeout=float(os.environ.get("UPSTREAM_READ_TIMEOUT", "120")),
        )

    def client(self) -> httpx.AsyncClient:
        """As conversations/upstream/client.py builds its client, less the SSRF guard's transport."""
        return httpx.AsyncClient(
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=60),
            timeout=httpx.Timeout(connect=self.connect_timeout, read=self.read_timeout, write=30.0,
                                  pool=self.connect_timeout),
            follow_redirects=False,
        )

    def request(self, content) -> dict:
        """The request body: the member's text alone (no history, no parameters), usage asked for."""
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


# Frames, in the protocol's shapes (docs/protocol.md), encoded as the app encodes them.


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def snapshot_frame(model: str) -> dict:
    conversation = {"id": str(uuid.uuid4()), "title": "", "model": model, "params": {}}
    return {"type": "snapshot", "conversation": conversation, "messages": [], "active": None}


def message_frame(message_id: str, model: str) -> dict:
    message = {"id": message_id, "role": "assistant", "content": "", "status": "streaming", "parent_id": None,
               "created_at": datetime.now(UTC).isoformat(), "model": model, "finish_reason": None, "usage": None}
    return {"type": "message", "message": message}


def delta_frame(message_id: str, offset: int, content: str) -> dict:
    return {"type": "delta", "message_id": message_id, "offset": offset, "content": content}


def done_frame(message_id: str, finish_reason: str | None, usage: dict | None) -> dict:
    return {"type": "done", "message_id": message_id, "status": "complete", "finish_reason": finish_reason,
            "usage": usage}


def error_frame(message_id: str, message: str) -> dict:
    return {"type": "error", "code": "upstream_error", "message": message, "message_id": message_id}


class BareRelay:
    """The ASGI application. One httpx client per event loop, made on first use."""

    def __init__(self, upstream: Upstream | None = None):
        self._upstream = upstream
        self._client: httpx.AsyncClient | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            self._upstream = Upstream.from_env()
        return self._upstream

    async def aclose(self) -> None:
        """Close the upstream connections (daphne's process simply ends; tests call this)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            await self.websocket(receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"websocket only\n"})

    async def websocket(self, receive, send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})

        async def send_frame(frame: dict) -> None:
            await send({"type": "websocket.send", "text": encode(frame)})

        await send_frame(snapshot_frame(self.upstream.model))
        replies: set[asyncio.Task] = set()
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                if event["type"] != "websocket.receive":
                    continue
                try:
                    frame = json.loads(event.get("text") or event.get("bytes") or b"")
                except ValueError:
                    continue
                if isinstance(frame, dict) and frame.get("type") == "send":
                    task = asyncio.create_task(self.reply(frame.get("content", ""), send_frame))
                    replies.add(task)
                    task.add_done_callback(replies.discard)
        finally:
            for task in replies:  # the socket is gone: so is its reply (no one else would hear it)
                task.cancel()

    async def reply(self, content, send_frame) -> None:
        """One reply: `message`, a `delta` per content chunk as it arrives, then `done` (or `error`)."""
        upstream = self.upstream
        if self._client is None:
            self._client = upstream.client()
        message_id = str(uuid.uuid4())
        await send_frame(message_frame(message_id, upstream.model))
        offset, finish_reason, usage = 0, None, None
        try:
            async with self._client.stream("POST", f"{upstream.base_url}/chat/completions",
                                           json=upstream.request(content), headers=upstream.headers()) as response:
                if response.status_code != 200:
                    await response.aread()
                    await send_frame(error_frame(message_id, f"upstream answered HTTP {response.status_code}"))
                    return
                async for sse in EventSource(response).aiter_sse():
                    if sse.data == "[DONE]":
                        break
                    if not sse.data:
                        continue
                    event = json.loads(sse.data)
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        finish_reason = choice.get("finish_reason") or finish_reason
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            await send_frame(delta_frame(message_id, offset, text))
                            offset += len(text)
                else:
                    await send_frame(error_frame(message_id, "the stream ended without [DONE]"))
                    return
        except (httpx.HTTPError, ValueError) as exc:
            await send_frame(error_frame(message_id, f"{type(exc).__name__}: {exc}"))
            return
        await send_frame(done_frame(message_id, finish_reason, usage))


application = BareRelay()


def main(argv: list[str] | None = None) -> None:
    """daphne's own command line, after choosing the app's event loop (before daphne makes its own)."""
    if os.environ.get("UVLOOP", "true").strip().lower() not in ("0", "false", "no", "off"):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface  # makes the loop and installs twisted's reactor

    CommandLineInterface().run([*(sys.argv[1:] if argv is None else argv), "bench.bare_relay:application"])


if __name__ == "__main__":
    main()
