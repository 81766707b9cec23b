"""The writes of a turn and of a reply's end: one active reply, conditional ends, usage, query counts."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone, translation

from conversations.chat import broadcast, errors, replies, snapshots, turns
from conversations.chat.tokens import estimate
from conversations.models import Message, Usage, memo
from conversations.upstream import providers

pytestmark = pytest.mark.django_db(transaction=True)


def expire(reply) -> None:
    Message.objects.filter(pk=reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --------------------------------------------------------------------------- one active reply


def test_the_database_refuses_a_second_streaming_reply(alice):
    conversation = alice.conversation()
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    Message.objects.create(conversation=conversation, parent=question, role="assistant", status="streaming")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, parent=question, role="assistant", status="streaming")


def test_a_reply_that_loses_the_race_in_the_database_is_busy(alice):
    """Past the Python check (as a second process would be), the constraint answers Busy."""
    conversation = alice.conversation()
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    Message.objects.create(conversation=conversation, parent=question, role="assistant", status="streaming")
    choice = providers.resolve(alice.user, conversation.model)
    with pytest.raises(turns.Busy):  # `{}`: the turn saw no streaming reply, as a racing process would not
        turns._in_turn(alice.user, conversation.id,
                       lambda conv, _messages: turns._start_reply(conv, {}, question, choice))
    assert conversation.messages.filter(role="assistant").count() == 1


def test_finished_replies_do_not_block_a_new_one(alice):
    conversation = alice.conversation()
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    for status in ("complete", "stopped", "error", "interrupted"):
        Message.objects.create(conversation=conversation, parent=question, role="assistant", status=status)
    turn = turns.regenerate(alice.user, conversation.id, conversation.messages.filter(role="assistant").first().id)
    assert turn.reply.status == "streaming"


def test_a_client_id_is_used_once_per_conversation(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, client_id=(cid := uuid.uuid4()))
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete")
    again = turns.ask(alice.user, conversation.id, "hello", None, client_id=cid)
    assert again.duplicate and again.reply is None
    assert [m["id"] for m in again.existing] == [str(turn.reply.parent_id)]
    assert conversation.messages.count() == 2


def test_a_resent_regenerate_makes_one_sibling(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete")
    client_id = uuid.uuid4()
    first = turns.regenerate(alice.user, conversation.id, turn.reply.id, client_id)
    replies.finish_reply(first.reply.id, first.reply.run_id, text="hi again", status="complete")
    again = turns.regenerate(alice.user, conversation.id, turn.reply.id, client_id)
    assert again.duplicate and again.reply is None
    assert [m["id"] for m in again.existing] == [str(first.reply.id)]
    assert conversation.messages.filter(role="assistant").count() == 2


def test_a_resent_edit_makes_one_sibling(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete")
    client_id = uuid.uuid4()
    first = turns.edit(alice.user, conversation.id, turn.reply.parent_id, "hello there", None, client_id)
    replies.finish_reply(first.reply.id, first.reply.run_id, text="hi", status="complete")
    again = turns.edit(alice.user, conversation.id, turn.reply.parent_id, "hello there", None, client_id)
    assert again.duplicate
    assert conversation.messages.filter(role="user").count() == 2


# --------------------------------------------------------------------------- conditional ends


def test_a_reply_already_marked_interrupted_is_never_rewritten_by_a_late_process(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    reply = turn.reply
    assert replies.save_progress(reply.id, reply.run_id, "partial")
    expire(reply)
    swept = snapshots.snapshot(alice.user, conversation.id)  # anyone touching the conversation sweeps it
    assert swept["active"] is None

    # The process was only slow: it wakes up and writes, too late.
    assert replies.save_progress(reply.id, reply.run_id, "partial and more") is False
    assert replies.finish_reply(reply.id, reply.run_id, text="partial and more and the end",
                                status="complete", usage={"prompt_tokens": 5, "completion_tokens": 9}) is False

    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.error_code) == ("interrupted", "partial", "interrupted")
    usage = Usage.objects.get()
    assert usage.reply_id == reply.id and usage.estimated and usage.status == "interrupted"
    assert usage.completion_tokens == estimate("partial")


def test_a_slow_live_reply_is_never_marked_interrupted_while_it_writes(alice):
    """Its lease passed, but its process is alive and in the middle of a write: the sweep passes it over."""
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    reply = turn.reply
    expire(reply)
    writing, swept = threading.Event(), threading.Event()

    def slow_flush():
        try:
            with transaction.atomic():
                assert replies.save_progress(reply.id, reply.run_id, "still alive")  # holds the row's lock
                writing.set()
                swept.wait(30)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_flush)
    writer.start()
    assert writing.wait(30)
    try:
        with transaction.atomic():
            marked = replies.sweep(conversation)
    finally:
        swept.set()
        writer.join(30)
    assert marked == []
    reply.refresh_from_db()
    assert reply.status == "streaming" and reply.content == "still alive"
    assert reply.lease_expires_at > timezone.now()
    assert replies.finish_reply(reply.id, reply.run_id, text="still alive, done", status="complete")
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("complete", "still alive, done")
    assert Usage.objects.get().status == "complete"


def test_the_sweep_leaves_a_reply_whose_write_renewed_its_lease(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    expire(turn.reply)
    assert replies.save_progress(turn.reply.id, turn.reply.run_id, "renewed")
    with transaction.atomic():
        assert replies.sweep(conversation) == []
    assert Message.objects.get(pk=turn.reply.id).status == "streaming"


def test_a_dead_process_reply_is_swept_by_anyone_with_its_usage_estimated(alice, bob):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "你好，世界", None, uuid.uuid4())
    replies.save_progress(turn.reply.id, turn.reply.run_id, "这是一个回答")
    expire(turn.reply)
    assert replies.sweep_stale() == 1
    usage = Usage.objects.get()
    assert (usage.member_id, usage.estimated, usage.status) == (alice.user.id, True, "interrupted")
    assert usage.completion_tokens == estimate("这是一个回答") == 7  # 6 characters at 1.1 each
    assert usage.prompt_tokens == turn.reply.request["estimated_tokens"] > 0


def test_a_branch_can_be_chosen_right_after_the_process_streaming_a_reply_died(alice):
    """select sweeps a dead reply as a send does, instead of answering busy until a snapshot does."""
    conversation = alice.conversation()
    first = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(first.reply.id, first.reply.run_id, text="one", status="complete")
    second = turns.regenerate(alice.user, conversation.id, first.reply.id)
    with pytest.raises(turns.Busy):  # alive: its lease still runs
        turns.select(alice.user, conversation.id, first.reply.id)
    expire(second.reply)

    turns.select(alice.user, conversation.id, first.reply.id)
    assert Message.objects.get(pk=second.reply.id).status == "interrupted"
    conversation.refresh_from_db()
    assert conversation.current_leaf_id == first.reply.id


# --------------------------------------------------------------------------- usage is never lost


@pytest.mark.parametrize(("status", "code"), [("complete", ""), ("stopped", ""), ("error", "upstream_error")])
def test_every_end_records_usage_once(alice, status, code):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="some words of an answer", status=status,
                         error_code=code, error_detail={"reason": "broke_off"} if code else None,
                         ttft_ms=120, duration_ms=900)
    usage = Usage.objects.get()
    assert (usage.status, usage.estimated, usage.ttft_ms, usage.duration_ms) == (status, True, 120, 900)
    assert usage.completion_tokens == estimate("some words of an answer")
    reply = Message.objects.get(pk=turn.reply.id)
    assert reply.usage["estimated"] is True and reply.usage["completion_tokens"] == usage.completion_tokens


def test_an_error_at_the_end_speaks_the_members_chosen_language(alice):
    alice.user.language = "zh-hans"
    alice.user.save(update_fields=["language"])
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    finish = broadcast._capturing(replies.finish_reply)
    done, events = finish(turn.reply.id, turn.reply.run_id, text="part", status="error",
                          error_code="upstream_error", error_detail={"reason": "broke_off"})
    frames = [json.loads(event["frame"]) for _group, event in events]
    assert done and [frame["type"] for frame in frames] == ["error"]
    with translation.override("zh-hans"):
        assert frames[0]["message"] == errors.describe("upstream_error", {"reason": "broke_off"})
    with translation.override("en"):
        assert frames[0]["message"] != errors.describe("upstream_error", {"reason": "broke_off"})


def test_the_upstreams_usage_wins_over_the_estimate(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete",
                         usage={"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12})
    usage = Usage.objects.get()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (11, 1, False)


def test_usage_outlives_its_conversation(alice):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete")
    conversation_id = conversation.id
    conversation.delete()
    usage = Usage.objects.get()
    assert usage.reply_id is None and usage.conversation_id == conversation_id and usage.member_id == alice.user.id


# --------------------------------------------------------------------------- query counts


def test_a_replys_end_takes_three_statements_and_reads_no_member(alice, django_assert_num_queries):
    conversation = alice.conversation()
    turn = turns.ask(alice.user, conversation.id, "hello", None, uuid.uuid4())
    # BEGIN, lock the reply (with its conversation), write its end, insert its usage, COMMIT.
    with django_assert_num_queries(5) as captured:
        replies.finish_reply(turn.reply.id, turn.reply.run_id, text="hi", status="complete")
    lock = next(q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT"))
    assert "ORDER BY" not in lock and "conversations_member" not in lock


def test_a_send_takes_six_queries_in_one_transaction(alice, django_assert_num_queries):
    conversation = alice.conversation()
    first = turns.ask(alice.user, conversation.id, "first", None, uuid.uuid4())
    replies.finish_reply(first.reply.id, first.reply.run_id, text="answer", status="complete")
    # BEGIN, lock the conversation, read its messages, insert the question and the reply (one
    # statement), update the conversation, COMMIT. The model's provider and the member's limits
    # were read by the first send and are remembered (models/memo.py).
    with django_assert_num_queries(6) as captured:
        turn = turns.ask(alice.user, conversation.id, "second", None, uuid.uuid4())
    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith('INSERT INTO "conversations_message"')]
    assert len(inserts) == 1  # both rows
    question, reply = Message.objects.filter(pk__in=[turn.reply.parent_id, turn.reply.id]).order_by("created_at")
    assert (question.role, question.content, reply.id, reply.parent_id) == ("user", "second", turn.reply.id, question.id)
    assert question.created_at < reply.created_at

    memo.clear_all()  # as after staff changed a provider or a quota: the enabled models (and
    # their groups) and the quota rows are read again, once for every member of the process
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="answer", status="complete")
    with django_assert_num_queries(9):
        turns.ask(alice.user, conversation.id, "third", None, uuid.uuid4())


def test_an_edit_inserts_its_question_and_reply_together_and_a_regenerate_its_reply(alice, django_assert_num_queries):
    conversation = alice.conversation()
    first = turns.ask(alice.user, conversation.id, "first", None, uuid.uuid4())
    replies.finish_reply(first.reply.id, first.reply.run_id, text="answer", status="complete")
    with django_assert_num_queries(6):  # as a send
        edited = turns.edit(alice.user, conversation.id, first.reply.parent_id, "first, again", None, uuid.uuid4())
    replies.finish_reply(edited.reply.id, edited.reply.run_id, text="answer", status="complete")
    with django_assert_num_queries(6):  # the reply alone, in its own insert
        turns.regenerate(alice.user, conversation.id, edited.reply.id, uuid.uuid4())
    assert conversation.messages.filter(role="user").count() == 2
    assert conversation.messages.filter(role="assistant").count() == 3


def test_a_send_that_meets_a_streaming_reply_in_the_database_stores_nothing(alice, monkeypatch):
    """Past the Python check (as a second process would be), the one insert fails whole: no question is left."""
    conversation = alice.conversation()
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    Message.objects.create(conversation=conversation, parent=question, role="assistant", status="streaming",
                           lease_expires_at=timezone.now() + timedelta(seconds=60))
    monkeypatch.setattr(turns, "_make_room", lambda *args: providers.resolve(alice.user, conversation.model))
    with pytest.raises(turns.Busy):
        turns.ask(alice.user, conversation.id, "a second question", None, uuid.uuid4())
    assert list(conversation.messages.values_list("content", flat=True).order_by("created_at")) == ["q", ""]


def test_a_snapshot_takes_two_queries(alice, django_assert_num_queries):
    conversation = alice.conversation()
    first = turns.ask(alice.user, conversation.id, "first", None, uuid.uuid4())
    replies.finish_reply(first.reply.id, first.reply.run_id, text="answer", status="complete")
    turns.ask(alice.user, conversation.id, "second", None, uuid.uuid4())
    with django_assert_num_queries(2):  # the conversation, then all its messages at once
        snapshot = snapshots.snapshot(alice.user, conversation.id)
    assert [m["content"] for m in snapshot["messages"]] == ["first", "answer", "second", ""]
