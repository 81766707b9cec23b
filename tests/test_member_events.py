"""Every write announces itself: a member's tabs hear of conversations made, changed and deleted
anywhere (the JSON API included), other members hear nothing, and a deleted conversation's tabs are
told and its reply stopped at once."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction

from conversations.chat import broadcast, generation
from conversations.chat.conversations import update_conversation
from conversations.models import Conversation, Message
from tests.conftest import Socket, assert_silent, open_tab

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION_KEYS = {"id", "title", "model", "system_prompt", "params", "created_at", "updated_at"}


def api(member, method: str, url: str, body: dict | None = None):
    call = getattr(member.client, method)
    if body is None:
        return database_sync_to_async(call)(url)
    return database_sync_to_async(call)(url, json.dumps(body), content_type="application/json")


async def member_socket(sockets, member) -> Socket:
    """The member's own socket (a page with no conversation open)."""
    tab = sockets(member, None, path="/ws/member/")
    assert (await tab.connect())[0]
    return tab


async def next_of(tab: Socket, kind: str) -> dict:
    return await tab.until(lambda frame: frame["type"] == kind)


async def test_a_conversation_made_through_the_api_shows_in_every_tab_of_the_member(alice, bob, sockets):
    existing = await database_sync_to_async(alice.conversation)()
    open_conversation = await open_tab(sockets, alice, existing)
    new_chat_page = await member_socket(sockets, alice)
    bobs = await member_socket(sockets, bob)

    response = await api(alice, "post", "/api/conversations/", {"title": "Plans"})
    assert response.status_code == 201
    made = response.json()

    for tab in (open_conversation, new_chat_page):
        frame = await tab.recv()
        assert frame == {"type": "conversation_created", "conversation": made}
        assert set(frame["conversation"]) == CONVERSATION_KEYS
    await assert_silent(bobs, bob)


async def test_a_rename_or_new_parameters_reach_every_tab_and_nobody_else(alice, bob, sockets):
    conversation = await database_sync_to_async(alice.conversation)(title="Old")
    one = await open_tab(sockets, alice, conversation)
    two = await open_tab(sockets, alice, conversation)
    page = await member_socket(sockets, alice)
    bobs = await member_socket(sockets, bob)

    renamed = await api(alice, "patch", f"/api/conversations/{conversation.id}/",
                        {"title": "New", "params": {"temperature": 0.3}})
    assert renamed.status_code == 200
    for tab in (one, two, page):
        frame = await tab.recv()
        assert frame["type"] == "conversation_updated"
        assert frame["conversation"]["title"] == "New" and frame["conversation"]["params"] == {"temperature": 0.3}
    await assert_silent(bobs, bob)

    unchanged = await api(alice, "patch", f"/api/conversations/{conversation.id}/", {"title": "New"})
    assert unchanged.status_code == 200
    await assert_silent(one, alice)  # nothing changed: nothing announced


async def test_a_send_moves_the_conversation_up_in_the_members_other_tabs(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    page = await member_socket(sockets, alice)
    await tab.send(type="send", content="hello there", client_id=str(uuid.uuid4()))
    frame = await page.recv()
    assert frame["type"] == "conversation_updated"
    assert frame["conversation"]["id"] == str(conversation.id) and frame["conversation"]["title"] == "hello there"


async def test_deleting_a_conversation_tells_its_tabs_and_stops_its_reply_at_once(alice, upstream, sockets, settings):
    settings.REPLY_FLUSH_SECONDS = 600  # no flush finds the row gone: only the delete's stop can end it
    conversation = await database_sync_to_async(alice.conversation)()
    other = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    elsewhere = await open_tab(sockets, alice, other)
    await tab.send(type="send", content='long fake:{"tokens": 2000, "delay": 0.02}', client_id=str(uuid.uuid4()))
    await tab.until(lambda frame: frame["type"] == "delta")
    await elsewhere.until(lambda frame: frame["type"] == "conversation_updated")

    response = await api(alice, "delete", f"/api/conversations/{conversation.id}/")
    assert response.status_code == 204

    deleted = {"type": "conversation_deleted", "conversation_id": str(conversation.id)}
    assert await tab.until(lambda frame: frame["type"] not in ("delta",)) == deleted
    refused = await tab.recv()
    assert (refused["type"], refused["code"], refused["detail"]) == ("error", "not_found", {"reason": "deleted"})
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False
    assert await elsewhere.recv() == deleted

    # The reply was stopped by the delete, not left to run or to a stall timer.
    running = generation.running_tasks()
    if running:
        await running[0]
    streamed = upstream.requests[0]["streamed_text"]
    assert streamed and "w1999" not in streamed, "the reply ran to its end after its conversation was deleted"
    assert await database_sync_to_async(Message.objects.filter(conversation_id=conversation.id).count)() == 0
    await assert_silent(elsewhere, alice)


async def test_deactivating_members_in_bulk_cuts_their_sockets_at_once(alice, bob, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    bobs = await member_socket(sockets, bob)

    # QuerySet.update sends no post_save: the members' own queryset announces it.
    await database_sync_to_async(get_user_model().objects.filter(pk__in=[alice.user.pk]).update)(is_active=False)
    refused = await tab.recv()
    assert (refused["type"], refused["code"]) == ("error", "not_found")
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False
    await assert_silent(bobs, bob)


async def test_the_member_socket_is_for_signed_in_members_and_takes_no_frames(alice, sockets):
    connected, _ = await sockets(None, None, path="/ws/member/").connect()
    assert not connected

    page = await member_socket(sockets, alice)
    await page.send(type="send", content="hello", client_id=str(uuid.uuid4()))
    frame = await page.recv()
    assert (frame["type"], frame["code"]) == ("error", "invalid")
    assert await database_sync_to_async(Conversation.objects.count)() == 0


async def test_an_action_announces_only_after_its_transaction_commits(alice, sockets):
    """A rolled-back write announces nothing."""
    conversation = await database_sync_to_async(alice.conversation)(title="Kept")
    tab = await open_tab(sockets, alice, conversation)

    def rename_then_fail():
        with transaction.atomic():
            update_conversation(alice.user, conversation.id, {"title": "Rolled back"})
            raise RuntimeError("after the write")

    with pytest.raises(RuntimeError):
        await database_sync_to_async(rename_then_fail)()
    await broadcast.flush()
    await assert_silent(tab, alice)
    assert (await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)).title == "Kept"
