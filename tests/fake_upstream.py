"""A scriptable fake OpenAI-compatible Chat Completions server (stdlib only).

It is a real HTTP/1.1 server on loopback that streams real SSE, so tests,
the demo and the benchmark can exercise a relay against every kind of
upstream fault.

Scripting
---------
Each ``POST /v1/chat/completions`` runs a *script*: the server's
``default_script`` updated by a directive found in the text of the LAST
``role: "user"`` message.  A directive is ``fake:`` immediately followed by a
JSON object, anywhere in the text::

    Tell me a story fake:{"tokens": 3, "delay": 0.01}
    fake:{"status": 429, "retry_after": 1, "fail_times": 1} hello
    fake:{"text": "Hello  world!\\n", "cut_after": 1}

Keys (all optional): ``tokens`` (default 12), ``text``, ``delay``,
``first_delay``, ``status``, ``error_code``, ``retry_after``, ``fail_times``, ``reject_stream_options``
(answer 400 to a request that has ``stream_options``, as some servers do), ``raw``
(``{"status", "content_type", "body"}``: answer with these bytes as they are, e.g. a real server's),
``reasoning`` (text streamed as ``reasoning_content`` deltas before the answer; ``reasoning_key``
names another field, e.g. ``reasoning``). A request with ``logprobs`` gets made-up logprobs per token.
``cut_after``, ``error_after``, ``stall_after``, ``stall`` (default 3600),
``malformed_after``, ``no_done``, ``no_stream``, ``finish_reason`` (default
"stop"), ``drop_usage``, ``redirect`` (a ``Location`` to answer with, status
``status`` or 307), ``error_message`` (the text of an error answer or of an
error object mid-stream; ``{key}`` becomes the API key the request presented,
as real servers echo a wrong key back).  ``*_after`` values count content chunks already
written; a value beyond the number of chunks applies after the last one.

Without ``text`` the reply is ``"You said: <user text> "`` followed by
``"w1 "``, ``"w2 "``, ... (``tokens`` chunks in all).

Usage::

    with FakeUpstream() as up:
        client = openai.OpenAI(base_url=up.base_url, api_key="x")
        ...
        assert up.requests[0]["finished"]

Each request is recorded (``up.requests``, or ``GET /_fake/requests``) with its
``body``, ``headers``, ``script``, ``streamed_text``, ``finished``, ``peer`` (the
client's port, the same for requests that shared a connection),
``received_at`` (``time.time()`` once the request's body had been read) and
``first_chunk_at`` (``time.time()`` just before the first content chunk was
written, ``None`` if none was). The benchmark uses the two to split the time to
first token a relay adds: before the upstream request, and after the first chunk.

An unpaced stream with no fault scripted (no ``delay``, ``first_delay`` or
``*_after``) is written in a few large writes rather than one per chunk, so a
benchmark's relay, not this server, is what runs out of CPU first. The bytes on
the wire are the same: one HTTP chunk per SSE event.

or as a process: ``python -m tests.fake_upstream --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import logging
import re
import signal
import threading
import time
import uuid
from typing import Any

__all__ = ["FakeUpstream", "main"]

log = logging.getLogger(__name__)

DIRECTIVE_MARKER = "fake:"
_WORD_RE = re.compile(r"\S+\s*")
_JSON_DECODER = json.JSONDecoder()

_DONE_FRAME_DATA = b"data: [DONE]\n\n"
_MALFORMED_DATA = b"data: {not json\n\n"
_LAST_CHUNK = b"0\r\n\r\n"
# An unpaced stream is written in slices of this size (see FakeUpstream._write_whole).
_BULK_WRITE_BYTES = 256 * 1024


class _ClientGone(Exception):
    """The client disconnected while we were answering."""


class _BadRequest(Exception):
    """Malformed HTTP framing; answer 400 and close."""


def _frame(data: bytes) -> bytes:
    """Wrap ``data`` in one HTTP/1.1 chunked-encoding chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _error_body(message: str, type_: str, code: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _error_message(script: dict[str, Any], rec: dict[str, Any]) -> str | None:
    """The ``error_message`` directive, with ``{key}`` replaced by the presented API key."""
    template = script.get("error_message")
    if template is None:
        return None
    presented = rec["headers"].get("authorization", "").removeprefix("Bearer ")
    return str(template).replace("{key}", presented)


def _error_type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _content_text(content: Any) -> str:
    """Text of a message content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def parse_directive(text: str) -> tuple[dict[str, Any] | None, str, str]:
    """Find a ``fake:{...}`` directive in ``text``.

    Returns ``(directive or None, directive JSON text, stripped text without the directive)``.
    An unparsable directive is ignored (left in the text).
    """
    start = text.find(DIRECTIVE_MARKER + "{")
    while start != -1:
        brace = start + len(DIRECTIVE_MARKER)
        try:
            obj, end = _JSON_DECODER.raw_decode(text, brace)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return obj, text[brace:end], (text[:start] + text[end:]).strip()
        start = text.find(DIRECTIVE_MARKER + "{", start + 1)
    return None, "", text.strip()


def split_text(text: str) -> list[str]:
    """Split into whitespace-delimited words, each keeping its trailing whitespace.

    ``"".join(split_text(t)) == t`` always holds.
    """
    pieces = _WORD_RE.findall(text)
    if not pieces:
        return [text] if text else []
    lead = len(text) - len(text.lstrip())
    if lead:
        pieces[0] = text[:lead] + pieces[0]
    return pieces


class FakeUpstream:
    """Fake OpenAI-compatible server running in a daemon thread with its own event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        default_script: dict[str, Any] | None = None,
        model: str = "fake-model",
        models: list[str] | None = None,
    ) -> None:
        """`models`: what GET /v1/models lists (default: `model` alone)."""
        self.host = host
        self.port = port
        self.api_key = api_key
        self.default_script: dict[str, Any] = dict(default_script or {})
        self.model = model
        self.models = list(models or [model])
        self.requests: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._fail_counts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeUpstream:
        """Start listening in a daemon thread; return ``self`` once the socket is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle_connection, self.host, self.port, backlog=2048)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # bind failure: report to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (stalled streams included)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=2.0)
            except Exception:  # timeout or loop already stopping: force it down below
                pass
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        thread.join(timeout=2.0)
        self._thread = None
        self._loop = None
        self._server = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    def drop_connections(self) -> None:
        """Close every open connection from this side, as a server ending idle keep-alives does."""
        async def drop() -> None:
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            for writer in writers:
                try:
                    await writer.wait_closed()  # the FIN has been sent when this returns
                except Exception:
                    pass

        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=5.0)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection

    def reset(self) -> None:
        """Forget recorded requests and ``fail_times`` counters."""
        with self._cond:
            self.requests.clear()
            self._fail_counts.clear()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` chat completion requests arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {n} requests, got {len(self.requests)}")
                self._cond.wait(remaining)
            return list(self.requests)

    def _record(self, rec: dict[str, Any]) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            peer = writer.get_extra_info("peername")
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                request["peer"] = peer[1] if isinstance(peer, tuple) else None
                if not await self._dispatch(request, reader, writer):
                    break
        except _BadRequest as exc:
            try:
                await self._send_json(writer, 400, _error_body(str(exc), "invalid_request_error"), keep_alive=False)
            except Exception:
                pass
        except (_ClientGone, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly
        except Exception:
            log.exception("fake upstream: unexpected error")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any] | None:
        """Read one request; ``None`` on a clean EOF between requests."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("incomplete request head") from None
            return None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest("bad request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest("bad header line")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked_body(reader)
        else:
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise _BadRequest("bad Content-Length") from None
            body = await reader.readexactly(length) if length > 0 else b""
        received_at = time.time()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version.upper() != "HTTP/1.0" or "keep-alive" in connection)
        return {
            "method": method.upper(),
            "path": target.split("?", 1)[0],
            "headers": headers,
            "body": body,
            "keep_alive": keep_alive,
            "received_at": received_at,
        }

    @staticmethod
    async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        obj: Any,
        keep_alive: bool,
        extra_headers: list[tuple[str, str]] | None = None,
        rec: dict[str, Any] | None = None,
    ) -> bool:
        body = json.dumps(obj).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep_alive else "close"),
        ]
        headers += extra_headers or []
        await self._write(writer, self._head(status, headers) + body, rec)
        return keep_alive

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes, finishes: dict[str, Any] | None = None) -> None:
        """Write and drain. ``finishes``: a request record whose final bytes these are.

        It is marked finished just before the bytes are handed to the transport, so a client
        that has read the whole response always sees ``finished`` set (the send releases the GIL).
        """
        if writer.transport.is_closing():
            raise _ClientGone()
        if finishes is not None:
            finishes["finished"] = True
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError:
            raise _ClientGone() from None

    def _authorized(self, headers: dict[str, str]) -> bool:
        return self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}"

    async def _dispatch(self, req: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; return whether the connection may be reused."""
        method, path, keep = req["method"], req["path"].rstrip("/") or "/", req["keep_alive"]
        if method == "POST" and path == "/v1/chat/completions":
            return await self._chat_completions(req, reader, writer)
        if method == "GET" and path == "/v1/models":
            if not self._authorized(req["headers"]):
                return await self._send_unauthorized(writer, keep)
            models = {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                                                  for name in self.models]}
            return await self._send_json(writer, 200, models, keep)
        if method == "GET" and path == "/_fake/requests":
            with self._cond:
                snapshot = list(self.requests)
            return await self._send_json(writer, 200, snapshot, keep)
        if method == "POST" and path == "/_fake/reset":
            self.reset()
            return await self._send_json(writer, 200, {"ok": True}, keep)
        return await self._send_json(
            writer, 404, _error_body(f"Unknown request URL: {method} {req['path']}", "invalid_request_error", "unknown_url"), keep
        )

    async def _send_unauthorized(
        self, writer: asyncio.StreamWriter, keep: bool, rec: dict[str, Any] | None = None
    ) -> bool:
        body = _error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        return await self._send_json(writer, 401, body, keep, rec=rec)

    # ------------------------------------------------------------------ chat completions

    def _effective_script(self, body: Any) -> tuple[dict[str, Any], str, str]:
        """Return ``(script, directive JSON text, user text)`` for a request body."""
        user_raw = ""
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    user_raw = _content_text(message.get("content"))
                    break
        directive, directive_text, user_text = parse_directive(user_raw)
        script = dict(self.default_script)
        if directive:
            script.update(directive)
        return script, directive_text, user_text

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        chars = 0
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                chars += len(_content_text(message.get("content")))
        return (chars + 3) // 4

    @staticmethod
    def _reply_pieces(script: dict[str, Any], user_text: str) -> list[str]:
        text = script.get("text")
        if text is not None:
            return split_text(str(text))
        tokens = int(script.get("tokens", 12))
        if tokens <= 0:
            return []
        return [f"You said: {user_text[:200]} "] + [f"w{i} " for i in range(1, tokens)]

    async def _chat_completions(
        self, req: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        keep = req["keep_alive"]
        rec: dict[str, Any] = {
            "body": None,
            "headers": req["headers"],
            "script": {},
            "streamed_text": "",
            "finished": False,
            "received_at": req["received_at"],  # time.time() once the body had been read
            "peer": req.get("peer"),  # the client's port: requests with the same one shared a connection
            "first_chunk_at": None,  # time.time() just before the first content chunk is written
        }
        try:
            body = json.loads(req["body"] or b"null")
            if not isinstance(body, dict):
                raise ValueError("request body must be a JSON object")
        except ValueError as exc:
            rec["finished"] = True
            self._record(rec)
            return await self._send_json(
                writer, 400, _error_body(f"We could not parse the JSON body of your request: {exc}", "invalid_request_error"), keep
            )
        script, directive_text, user_text = self._effective_script(body)
        rec["body"], rec["script"] = body, script
        self._record(rec)
        try:
            if not self._authorized(req["headers"]):
                return await self._send_unauthorized(writer, keep, rec)
            try:
                pieces = self._reply_pieces(script, user_text)
                status = int(script["status"]) if script.get("status") is not None else None
                if script.get("redirect") is not None and status is None:
                    status = 307
                fail_times = int(script["fail_times"]) if script.get("fail_times") is not None else None
                for key in ("cut_after", "error_after", "stall_after", "malformed_after"):
                    if script.get(key) is not None:
                        int(script[key])
                for key in ("delay", "first_delay", "stall"):
                    float(script.get(key) or 0)
            except (TypeError, ValueError) as exc:
                body_ = _error_body(f"bad fake directive: {exc}", "invalid_request_error")
                return await self._send_json(writer, 400, body_, keep, rec=rec)

            if status is not None:
                seen = self._fail_counts.get(directive_text, 0)
                self._fail_counts[directive_text] = seen + 1
                if fail_times is None or seen < fail_times:
                    return await self._send_status(writer, status, script, keep, rec)

            if isinstance(script.get("raw"), dict):  # bytes exactly as a real server sent them (tests/data/seeds)
                raw = script["raw"]
                payload = str(raw.get("body", "")).encode()
                head = self._head(int(raw.get("status", 200)), [
                    ("Content-Type", str(raw.get("content_type", "text/event-stream"))),
                    ("Content-Length", str(len(payload))), ("Connection", "close")])
                rec["streamed_text"] = ""
                await self._write(writer, head + payload, rec)
                return False

            if script.get("reject_stream_options") and "stream_options" in body:
                message = "Unrecognized request argument supplied: stream_options"
                return await self._send_json(writer, 400, _error_body(message, "invalid_request_error"), keep, rec=rec)

            model = body.get("model") or self.model
            model = model if isinstance(model, str) else str(model)
            stream_options = body.get("stream_options")
            include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
            if not body.get("stream") or script.get("no_stream"):
                return await self._send_completion(writer, rec, body, script, pieces, model, keep)
            return await self._stream(reader, writer, rec, body, script, pieces, model, include_usage, keep)
        finally:
            rec["finished"] = True

    async def _send_status(
        self, writer: asyncio.StreamWriter, status: int, script: dict[str, Any], keep: bool, rec: dict[str, Any]
    ) -> bool:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        message = _error_message(script, rec) or f"Fake upstream error: HTTP {status} {phrase}"
        body = _error_body(message, _error_type_for(status), script.get("error_code"))
        extra = [("Retry-After", str(script["retry_after"]))] if script.get("retry_after") is not None else []
        if script.get("redirect") is not None:
            extra.append(("Location", str(script["redirect"])))
        return await self._send_json(writer, status, body, keep, extra, rec)

    async def _send_completion(
        self,
        writer: asyncio.StreamWriter,
        rec: dict[str, Any],
        body: dict[str, Any],
        script: dict[str, Any],
        pieces: list[str],
        model: str,
        keep: bool,
    ) -> bool:
        """Answer a non-streaming ``chat.completion`` (delays are summed up front)."""
        wait = float(script.get("first_delay") or 0) + float(script.get("delay") or 0) * max(len(pieces) - 1, 0)
        if wait > 0:
            await asyncio.sleep(wait)
        content = "".join(pieces)
        prompt_tokens = self._prompt_tokens(body)
        obj: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": script.get("finish_reason", "stop"),
                }
            ],
        }
        if not script.get("drop_usage"):
            obj["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(pieces),
                "total_tokens": prompt_tokens + len(pieces),
            }
        rec["streamed_text"] = content  # sent in a single write
        rec["first_chunk_at"] = time.time()
        return await self._send_json(writer, 200, obj, keep, rec=rec)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rec: dict[str, Any],
        body: dict[str, Any],
        script: dict[str, Any],
        pieces: list[str],
        model: str,
        include_usage: bool,
        keep: bool,
    ) -> bool:
        """Stream SSE chunks, injecting the scripted faults. Returns keep-alive."""
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        # Content chunks are built from a pre-encoded template: only the piece is JSON-encoded.
        prefix = _sse(dict(base, choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": None}]))
        head_part, _, tail_part = prefix.partition(b'"content":""')
        head_part += b'"content":'
        frames = [
            _frame(head_part + json.dumps(piece, ensure_ascii=False).encode() + tail_part) for piece in pieces
        ]
        if body.get("logprobs"):  # each token with a made-up probability and its alternatives
            top = int(body.get("top_logprobs") or 0)
            frames = [_frame(_sse(dict(base, choices=[{
                "index": 0, "delta": {"content": piece}, "finish_reason": None,
                "logprobs": {"content": [{"token": piece, "logprob": -0.1 * (k % 7), "bytes": None,
                                          "top_logprobs": [{"token": f"{piece}~{j}", "logprob": -1.0 - j}
                                                           for j in range(top)]}]},
            }]))) for k, piece in enumerate(pieces)]
        thinking = split_text(str(script["reasoning"])) if script.get("reasoning") else []
        reasoning_key = str(script.get("reasoning_key") or "reasoning_content")  # Ollama says "reasoning"
        thoughts = [_frame(_sse(dict(base, choices=[{"index": 0, "delta": {reasoning_key: piece, "content": None},
                                                      "finish_reason": None}]))) for piece in thinking]

        n = len(frames)

        def trigger(key: str) -> int | None:
            value = script.get(key)
            return None if value is None else max(0, min(int(value), n))

        cut_at, error_at, stall_at, malformed_at = (
            trigger("cut_after"), trigger("error_after"), trigger("stall_after"), trigger("malformed_after"),
        )
        delay = float(script.get("delay") or 0)
        first_delay = float(script.get("first_delay") or 0)

        head = self._head(
            200,
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "keep-alive" if keep else "close"),
                ("X-Request-Id", completion_id),
            ],
        )
        role = _sse(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        tail = _frame(_sse(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": script.get("finish_reason", "stop")}])))
        if include_usage and not script.get("drop_usage"):
            prompt_tokens = self._prompt_tokens(body)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
            tail += _frame(_sse(dict(base, choices=[], usage=usage)))
        if not script.get("no_done"):
            tail += _frame(_DONE_FRAME_DATA)
        tail += _LAST_CHUNK

        faults = (cut_at, error_at, stall_at, malformed_at)
        if not delay and not first_delay and all(at is None for at in faults):
            await self._write_whole(writer, rec, pieces, [head + _frame(role), *thoughts, *frames], tail)
            return keep

        await self._write(writer, head + _frame(role))
        for thought in thoughts:  # the reasoning comes first, as DeepSeek's and Qwen's do
            if delay:
                await asyncio.sleep(delay)
            await self._write(writer, thought)

        for i in range(n + 1):
            if i == malformed_at:
                await self._write(writer, _frame(_MALFORMED_DATA))
            if i == error_at:
                err = {
                    "error": {
                        "message": _error_message(script, rec)
                        or "The server had an error while processing your request",
                        "type": "server_error",
                        "code": script.get("error_code"),
                    }
                }
                await self._write(writer, _frame(_sse(err)) + _LAST_CHUNK, rec)
                return keep
            if i == cut_at:
                rec["finished"] = True
                writer.close()  # flushes what was written, then FIN: no terminating chunk
                return False
            if i == stall_at:
                await self._stall(reader, float(script.get("stall", 3600)))
                writer.transport.abort()
                return False
            if i == n:
                break
            wait = first_delay if i == 0 else delay
            if wait > 0:
                await asyncio.sleep(wait)
            if reader.at_eof():
                raise _ClientGone()
            # Recorded as it is handed to the transport: a fast client may have
            # read it before drain() returns to this thread.
            rec["streamed_text"] += pieces[i]
            if i == 0:
                # The benchmark subtracts this from a client's first token: the time a relay adds.
                rec["first_chunk_at"] = time.time()
            await self._write(writer, frames[i])

        await self._write(writer, tail, rec)
        return keep

    async def _write_whole(
        self, writer: asyncio.StreamWriter, rec: dict[str, Any], pieces: list[str], parts: list[bytes], tail: bytes
    ) -> None:
        """An unpaced, faultless stream: the same bytes as chunk by chunk, in a few large writes.

        One write per chunk is one send() system call per chunk, which at a hundred
        streams at once made this server, not the relay under test, the bottleneck.
        """
        payload = b"".join(parts) + tail
        rec["streamed_text"] = "".join(pieces)
        if pieces:
            rec["first_chunk_at"] = time.time()  # the first content chunk is in the first write
        step = _BULK_WRITE_BYTES
        for start in range(0, len(payload), step):
            last = start + step >= len(payload)
            await self._write(writer, payload[start:start + step], rec if last else None)

    @staticmethod
    async def _stall(reader: asyncio.StreamReader, seconds: float) -> None:
        """Keep the connection open without writing until ``seconds`` pass or the client leaves."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                return
            if not data:
                raise _ClientGone()


def main(argv: list[str] | None = None) -> None:
    """Run a fake upstream in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--tokens", type=int, default=12, help="content chunks per reply (default 12)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between content chunks (default 0)")
    args = parser.parse_args(argv)

    stop_event = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    upstream = FakeUpstream(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        default_script={"tokens": args.tokens, "delay": args.delay},
    ).start()
    print(f"fake upstream listening on {upstream.base_url}", flush=True)
    try:
        while not stop_event.wait(0.5):
            pass
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
