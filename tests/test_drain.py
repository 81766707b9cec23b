"""Graceful drain, in a real daphne process: SIGTERM takes no new replies, lets running ones
finish within DRAIN_SECONDS, then saves the rest as interrupted and frees their conversations."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.chat import turns
from conversations.models import Message, Usage
from tests.conftest import DaphneProcess, daphne_tab, follow_reply

pytestmark = pytest.mark.django_db(transaction=True)


def receiver(ws):
    async def recv():
        return json.loads(await asyncio.wait_for(ws.recv(), 30))

    return recv


async def send(ws, content: str) -> None:
    await ws.send(json.dumps({"type": "send", "content": content, "client_id": str(uuid.uuid4())}))


async def first_delta(recv) -> dict:
    started = None
    while True:
        frame = await recv()
        if frame["type"] == "message" and frame["message"]["status"] == "streaming":
            started = frame["message"]["id"]
        if frame["type"] == "delta" and frame["message_id"] == started:
            return frame


async def test_a_draining_process_refuses_new_replies_and_finishes_running_ones(app_env, alice, upstream):
    app_env["DRAIN_SECONDS"] = "60"
    process = DaphneProcess(app_env)
    try:
        running, other = [await sync_to_async(alice.conversation)() for _ in range(2)]
        async with daphne_tab(process, alice, running) as one, daphne_tab(process, alice, other) as two:
            recv_one, recv_two = receiver(one), receiver(two)
            assert (await recv_one())["type"] == (await recv_two())["type"] == "snapshot"
            await send(one, 'finish me fake:{"tokens": 40, "delay": 0.05}')
            delta = await first_delta(recv_one)

            process.proc.send_signal(signal.SIGTERM)
            process.wait_for_log("draining: 1 replies running")
            await send(two, "a new question")
            refused = await recv_two()
            while refused["type"] != "error":  # the member's frames: the other conversation changed
                assert refused["type"] == "conversation_updated"
                refused = await recv_two()
            assert (refused["type"], refused["code"], refused["detail"]["reason"]) == ("error", "busy", "draining")

            reply = await follow_reply(recv_one, text=delta["content"], message_id=delta["message_id"])
        assert reply.end["type"] == "done" and reply.end["status"] == "complete"
        assert process.proc.wait(timeout=60) == 0  # it stopped by itself once the reply was saved
    finally:
        process.stop()
    row = await sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert (row.status, row.content) == ("complete", upstream.requests[0]["streamed_text"])
    assert await sync_to_async(Message.objects.filter(conversation=other).count)() == 0  # refused: nothing stored


async def test_replies_still_running_when_the_drain_ends_are_saved_interrupted_and_free(app_env, alice, upstream):
    app_env["DRAIN_SECONDS"] = "1"
    process = DaphneProcess(app_env)
    try:
        conversation = await sync_to_async(alice.conversation)()
        async with daphne_tab(process, alice, conversation) as tab:
            recv = receiver(tab)
            assert (await recv())["type"] == "snapshot"
            await send(tab, 'too long fake:{"tokens": 2000, "delay": 0.05}')
            delta = await first_delta(recv)
            process.proc.send_signal(signal.SIGTERM)
            reply = await follow_reply(recv, text=delta["content"], message_id=delta["message_id"])
        assert reply.end["type"] == "error" and reply.end["code"] == "interrupted"
        assert reply.end["detail"]["reason"] == "restart"
        assert process.proc.wait(timeout=60) == 0
    finally:
        process.stop()
    row = await sync_to_async(Message.objects.get)(pk=reply.message_id)
    assert row.status == "interrupted" and row.lease_expires_at is None
    assert row.content == reply.text and upstream.requests[0]["streamed_text"].startswith(row.content)
    usage = await sync_to_async(Usage.objects.get)(reply_id=row.id)
    assert usage.status == "interrupted" and usage.estimated
    # Free at once, not after a lease: the member's next question starts a reply.
    turn = await sync_to_async(turns.ask)(alice.user, conversation.id, "again?", None, uuid.uuid4())
    assert turn.reply is not None
