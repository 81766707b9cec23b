"""Tests for the scriptable fake OpenAI-compatible upstream (tests/fake_upstream.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, parse_directive, split_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def chat_body(text: Any, stream: bool = True, include_usage: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}],
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def read_events(response: httpx.Response) -> list[Any]:
    """Parse SSE ``data:`` lines: JSON objects, ``"[DONE]"``, or raw strings for malformed data."""
    events: list[Any] = []
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            events.append("[DONE]")
            continue
        try:
            events.append(json.loads(data))
        except ValueError:
            events.append(data)
    return events


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def stream(client: httpx.Client, base_url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        if response.status_code == 200:
            events = read_events(response)
        else:
            response.read()
            events = []
    return response, events


# ---------------------------------------------------------------- helpers


def test_split_text_roundtrips() -> None:
    for text in ["Hello  world!\n", "  lead and trail  ", "one", "", "   ", "a\tb\nc"]:
        assert "".join(split_text(text)) == text
    assert split_text("Hello  world!\n") == ["Hello  ", "world!\n"]


def test_parse_directive() -> None:
    directive, raw, rest = parse_directive('hi fake:{"tokens": 3, "x": {"y": 1}} there')
    assert directive == {"tokens": 3, "x": {"y": 1}}
    assert raw == '{"tokens": 3, "x": {"y": 1}}'
    assert rest == "hi  there"
    assert parse_directive("no directive fake:{oops")[0] is None


# ---------------------------------------------------------------- streaming


def test_normal_stream(upstream: FakeUpstream, client: httpx.Client) -> None:
    response, events = stream(client, upstream.base_url, chat_body('hello there fake:{"tokens": 5}'))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-test" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    content_chunks = chunks[1:-1]
    assert len(content_chunks) == 5
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert not any("usage" in c for c in chunks)  # no include_usage

    text = content_of(events)
    assert text.startswith("You said: hello there ")
    (rec,) = upstream.wait_for_requests(1)
    assert rec["finished"] is True
    assert rec["streamed_text"] == text
    assert rec["script"] == {"tokens": 5}
    assert rec["body"]["model"] == "gpt-test"
    assert rec["headers"]["content-type"] == "application/json"


def test_usage_chunk_with_include_usage(upstream: FakeUpstream, client: httpx.Client) -> None:
    response, events = stream(
        client, upstream.base_url, chat_body('hi fake:{"tokens": 4, "finish_reason": "length"}', include_usage=True)
    )
    assert events[-1] == "[DONE]"
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4

    _, events = stream(client, upstream.base_url, chat_body('hi fake:{"drop_usage": true}', include_usage=True))
    assert not any(isinstance(e, dict) and "usage" in e for e in events)


def test_text_directive_and_content_parts(upstream: FakeUpstream, client: httpx.Client) -> None:
    reply = "Héllo  wörld,\nhow are   you? "
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "fake:" + json.dumps({"text": reply, "tokens": 99})},
    ]
    _, events = stream(client, upstream.base_url, chat_body(parts))
    content_chunks = [e for e in events if isinstance(e, dict) and e["choices"] and e["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["delta"]["content"] for c in content_chunks] == split_text(reply)
    assert content_of(events) == reply
    assert upstream.requests[0]["streamed_text"] == reply


def test_echo_uses_last_user_message(upstream: FakeUpstream, client: httpx.Client) -> None:
    body = chat_body("second")
    body["messages"].insert(1, {"role": "user", "content": 'first fake:{"status": 500}'})
    body["messages"].insert(2, {"role": "assistant", "content": "ok"})
    response, events = stream(client, upstream.base_url, body)
    assert response.status_code == 200
    assert content_of(events).startswith("You said: second ")
    assert len([e for e in events if isinstance(e, dict) and e["choices"] and "content" in e["choices"][0]["delta"]]) == 13


def test_status_with_retry_after_and_fail_times(upstream: FakeUpstream, client: httpx.Client) -> None:
    body = chat_body('x fake:{"status": 429, "retry_after": 2, "fail_times": 1, "error_code": "rate_limit_exceeded"}')
    first, _ = stream(client, upstream.base_url, body)
    assert first.status_code == 429
    assert first.headers["retry-after"] == "2"
    error = first.json()["error"]
    assert "429" in error["message"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error"

    second, events = stream(client, upstream.base_url, body)
    assert second.status_code == 200
    assert events[-1] == "[DONE]"

    # Without fail_times the status always applies.
    for _ in range(2):
        response = client.post(f"{upstream.base_url}/chat/completions", json=chat_body('fake:{"status": 503}'))
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "server_error"


def test_cut_after(upstream: FakeUpstream, client: httpx.Client) -> None:
    events: list[Any] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", f"{upstream.base_url}/chat/completions", json=chat_body('c fake:{"cut_after": 2}')) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    assert "[DONE]" not in events
    assert len(events) == 3  # role chunk + 2 content chunks
    (rec,) = upstream.wait_for_requests(1)
    assert rec["finished"]
    assert rec["streamed_text"] == content_of(events)


def test_error_after(upstream: FakeUpstream, client: httpx.Client) -> None:
    response, events = stream(client, upstream.base_url, chat_body('e fake:{"error_after": 1, "error_code": "boom"}'))
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert events[-1] == {
        "error": {"message": "The server had an error while processing your request", "type": "server_error", "code": "boom"}
    }
    assert upstream.requests[0]["streamed_text"] == content_of(events[:-1])
    # The response ended properly, so the keep-alive connection is reusable.
    _, events = stream(client, upstream.base_url, chat_body("again"))
    assert events[-1] == "[DONE]"


def test_malformed_and_no_done(upstream: FakeUpstream, client: httpx.Client) -> None:
    _, events = stream(client, upstream.base_url, chat_body('m fake:{"tokens": 3, "malformed_after": 1}'))
    assert events[2] == "{not json"
    assert events[-1] == "[DONE]"
    assert content_of(events) == upstream.requests[0]["streamed_text"]

    _, events = stream(client, upstream.base_url, chat_body('n fake:{"tokens": 2, "no_done": true}', include_usage=True))
    assert "[DONE]" not in events
    assert events[-1]["usage"]["completion_tokens"] == 2


def test_stall_after_read_timeout_and_disconnect(upstream: FakeUpstream) -> None:
    events: list[Any] = []
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            with c.stream("POST", f"{upstream.base_url}/chat/completions", json=chat_body('s fake:{"stall_after": 2}')) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
    assert len(events) == 3
    (rec,) = upstream.wait_for_requests(1)
    # The client went away: the stalled handler notices and finishes.
    deadline = time.monotonic() + 3
    while not rec["finished"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rec["finished"]
    assert rec["streamed_text"] == content_of(events)


def test_stop_is_quick_with_stalled_streams() -> None:
    up = FakeUpstream().start()
    clients = [httpx.Client(timeout=10.0) for _ in range(3)]
    responses = []
    try:
        for c in clients:
            r = c.send(
                c.build_request("POST", f"{up.base_url}/chat/completions", json=chat_body('fake:{"stall_after": 0}')),
                stream=True,
            )
            assert r.status_code == 200
            responses.append(r)
        up.wait_for_requests(3)
        up.stop()  # returns although three streams are stalled
        assert all(rec["finished"] for rec in up.requests)
        for r in responses:
            with pytest.raises(httpx.HTTPError):
                r.read()
    finally:
        for r in responses:
            r.close()
        for c in clients:
            c.close()
        up.stop()


def test_first_chunk_at_is_recorded(upstream: FakeUpstream, client: httpx.Client) -> None:
    before = time.time()
    stream(client, upstream.base_url, chat_body('t fake:{"tokens": 3, "first_delay": 0.05}'))
    stream(client, upstream.base_url, chat_body('t fake:{"status": 500}'))
    sent, failed = upstream.wait_for_requests(2)
    assert before <= sent["first_chunk_at"] <= time.time()
    assert failed["first_chunk_at"] is None  # no content was written


def test_received_at_comes_before_the_first_chunk(upstream: FakeUpstream, client: httpx.Client) -> None:
    before = time.time()
    stream(client, upstream.base_url, chat_body('t fake:{"tokens": 3}'))
    stream(client, upstream.base_url, chat_body('t fake:{"status": 500}'))
    sent, failed = upstream.wait_for_requests(2)
    assert before <= sent["received_at"] <= sent["first_chunk_at"] <= time.time()
    assert failed["received_at"] >= sent["received_at"]  # recorded for every request, answered or not


def raw_stream(base_url: str, body: dict[str, Any]) -> bytes:
    """The response exactly as sent, chunked framing included (httpx would decode it)."""
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].split(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + payload)
        parts = []
        while data := sock.recv(65536):
            parts.append(data)
    return b"".join(parts)


def test_an_unpaced_stream_sends_the_same_bytes_as_a_paced_one(upstream: FakeUpstream) -> None:
    """The unpaced fast path (a few large writes) changes how the bytes are written, not which."""
    def normalised(directive: str) -> bytes:
        raw = raw_stream(upstream.base_url, chat_body(f"same fake:{directive}", include_usage=True))
        raw = re.sub(rb"chatcmpl-[0-9a-f]+", b"ID", raw)
        return re.sub(rb'"created":\d+', b'"created":0', raw)

    unpaced = normalised('{"tokens": 40, "delay": 0.000}')  # as long as the paced one: same usage
    paced = normalised('{"tokens": 40, "delay": 0.001}')
    assert unpaced == paced
    assert unpaced.count(b"\r\ndata: ") == 40 + 4  # role, 40 chunks, finish, usage, [DONE]: one HTTP chunk each
    assert upstream.requests[-2]["streamed_text"] == upstream.requests[-1]["streamed_text"]


def test_first_delay_and_delay(upstream: FakeUpstream, client: httpx.Client) -> None:
    """Delays pace the stream without changing it (their effect is measured by the benchmark, not here)."""
    _, events = stream(client, upstream.base_url, chat_body('d fake:{"tokens": 3, "first_delay": 0.1, "delay": 0.05}'))
    assert events[-1] == "[DONE]"
    assert upstream.requests[-1]["finished"] and upstream.requests[-1]["first_chunk_at"] is not None


# ---------------------------------------------------------------- non-streaming and other endpoints


def test_no_stream_and_non_streaming_requests(upstream: FakeUpstream, client: httpx.Client) -> None:
    for body in (chat_body('ns fake:{"tokens": 3, "no_stream": true}'), chat_body('ns fake:{"tokens": 3}', stream=False)):
        response = client.post(f"{upstream.base_url}/chat/completions", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        data = response.json()
        assert data["object"] == "chat.completion"
        assert data["model"] == "gpt-test"
        message = data["choices"][0]["message"]
        assert message["role"] == "assistant"
        assert message["content"] == "You said: ns w1 w2 "
        assert data["choices"][0]["finish_reason"] == "stop"
        assert data["usage"]["completion_tokens"] == 3
    assert [r["streamed_text"] for r in upstream.requests] == ["You said: ns w1 w2 "] * 2


def test_models_404_and_bad_json(upstream: FakeUpstream, client: httpx.Client) -> None:
    models = client.get(f"{upstream.base_url}/models").json()
    assert models == {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}

    missing = client.get(f"{upstream.base_url}/nope")
    assert missing.status_code == 404 and "error" in missing.json()

    bad = client.post(f"{upstream.base_url}/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"


def test_fake_requests_and_reset_endpoints(upstream: FakeUpstream, client: httpx.Client) -> None:
    stream(client, upstream.base_url, chat_body('r fake:{"tokens": 2}'))
    root = upstream.base_url.removesuffix("/v1")
    recorded = client.get(f"{root}/_fake/requests").json()
    assert len(recorded) == 1 and recorded[0]["finished"] and recorded[0]["script"] == {"tokens": 2}
    assert client.post(f"{root}/_fake/reset").status_code == 200
    assert upstream.requests == []
    assert client.get(f"{root}/_fake/requests").json() == []


def test_api_key() -> None:
    with FakeUpstream(api_key="sekret", default_script={"tokens": 2}) as up, httpx.Client(timeout=5.0) as c:
        for url, method in ((f"{up.base_url}/chat/completions", "POST"), (f"{up.base_url}/models", "GET")):
            kwargs: dict[str, Any] = {"json": chat_body("hi")} if method == "POST" else {}
            denied = c.request(method, url, headers={"Authorization": "Bearer wrong"}, **kwargs)
            assert denied.status_code == 401
            assert denied.json() == {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            assert c.request(method, url, **kwargs).status_code == 401  # no header at all
            allowed = c.request(method, url, headers={"Authorization": "Bearer sekret"}, **kwargs)
            assert allowed.status_code == 200
        assert up.requests[-1]["headers"]["authorization"] == "Bearer sekret"


def test_default_script() -> None:
    with FakeUpstream(default_script={"tokens": 2, "finish_reason": "length"}, model="m") as up, httpx.Client() as c:
        _, events = stream(c, up.base_url, {"messages": [{"role": "user", "content": 'q fake:{"tokens": 3}'}], "stream": True})
        assert content_of(events) == "You said: q w1 w2 "
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert events[0]["model"] == "m"  # request had no model


def test_httpx_sse_compatibility(upstream: FakeUpstream, client: httpx.Client) -> None:
    httpx_sse = pytest.importorskip("httpx_sse")
    with httpx_sse.connect_sse(client, "POST", f"{upstream.base_url}/chat/completions", json=chat_body("sse")) as source:
        data = [event.data for event in source.iter_sse()]
    assert data[-1] == "[DONE]"
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "You said: sse "


# ---------------------------------------------------------------- concurrency and CLI


def test_50_concurrent_streams(upstream: FakeUpstream) -> None:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(timeout=10.0, limits=limits) as shared:

        def one(i: int) -> tuple[int, str]:
            _, events = stream(shared, upstream.base_url, chat_body(f'msg-{i} fake:{{"tokens": 20, "delay": 0.005}}'))
            assert events[-1] == "[DONE]"
            return i, content_of(events)

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(one, range(50)))
    for i, text in results:
        assert text.startswith(f"You said: msg-{i} ")
    recs = upstream.wait_for_requests(50)
    assert len(recs) == 50
    assert {r["streamed_text"] for r in recs} == {text for _, text in results}
    assert all(r["finished"] for r in recs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--tokens", "3", "--api-key", "k"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"fake upstream listening on http://127.0.0.1:{port}/v1"
        base_url = line.rsplit(" ", 1)[1]
        with httpx.Client(timeout=5.0, headers={"Authorization": "Bearer k"}) as c:
            _, events = stream(c, base_url, chat_body("cli"))
            assert content_of(events) == "You said: cli w1 w2 "
            recorded = c.get(base_url.removesuffix("/v1") + "/_fake/requests").json()
            assert recorded[0]["streamed_text"] == "You said: cli w1 w2 "
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    with proc.stdout, proc.stderr:
        assert "Traceback" not in proc.stderr.read()
