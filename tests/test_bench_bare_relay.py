"""The benchmark's bare relay speaks enough of the protocol for bench/clients.py to drive it.

Driven in-process through ASGI (no daphne) against the fake upstream; no timings here.
"""

from __future__ import annotations

import asyncio
import json

from bench.bare_relay import BareRelay, Upstream
from tests.fake_upstream import FakeUpstream


async def converse(relay: BareRelay, sends: list[str], frames_wanted: int) -> list[dict]:
    """Open a socket on the relay, send each text, and collect frames until `frames_wanted` arrived."""
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    for text in sends:
        await inbox.put({"type": "websocket.receive", "text": json.dumps({"type": "send", "content": text,
                                                                          "client_id": "c"})})

    async def send(event: dict) -> None:
        await outbox.put(event)

    app = asyncio.create_task(relay({"type": "websocket", "path": "/ws/conversations/x/"}, inbox.get, send))
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "websocket.accept"
    frames = [json.loads((await asyncio.wait_for(outbox.get(), 10))["text"]) for _ in range(frames_wanted)]
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(app, 5)
    await relay.aclose()
    return frames


async def test_a_reply_is_a_message_its_deltas_at_their_offsets_and_done() -> None:
    with FakeUpstream(api_key="k") as up:
        relay = BareRelay(Upstream(up.base_url, "k", "fake-model"))
        frames = await converse(relay, ['hello fake:{"tokens": 4}'], 1 + 1 + 4 + 1)
        body = up.requests[0]["body"]
    snapshot, message, *deltas, done = frames
    assert snapshot["type"] == "snapshot" and snapshot["active"] is None and snapshot["messages"] == []
    assert message["type"] == "message" and message["message"]["status"] == "streaming"
    reply_id = message["message"]["id"]
    text = ""
    for delta in deltas:
        assert delta["type"] == "delta" and delta["message_id"] == reply_id and delta["offset"] == len(text)
        text += delta["content"]
    assert text == "You said: hello w1 w2 w3 "
    assert done["type"] == "done" and done["message_id"] == reply_id and done["status"] == "complete"
    assert done["finish_reason"] == "stop" and done["usage"]["completion_tokens"] == 4
    # The request the app would send for a first turn: the text alone, streamed, usage asked for.
    assert body["messages"] == [{"role": "user", "content": 'hello fake:{"tokens": 4}'}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_an_upstream_failure_is_an_error_frame_for_that_reply() -> None:
    with FakeUpstream(api_key="k") as up:
        relay = BareRelay(Upstream(up.base_url, "wrong", "fake-model"))
        _snapshot, message, error = await converse(relay, ["hi"], 3)
    assert error["type"] == "error" and error["message_id"] == message["message"]["id"]
    assert "401" in error["message"]
