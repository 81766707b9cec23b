"""The one seam to the model server: OpenAI-compatible Chat Completions over httpx.

Every outbound call goes through here, so timeouts, retries and the mapping of
every failure to one of the protocol's error codes live in one place. Nothing
here touches the database or the channel layer.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from httpx_sse import EventSource, SSEError

from conversations.upstream import netguard

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests; the key never appears in repr, logs or errors.

    `provider` names it for records ("" is the default provider, OPENAI_BASE_URL);
    `allow_private` trusts its host even on a private address (a staff decision).
    """

    base_url: str
    api_key: str = field(default="", repr=False)
    provider: str = ""
    allow_private: bool = False

    @classmethod
    def default(cls) -> Endpoint:
        return cls(settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY)

    def trusted(self):
        """While set, the SSRF guard lets this endpoint's own host through (when staff allowed it)."""
        return netguard.trusted_base_url.set(self.base_url if self.allow_private else None)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


FINISH_REASON_MAX = 64  # Message.finish_reason's max_length


class UpstreamError(Exception):
    """A failure of the model server, mapped to a protocol error code.

    `detail` says which failure it was (`reason`) and what the member's words
    need (chat/errors.py makes them): the HTTP status, a wait, the model
    server's own message (scrubbed of anything key-like). No English here.
    """

    def __init__(self, code: str, reason: str | None = None, *, status: int | None = None,
                 retry_after: float | None = None, retryable: bool = False, **detail):
        super().__init__(f"{code} ({reason or 'no reason'}{f', HTTP {status}' if status else ''})")
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.detail = {key: value for key, value in detail.items() if value not in (None, "")}
        if reason:
            self.detail["reason"] = reason
        if status is not None:
            self.detail["status"] = status


@dataclass(slots=True)
class Chunk:
    """One parsed stream event: any of content, reasoning, finish_reason, usage and logprobs."""

    content: str = ""
    reasoning: str = ""  # `reasoning_content` (DeepSeek, vLLM, Qwen) or `reasoning` (Ollama, others)
    finish_reason: str | None = None
    usage: dict | None = None
    logprobs: list | None = None  # choices[0].logprobs.content: one entry per token


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def client() -> httpx.AsyncClient:
    """One pooled client per event loop (httpx pools are bound to their loop)."""
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None or existing.is_closed:
        existing = httpx.AsyncClient(
            # Every connection goes through the SSRF guard (netguard.GuardedBackend).
            # Keep connections for a minute: httpx's default 5 s makes every burst reconnect.
            transport=netguard.GuardedTransport(
                limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=60),
            ),
            timeout=httpx.Timeout(
                connect=settings.UPSTREAM_CONNECT_TIMEOUT,
                read=settings.UPSTREAM_READ_TIMEOUT,
                write=30.0,
                pool=settings.UPSTREAM_CONNECT_TIMEOUT,
            ),
            # Never: a redirect could lead anywhere; a 3xx is reported as an error (error_from_object).
            follow_redirects=False,
        )
        _clients[loop] = existing
    return existing


async def stream_chat(endpoint: Endpoint, body: dict) -> AsyncIterator[Chunk]:
    """Stream a chat completion, retrying only before the first token.

    Raises UpstreamError for every failure, including a stream that ends
    without `data: [DONE]`. Use with contextlib.aclosing so that a stop
    closes the upstream connection at once.
    """
    attempt = 0
    while True:
        started = False
        try:
            async for chunk in _stream_once(endpoint, body):
                started = True
                yield chunk
            return
        except UpstreamError as error:
            if not started and "stream_options" in body and _refuses_stream_options(error):
                # Some servers reject the field that asks for usage: ask again without it
                # (usage is then estimated, chat/replies.py). Once: the body no longer has it.
                log.info("upstream refused stream_options; asking again without it")
                body = {key: value for key, value in body.items() if key != "stream_options"}
                continue
            wait = _retry_wait(error, attempt)
            if started or wait is None:
                raise
            attempt += 1
            log.info("upstream %s; retry %d in %.1fs", error, attempt, wait)
            await asyncio.sleep(wait)


def _refuses_stream_options(error: UpstreamError) -> bool:
    said = str(error.detail.get("upstream_message") or "").lower()
    return error.status in (400, 422) and ("stream_options" in said or "include_usage" in said)


def _retry_wait(error: UpstreamError, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when the error is final."""
    if not error.retryable or attempt >= settings.UPSTREAM_MAX_RETRIES:
        return None
    wait = error.retry_after if error.retry_after is not None else 0.5 * 2**attempt
    if wait > settings.UPSTREAM_MAX_RETRY_WAIT:
        return None  # the server asks for longer than a member will wait
    return wait


async def _stream_once(endpoint: Endpoint, body: dict) -> AsyncIterator[Chunk]:
    url = f"{endpoint.base_url}/chat/completions"
    endpoint.trusted()  # this task's requests: a context variable, so no reset is needed
    try:
        async with client().stream("POST", url, json=body, headers=endpoint.headers()) as response:
            if response.status_code != 200:
                await response.aread()
                raise error_from_response(response, endpoint)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                # Some servers ignore stream: true (or label the answer oddly): take it whole.
                body = await response.aread()
                try:
                    answer = _json_or_error(body)
                except UpstreamError:
                    raise UpstreamError("upstream_error", "not_a_stream") from None
                yield _chunk_from_completion(answer, endpoint)
                return
            async for sse in EventSource(response).aiter_sse():
                data = sse.data
                if data == "[DONE]":
                    return
                if not data:
                    continue
                yield _chunk_from_event(_json_or_error(data), endpoint)
    except netguard.Blocked as blocked:
        raise blocked_error(blocked) from None
    except SSEError:
        raise UpstreamError("upstream_error", "not_a_stream") from None
    except httpx.ConnectTimeout:
        raise UpstreamError("upstream_unavailable", "connect_timeout", retryable=True) from None
    except httpx.TimeoutException:
        raise UpstreamError("timeout", "read") from None
    except httpx.ConnectError:
        raise UpstreamError("upstream_unavailable", "connect", retryable=True) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        raise UpstreamError("upstream_error", "broke_off") from None
    except httpx.HTTPError as exc:
        raise UpstreamError("upstream_error", "transport", kind=type(exc).__name__) from None
    raise UpstreamError("upstream_error", "no_done")


def blocked_error(blocked: netguard.Blocked) -> UpstreamError:
    """The guard refused the model server's address: a setting to change, never retried."""
    return UpstreamError("upstream_unavailable", "blocked", blocked=blocked.reason)


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _json_or_error(data: str | bytes) -> dict:
    try:
        parsed = json.loads(data)
    except ValueError:
        # Some gateways (and OpenAI's own documentation examples) leave a comma before a
        # closing brace: read it as what it plainly means rather than fail the reply.
        try:
            text = data.decode() if isinstance(data, bytes) else data
            parsed = json.loads(_TRAILING_COMMA.sub(r"\1", text))
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError("upstream_error", "malformed_chunk") from None
    if not isinstance(parsed, dict):
        raise UpstreamError("upstream_error", "malformed_chunk")
    return parsed


def _chunk_from_event(event: dict, endpoint: Endpoint) -> Chunk:
    """One SSE event. Tolerant: a first chunk with only `role`, empty or null deltas, a `message`
    where a `delta` belongs (gateways), extra fields, any finish_reason word."""
    if "error" in event or event.get("success") is False:
        raise error_from_object(event.get("error"), None, endpoint, trace_id=event.get("trace_id"))
    usage = event.get("usage")
    chunk = Chunk(usage=usage if isinstance(usage, dict) and usage else None)
    choices = event.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        _fill(chunk, delta, choice)
    return chunk


def _fill(chunk: Chunk, part: dict, choice: dict) -> None:
    """Content, reasoning, finish_reason and logprobs of a delta (or message) and its choice."""
    content = part.get("content")
    if isinstance(content, str):
        chunk.content = content
    reasoning = part.get("reasoning_content")
    if not isinstance(reasoning, str):
        reasoning = part.get("reasoning")
    if isinstance(reasoning, str):
        chunk.reasoning = reasoning
    chunk.finish_reason = _finish_reason(choice.get("finish_reason"))
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
        chunk.logprobs = logprobs["content"]


def _finish_reason(value) -> str | None:
    """The model's word, as text that fits its column (the row's final write must not fail on it)."""
    return value[:FINISH_REASON_MAX] if isinstance(value, str) and value else None


def _chunk_from_completion(completion: dict, endpoint: Endpoint) -> Chunk:
    """A whole answer (a server that ignores `stream: true`), whatever its `object` says."""
    if "error" in completion or completion.get("success") is False:
        raise error_from_object(completion.get("error"), None, endpoint, trace_id=completion.get("trace_id"))
    try:
        choice = completion["choices"][0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else choice.get("delta")
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("upstream_error", "no_choices") from None
    usage = completion.get("usage")
    chunk = Chunk(usage=usage if isinstance(usage, dict) and usage else None)
    _fill(chunk, message, choice)
    chunk.finish_reason = chunk.finish_reason or "stop"
    return chunk


def error_from_response(response: httpx.Response, endpoint: Endpoint) -> UpstreamError:
    """OpenAI's `{"error": {...}}`, a gateway's `{"success": false, "error": {...}, "trace_id"}`,
    or any other body (its text is the model server's words)."""
    trace_id = None
    try:
        payload = response.json()
    except ValueError:
        detail = response.text.strip()
    else:
        detail = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(payload, dict):
            trace_id = payload.get("trace_id")
            if detail is None and isinstance(payload.get("message"), str):
                detail = {"message": payload["message"], "code": payload.get("code")}
    error = error_from_object(detail, response.status_code, endpoint, trace_id=trace_id)
    error.retry_after = _parse_retry_after(response.headers.get("retry-after"))
    if error.code == "upstream_rate_limited" and error.retry_after is not None:
        error.detail.update(reason="retry_after", retry_after=math.ceil(error.retry_after))
    return error


def error_from_object(detail, status: int | None, endpoint: Endpoint, trace_id=None) -> UpstreamError:
    """Map an HTTP status and/or an error object to a protocol error, keeping the model server's
    own words (scrubbed of anything secret) and a gateway's trace id for staff."""
    error = _map_error(detail, status, endpoint)
    if isinstance(trace_id, str | int) and str(trace_id).strip():
        error.detail["trace_id"] = _scrub(str(trace_id), endpoint)[:100]
    return error


def _map_error(detail, status: int | None, endpoint: Endpoint) -> UpstreamError:
    if not isinstance(detail, dict):
        detail = {"message": detail if isinstance(detail, str) else ""}
    code = str(detail.get("code") or detail.get("type") or "")
    said = _scrub(str(detail.get("message") or ""), endpoint)
    retryable = status in RETRYABLE_STATUSES and code != "insufficient_quota"

    if status in (401, 403) or code in ("invalid_api_key", "authentication_error", "invalid_token"):
        # Their words can quote part of the key: shown only scrubbed (masked keys, key-like words).
        return UpstreamError("upstream_auth", status=status, upstream_message=said)
    if code == "insufficient_quota":
        return UpstreamError("quota", status=status, upstream_message=said)
    if status == 413 or code == "context_length_exceeded":
        return UpstreamError("too_large", "context", status=status, upstream_message=said)
    if status == 429 or code == "rate_limit_exceeded":
        return UpstreamError("upstream_rate_limited", status=status, retryable=retryable, upstream_message=said)
    if status == 408:
        return UpstreamError("timeout", "status", status=status, retryable=True)
    if status is not None and 300 <= status < 400:
        # Redirects are never followed: one could lead to an address the guard would refuse.
        return UpstreamError("upstream_error", "redirect", status=status)
    if status is not None and status >= 500:
        return UpstreamError("upstream_unavailable", "status", status=status, retryable=retryable,
                             upstream_message=said)
    if status is not None:
        return UpstreamError("upstream_error", "rejected", status=status, upstream_message=said)
    return UpstreamError("upstream_error", "reported", upstream_message=said)


_KEY_PATTERN = re.compile(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)
_MASKED = re.compile(r"\S*(\*{3,}|\.{3}|…)\S*")  # "sk-pr****abcd", "sk-pr...abcd": masked keys show their ends
_BEARER = re.compile(r"(bearer|token|authorization)\s*[:=]?\s*\S{8,}", re.IGNORECASE)


def _scrub(text: str, endpoint: Endpoint) -> str:
    """Upstream text is shown to members: strip anything key-like, keep it short."""
    if endpoint.api_key:
        text = text.replace(endpoint.api_key, "[redacted]")
        if len(endpoint.api_key) >= 12:  # pieces of it: its start and its end
            text = text.replace(endpoint.api_key[:8], "[redacted]").replace(endpoint.api_key[-6:], "[redacted]")
    text = _MASKED.sub("[redacted]", text)
    text = _KEY_PATTERN.sub("[redacted]", text)
    text = _BEARER.sub(r"\1 [redacted]", text)
    return " ".join(text.split())[:300]


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
