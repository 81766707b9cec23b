"""The progress writer: every streaming reply of a process saved in one statement, conditionally.

The writes are counted where they run (the worker thread's connection), and the
rows are read back from Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.chat import progress, replies, turns
from conversations.chat.generation import Generation
from conversations.models import Message
from conversations.upstream.client import Endpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def writes(monkeypatch):
    """Every call of the batched write: the replies it was given, and the statements it ran
    on its thread's connection."""
    calls: list[tuple[list, list[str]]] = []
    real = replies.save_progress_many

    def counted(rows):
        with CaptureQueriesContext(connection) as captured:
            kept = real(rows)
        calls.append((rows, [query["sql"] for query in captured.captured_queries]))
        return kept

    monkeypatch.setattr(replies, "save_progress_many", counted)
    return calls


@pytest.fixture
async def writer(settings):
    """This test's writer, whose own ticks never come: the test writes when it says."""
    settings.REPLY_FLUSH_SECONDS = 600
    yield progress.writer()
    for reply in list(progress.writer().live):
        progress.unregister(reply)


@database_sync_to_async
def streaming_replies(member, count: int) -> list[Message]:
    """`count` conversations of the member, each with a question and its streaming reply."""
    return [turns.ask(member.user, member.conversation().id, f"question {i}", None, uuid.uuid4()).reply
            for i in range(count)]


def live(reply: Message, text: str = "") -> Generation:
    """The reply's generation as the writer sees it, with `text` received and not yet written."""
    generation = Generation(reply.conversation_id, reply.id, reply.run_id, {}, Endpoint.default())
    if text:
        generation._append(text)
    progress.register(generation)
    return generation


@database_sync_to_async
def row(reply) -> Message:
    return Message.objects.get(pk=reply.pk)


def test_several_replies_are_saved_in_one_statement_and_lost_ones_are_named(alice, django_assert_num_queries):
    first, second, third = (turns.ask(alice.user, alice.conversation().id, "q", None, uuid.uuid4()).reply
                            for _ in range(3))
    Message.objects.filter(pk=third.pk).update(run_id=uuid.uuid4())  # another run's now
    with django_assert_num_queries(1):
        kept = replies.save_progress_many([(first.id, first.run_id, "one", ""), (second.id, second.run_id, "two", "hm"),
                                           (third.id, third.run_id, "three", "")])
    assert kept == {first.id, second.id}
    assert [(m.content, m.reasoning) for m in Message.objects.filter(pk__in=[first.pk, second.pk, third.pk])
            .order_by("content")] == [("", ""), ("one", ""), ("two", "hm")]


def test_other_databases_save_row_by_row_with_the_same_answer(alice, monkeypatch):
    """SQLite (a trial) takes the plain loop; its answer is the batch's."""
    first, second = (turns.ask(alice.user, alice.conversation().id, "q", None, uuid.uuid4()).reply for _ in range(2))
    Message.objects.filter(pk=second.pk).update(status="interrupted")
    monkeypatch.setattr(connection, "vendor", "sqlite")
    assert replies.save_progress_many([(first.id, first.run_id, "one", ""), (second.id, second.run_id, "two", "")]) \
        == {first.id}
    assert Message.objects.get(pk=first.pk).content == "one"
    assert Message.objects.get(pk=second.pk).content == ""


async def test_every_live_reply_is_written_in_one_statement_per_tick(alice, writer, writes):
    generations = [live(reply, f"text of reply {i}") for i, reply in enumerate(await streaming_replies(alice, 3))]
    generations[1]._append_reasoning("thinking")
    before = timezone.now()

    await writer.write()
    assert len(writes) == 1  # one trip to a worker thread
    rows, statements = writes[0]
    assert len(rows) == 3 and len(statements) == 1 and statements[0].startswith("UPDATE")
    for i, generation in enumerate(generations):
        saved = await row(Message(pk=generation.reply_id))
        assert saved.content == f"text of reply {i}" and saved.status == "streaming"
        assert saved.lease_expires_at > before
        assert generation.saved_length == generation.length + generation.reasoning_length
    assert (await row(Message(pk=generations[1].reply_id))).reasoning == "thinking"

    # Only what changed is written next time.
    generations[2]._append(", and more")
    await writer.write()
    assert len(writes) == 2
    rows, statements = writes[1]
    assert [reply_id for reply_id, *_ in rows] == [generations[2].reply_id] and len(statements) == 1
    assert (await row(Message(pk=generations[2].reply_id))).content == "text of reply 2, and more"


async def test_a_reply_no_longer_this_runs_is_not_rewritten_and_is_stopped(alice, writer, caplog):
    swept, taken, alive = await streaming_replies(alice, 3)

    @database_sync_to_async
    def lose_two():
        replies.save_progress(swept.id, swept.run_id, "saved before the sweep")
        Message.objects.filter(pk=swept.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert replies.sweep_stale() == 1  # another process found its lease passed
        Message.objects.filter(pk=taken.pk).update(run_id=uuid.uuid4())

    await lose_two()
    generations = [live(reply, "late words") for reply in (swept, taken, alive)]
    with caplog.at_level(logging.WARNING, logger="conversations.chat.progress"):
        await writer.write()

    assert [g.stop_requested for g in generations] == [True, True, False]
    assert [(m.status, m.content) for m in [await row(swept), await row(taken), await row(alive)]] == [
        ("interrupted", "saved before the sweep"), ("streaming", ""), ("streaming", "late words")]
    assert list(writer.live) == [generations[2]]
    stopped = [r.getMessage() for r in caplog.records if "is no longer this run's" in r.getMessage()]
    assert len(stopped) == 2 and str(swept.id) in stopped[0] + stopped[1] and str(taken.id) in stopped[0] + stopped[1]


async def test_a_stalled_reply_has_its_lease_renewed(alice, writer, writes, settings):
    (reply,) = await streaming_replies(alice, 1)
    generation = live(reply, "a start")
    await writer.write()
    assert len(writes) == 1

    await writer.write()  # nothing new, and the lease is young: nothing to write
    assert len(writes) == 1

    @database_sync_to_async
    def nearly_expired():
        Message.objects.filter(pk=reply.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=1))
        return Message.objects.get(pk=reply.pk).lease_expires_at

    old_lease = await nearly_expired()
    writer.live[generation] -= settings.REPLY_LEASE_SECONDS / 3  # its last write, a third of a lease ago
    await writer.write()
    assert len(writes) == 2
    saved = await row(reply)
    assert saved.content == "a start" and saved.lease_expires_at > old_lease
    assert not generation.stop_requested


async def test_a_failed_write_keeps_the_text_and_the_next_tick_saves_it(alice, writer, monkeypatch, caplog):
    (reply,) = await streaming_replies(alice, 1)
    generation = live(reply, "before the outage")
    real = replies.save_progress_many
    failures = 2

    def flaky(rows):
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("the database is restarting")
        return real(rows)

    monkeypatch.setattr(replies, "save_progress_many", flaky)
    with caplog.at_level(logging.WARNING, logger="conversations.chat.progress"):
        await writer.write()
        generation._append(", during it")
        await writer.write()
        assert (await row(reply)).content == "" and generation.saved_length == 0
        assert not generation.stop_requested

        generation._append(", after it")
        await writer.write()
    assert (await row(reply)).content == "before the outage, during it, after it"
    assert generation.saved_length == generation.length
    messages = [r.getMessage() for r in caplog.records if r.name == "conversations.chat.progress"]
    assert len([m for m in messages if "saving the progress of streaming replies failed" in m]) == 1
    assert len([m for m in messages if "works again after 2 failed attempts" in m]) == 1


async def test_the_writer_runs_while_replies_stream_and_ends_with_the_last(alice, settings):
    settings.REPLY_FLUSH_SECONDS = 0.05
    first, second = await streaming_replies(alice, 2)
    one = live(first, "first words")
    task = progress.writer().task
    assert task is not None and not task.done()
    two = live(second, "second words")
    assert progress.writer().task is task  # one writer for every reply

    for _ in range(400):  # its own ticks write both
        if [(await row(first)).content, (await row(second)).content] == ["first words", "second words"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the writer never wrote the replies")

    progress.unregister(one)
    assert not task.done()
    progress.unregister(two)
    await asyncio.wait_for(task, 10)  # nothing left to write: it ends

    three = live(second, "second words, again")
    assert progress.writer().task is not task and not progress.writer().task.done()
    progress.unregister(three)
    await asyncio.wait_for(progress.writer().task, 10)
