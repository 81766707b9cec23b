"""Invariant 2 is the database's, not only Python's."""

import uuid

import pytest
from django.db import IntegrityError, transaction

from conversations.chat import actions
from conversations.models import Message

pytestmark = pytest.mark.django_db


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
    with pytest.raises(actions.Busy):
        actions._start_reply(conversation, question)
    assert conversation.messages.filter(role="assistant").count() == 1


def test_finished_replies_do_not_block_a_new_one(alice):
    conversation = alice.conversation()
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    for status in ("complete", "stopped", "error", "interrupted"):
        Message.objects.create(conversation=conversation, parent=question, role="assistant", status=status)
    turn = actions._start_reply(conversation, question)
    assert turn.reply.status == "streaming"


def test_a_client_id_is_used_once_per_conversation(alice):
    conversation = alice.conversation()
    turn = actions.start_turn(alice.user, conversation.id, "hello", None, client_id=(cid := uuid.uuid4()))
    actions.finish_reply(turn.reply.id, text="hi", status="complete")
    again = actions.start_turn(alice.user, conversation.id, "hello", None, client_id=cid)
    assert again.duplicate and again.reply is None
    assert conversation.messages.count() == 2
