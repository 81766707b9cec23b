"""Several daphne processes behind one address: real processes, real sockets,
sharing Postgres and channels-redis, as in a team deployment."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from tests.conftest import DaphneProcess, daphne_tab, follow_reply

pytestmark = pytest.mark.django_db(transaction=True)


def receiver(ws):
    async def recv():
        return json.loads(await asyncio.wait_for(ws.recv(), 20))

    return recv


async def wait_for_done(ws, message_id):
    recv = receiver(ws)
    while True:
        frame = await recv()
        if frame["type"] in ("done", "error") and frame.get("message_id") == message_id:
            return frame


@sync_to_async
def rows(conversation):
    return list(Message.objects.filter(conversation=conversation).order_by("created_at"))


async def test_two_processes_start_exactly_one_reply_at_once(daphne_pair, alice, upstream):
    conversation = await sync_to_async(alice.conversation)()
    first, second = daphne_pair
    async with daphne_tab(first, alice, conversation) as one, daphne_tab(second, alice, conversation) as two:
        for ws in (one, two):
            assert json.loads(await ws.recv())["type"] == "snapshot"
        slow = 'fake:{"tokens": 40, "delay": 0.02}'
        await asyncio.gather(
            one.send(json.dumps({"type": "send", "content": f"one {slow}", "client_id": str(uuid.uuid4())})),
            two.send(json.dumps({"type": "send", "content": f"two {slow}", "client_id": str(uuid.uuid4())})),
        )
        outcomes = []
        for ws in (one, two):
            recv = receiver(ws)
            while True:
                frame = await recv()
                if frame["type"] == "error" and frame["code"] == "busy":
                    outcomes.append("busy")
                    break
                if frame["type"] == "done":
                    outcomes.append("done")
                    break
        stored = await rows(conversation)
        reply = stored[-1]
        for ws in (one, two):
            if outcomes[(one, two).index(ws)] == "busy":
                await wait_for_done(ws, str(reply.id))
    assert sorted(outcomes) == ["busy", "done"]
    stored = await rows(conversation)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].status == "complete"
    assert len(upstream.requests) == 1


async def test_a_tab_on_another_process_joins_mid_reply_exactly(daphne_pair, alice, upstream):
    conversation = await sync_to_async(alice.conversation)()
    generating, watching = daphne_pair
    async with daphne_tab(generating, alice, conversation) as origin_tab:
        await origin_tab.recv()
        await origin_tab.send(json.dumps({
            "type": "send", "content": 'long fake:{"tokens": 150, "delay": 0.01}', "client_id": str(uuid.uuid4()),
        }))
        recv = receiver(origin_tab)
        deltas = 0
        while deltas < 5:
            deltas += (await recv())["type"] == "delta"
        async with daphne_tab(watching, alice, conversation) as late:
            snapshot = json.loads(await late.recv())
            active = snapshot["active"]
            assert active is not None and active["content"]
            reply = await follow_reply(receiver(late), text=active["content"], message_id=active["id"])
    row = (await rows(conversation))[-1]
    assert reply.end["status"] == "complete"
    assert reply.text == row.content == upstream.requests[0]["streamed_text"]


async def test_stop_from_another_process_stops_the_reply(daphne_pair, alice, upstream):
    conversation = await sync_to_async(alice.conversation)()
    generating, other = daphne_pair
    async with daphne_tab(generating, alice, conversation) as one, daphne_tab(other, alice, conversation) as two:
        await one.recv()
        await two.recv()
        await one.send(json.dumps({
            "type": "send", "content": 'endless fake:{"tokens": 1000, "delay": 0.02}',
            "client_id": str(uuid.uuid4()),
        }))
        recv = receiver(two)
        while (frame := await recv())["type"] != "delta":
            pass
        await two.send(json.dumps({"type": "stop"}))
        done = await wait_for_done(two, frame["message_id"])
    assert done["status"] == "stopped"
    row = await sync_to_async(Message.objects.get)(pk=frame["message_id"])
    assert row.status == "stopped" and row.content
    assert upstream.requests[0]["streamed_text"].startswith(row.content)


async def test_a_reply_whose_process_was_killed_becomes_interrupted(app_env, alice, upstream):
    app_env = dict(app_env, REPLY_LEASE_SECONDS="1.5", REPLY_FLUSH_SECONDS="0.1")
    doomed, survivor = DaphneProcess(app_env), DaphneProcess(app_env)
    try:
        conversation = await sync_to_async(alice.conversation)()
        async with daphne_tab(doomed, alice, conversation) as ws:
            await ws.recv()
            await ws.send(json.dumps({
                "type": "send", "content": 'endless fake:{"tokens": 1000, "delay": 0.02}',
                "client_id": str(uuid.uuid4()),
            }))
            recv = receiver(ws)
            seen = ""
            while len(seen) < 60:
                frame = await recv()
                if frame["type"] == "delta":
                    seen += frame["content"]
            await asyncio.sleep(0.3)  # let a flush land, so there is partial text to keep
            doomed.proc.send_signal(signal.SIGKILL)
            doomed.proc.wait()

        # Until the lease passes the reply still looks alive; then it is marked interrupted.
        for _ in range(100):
            async with daphne_tab(survivor, alice, conversation) as ws:
                snapshot = json.loads(await ws.recv())
                reply = snapshot["messages"][-1]
                if reply["status"] == "interrupted":
                    assert snapshot["active"] is None
                    kept = reply["content"]
                    assert kept and upstream.requests[0]["streamed_text"].startswith(kept)
                    assert seen.startswith(kept) or kept.startswith(seen)
                    await ws.send(json.dumps({"type": "send", "content": "again", "client_id": str(uuid.uuid4())}))
                    after = await follow_reply(receiver(ws))
                    assert after.end["status"] == "complete"
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the reply of the killed process was never marked interrupted")
    finally:
        doomed.stop()
        survivor.stop()


async def test_a_frame_above_daphnes_default_limit_reaches_the_app(app_env, alice, upstream):
    """daphne's own limit (1 MiB by default) would close the socket; the app answers instead."""
    conversation = await sync_to_async(alice.conversation)()
    process = DaphneProcess(app_env)
    try:
        async with daphne_tab(process, alice, conversation) as ws:
            recv = receiver(ws)
            assert (await recv())["type"] == "snapshot"
            huge = "x" * (3 * 1024 * 1024)  # under WS_MAX_FRAME_BYTES, over MAX_MESSAGE_CHARS
            await ws.send(json.dumps({"type": "send", "content": huge, "client_id": str(uuid.uuid4())}))
            assert (await recv())["code"] == "too_large"
            await ws.send(json.dumps({"type": "send", "content": "still here", "client_id": str(uuid.uuid4())}))
            assert (await recv())["type"] == "message"  # the socket stayed open
    finally:
        process.stop()
    assert [m.content for m in await rows(conversation)][0] == "still here"


async def test_websockets_are_compressed_with_a_small_window(app_env, alice, upstream):
    """permessage-deflate, as browsers offer it: a reply's small frames shrink to about their text."""
    process = DaphneProcess(app_env)
    try:
        conversation = await sync_to_async(alice.conversation)()
        async with daphne_tab(process, alice, conversation) as ws:
            extensions = ws.response.headers["Sec-WebSocket-Extensions"]
            assert "permessage-deflate" in extensions and "client_max_window_bits=10" in extensions
            assert json.loads(await ws.recv())["type"] == "snapshot"
            await ws.send(json.dumps({"type": "send", "content": "squeeze", "client_id": str(uuid.uuid4())}))
            reply = await follow_reply(receiver(ws))
        assert reply.end["type"] == "done" and reply.text == upstream.requests[-1]["streamed_text"]
    finally:
        process.stop()
