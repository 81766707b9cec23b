"""Who may open a conversation's socket, and what bad frames get."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from tests.conftest import Member, assert_silent, follow_reply, open_tab

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_anonymous_socket_is_refused(alice, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(None, conversation.id)
    assert (await tab.connect())[0] is False


@pytest.mark.parametrize("origin", ["http://evil.example", "http://testserver.evil.example", "null", None])
async def test_a_socket_from_another_origin_is_refused_even_with_a_session(alice, sockets, origin):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id, origin=origin)
    assert (await tab.connect())[0] is False


@pytest.mark.parametrize("which", ["someone else's", "unknown", "garbage"])
async def test_a_conversation_that_is_not_yours_is_not_found(alice, bob, upstream, sockets, which):
    conversation = await database_sync_to_async(alice.conversation)()
    target = {"someone else's": conversation.id, "unknown": uuid.uuid4(), "garbage": "not-a-uuid"}[which]
    outsider = sockets(bob, target)
    assert (await outsider.connect())[0]
    frame = await outsider.recv()
    assert frame == {"type": "error", "code": "not_found", "message": "No such conversation."}
    closed = await outsider.comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4404}
    outsider.connected = False

    owner = sockets(alice, conversation.id)
    assert (await owner.connect())[0]
    await owner.recv()
    await owner.send(type="send", content="private", client_id=str(uuid.uuid4()))
    assert (await follow_reply(owner.recv)).end["status"] == "complete"


async def test_an_outsider_cannot_touch_messages_of_another_conversation(alice, bob, upstream, sockets):
    private = await database_sync_to_async(alice.conversation)()
    owner = sockets(alice, private.id)
    assert (await owner.connect())[0]
    await owner.recv()
    await owner.send(type="send", content="secret plans", client_id=str(uuid.uuid4()))
    secret = await follow_reply(owner.recv)
    question_id = next(f["message"]["id"] for f in owner.frames if f["type"] == "message")

    own = await database_sync_to_async(bob.conversation)()
    outsider = sockets(bob, own.id)
    assert (await outsider.connect())[0]
    await outsider.recv()
    await outsider.send(type="regenerate", message_id=secret.message_id)
    assert (await outsider.recv())["code"] == "not_found"
    await outsider.send(type="edit", message_id=question_id, content="mine now", client_id=str(uuid.uuid4()))
    assert (await outsider.recv())["code"] == "not_found"
    await assert_silent(outsider, bob)
    await assert_silent(owner, alice)
    assert await database_sync_to_async(Message.objects.filter(conversation=private).count)() == 2
    assert await database_sync_to_async(Message.objects.filter(conversation=own).count)() == 0


async def test_a_socket_sending_too_fast_is_refused_once_and_stays_open(alice, upstream, sockets, settings):
    settings.WS_FRAME_BURST = 3
    settings.WS_FRAMES_PER_SECOND = 0.01  # nothing refills during the test
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    for _ in range(3):
        await tab.send(type="stop")  # taken: nothing streams, so nothing is answered
    await assert_silent(tab, alice)
    await tab.send(type="send", content="one too many", client_id=str(uuid.uuid4()))
    refused = await tab.recv()
    assert (refused["type"], refused["code"], refused["detail"]["reason"]) == ("error", "rate_limited", "frames")
    assert refused["detail"]["retry_after"] >= 1 and refused["message"]
    for _ in range(20):  # a flood gets one answer, not twenty
        await tab.send(type="send", content="flood", client_id=str(uuid.uuid4()))
    await assert_silent(tab, alice)
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert not tab.comm.future.done(), "the socket was dropped"


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://chat.example.com", True),
    ("https://example.com", True),
    ("https://deep.chat.example.com", True),
    ("http://chat.example.com", False),  # another scheme
    ("https://chat.example.com.evil.test", False),
    ("https://evilexample.com", False),
    ("https://exact.example.org", True),
    ("https://other.example.org", False),
])
def test_csrf_trusted_origins_with_wildcards_admit_websockets_as_they_admit_forms(settings, origin, allowed):
    """Behind a proxy that rewrites Host, the origin is checked against CSRF_TRUSTED_ORIGINS as Django does."""
    from django.middleware.csrf import CsrfViewMiddleware
    from django.test import RequestFactory

    from conversations.realtime.origin import is_same_origin

    settings.ALLOWED_HOSTS = ["app.internal"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com", "https://exact.example.org"]
    scope = {"headers": [(b"host", b"app.internal"), (b"origin", origin.encode())]}
    assert is_same_origin(scope) is allowed
    request = RequestFactory().post("/", HTTP_HOST="app.internal", HTTP_ORIGIN=origin)
    assert CsrfViewMiddleware(lambda r: None)._origin_verified(request) is allowed  # as for forms


BAD_FRAMES = [
    ("not json", "{nope", "invalid"),
    ("not an object", "[1, 2]", "invalid"),
    ("no type", "{}", "invalid"),
    ("unknown type", '{"type": "hack"}', "invalid"),
    ("content of the wrong type", '{"type": "send", "content": 42}', "invalid"),
    ("empty content", '{"type": "send", "content": "   "}', "invalid"),
    ("client_id not a uuid", '{"type": "send", "content": "hi", "client_id": "x"}', "invalid"),
    ("unknown part", '{"type": "send", "content": [{"type": "audio"}]}', "invalid"),
    ("script image", '{"type": "send", "content": [{"type": "image_url", "image_url": {"url": "javascript:1"}}]}',
     "invalid"),
    ("edit without id", '{"type": "edit", "content": "x"}', "invalid"),
    ("too long", json.dumps({"type": "send", "content": "x" * 100_001}), "too_large"),
]


@pytest.mark.parametrize("name,raw,code", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_a_bad_frame_gets_an_error_stores_nothing_and_keeps_the_socket(
    alice, upstream, sockets, name, raw, code
):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    await tab.send_raw(raw)
    frame = await tab.recv()
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]
    assert await database_sync_to_async(Message.objects.count)() == 0

    await tab.send(type="send", content="still here?", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["status"] == "complete"


async def test_a_binary_frame_is_invalid(alice, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    await tab.comm.send_to(bytes_data=b"\x00\x01")
    assert (await tab.recv())["code"] == "invalid"


async def test_a_member_deactivated_mid_session_is_refused_from_the_next_frame(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    await database_sync_to_async(get_user_model().objects.filter(pk=alice.user.pk).update)(is_active=False)
    await tab.send(type="send", content="still me", client_id=str(uuid.uuid4()))
    assert (await tab.recv())["code"] == "not_found"
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False
    assert await database_sync_to_async(Message.objects.count)() == 0


def another_browser(member: Member) -> Member:
    """The same member signed in a second time: a session of its own."""
    client = Client()
    client.force_login(member.user)
    return Member(member.user, client.cookies[django_settings.SESSION_COOKIE_NAME].value, client)


async def assert_closed_as_signed_out(tab) -> None:
    """Told at once, without sending anything: a socket that only listens is cut off too."""
    frame = await tab.recv()
    assert frame["type"] == "error" and frame["code"] == "not_found" and "signed out" in frame["message"]
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    tab.connected = False
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_a_member_signed_out_mid_session_is_refused_and_hears_no_more(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    laptop = await database_sync_to_async(another_browser)(alice)
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    other = sockets(laptop, conversation.id)
    assert (await other.connect())[0]
    await other.recv()

    response = await database_sync_to_async(alice.client.post)("/accounts/logout/")
    assert response.status_code == 302
    await assert_closed_as_signed_out(tab)

    # The member's other session goes on; the signed-out socket hears none of it.
    await other.send(type="send", content="from the laptop", client_id=str(uuid.uuid4()))
    reply = await follow_reply(other.recv)
    assert reply.end["status"] == "complete"
    await assert_silent(other, alice)  # everything about the reply has reached this process's tabs
    assert tab.heard_nothing_more()


async def test_a_password_change_signs_out_open_sockets_of_other_sessions(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    laptop = await database_sync_to_async(another_browser)(alice)
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()

    new_password = "a-new-Passphrase-42"
    response = await database_sync_to_async(laptop.client.post)(
        "/accounts/password_change/",
        {"old_password": "pw-alice-123", "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    await assert_closed_as_signed_out(tab)

    # The session that changed the password was kept (under a new key) and works.
    laptop.session = laptop.client.cookies[django_settings.SESSION_COOKIE_NAME].value
    other = sockets(laptop, conversation.id)
    assert (await other.connect())[0]
    await other.recv()
    await other.send(type="send", content="new password, same me", client_id=str(uuid.uuid4()))
    reply = await follow_reply(other.recv)
    assert reply.end["status"] == "complete"
    await assert_silent(other, alice)
    assert tab.heard_nothing_more()


async def test_a_member_deactivated_by_staff_is_cut_off_at_once(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()

    def deactivate() -> None:  # as the admin does: a save, which tells the member's sockets
        user = get_user_model().objects.get(pk=alice.user.pk)
        user.is_active = False
        user.save()

    await database_sync_to_async(deactivate)()
    assert (await tab.recv())["code"] == "not_found"
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False


async def test_a_session_ended_without_notice_is_refused_on_the_next_frame(alice, upstream, sockets):
    """The per-frame check backs up the notice (lost when Redis is down, or a session store cleared)."""
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()
    await database_sync_to_async(Session.objects.filter(session_key=alice.session).delete)()
    await assert_silent(tab, alice)  # nobody told it
    await tab.send(type="send", content="am I still in?", client_id=str(uuid.uuid4()))
    await assert_closed_as_signed_out(tab)


async def test_a_conversation_deleted_while_its_snapshot_waits_is_not_found(alice, sockets):
    """A reply whose process died cannot answer the snapshot's sync; the conversation goes meanwhile."""
    conversation = await database_sync_to_async(alice.conversation)()

    def reply_without_a_process() -> None:  # streaming, its lease still running
        conversation.current_leaf = Message.objects.create(
            conversation=conversation, role="assistant", status="streaming", content="half",
            lease_expires_at=timezone.now() + timedelta(minutes=5),
        )
        conversation.save()

    await database_sync_to_async(reply_without_a_process)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await assert_silent(tab, alice)  # the snapshot waits for the reply's own text
    await database_sync_to_async(conversation.delete)()
    assert (await tab.recv())["code"] == "not_found"  # after the sync's timeout
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False


@pytest.mark.parametrize("frame", ["regenerate", "edit", "send_with_image", "bad_frame"])
async def test_any_frame_from_a_session_that_ended_unannounced_stores_nothing(alice, upstream, sockets, frame):
    """Turn frames check the session inside their own worker thread; images and bad frames before."""
    import base64
    import io

    from PIL import Image

    from conversations.models import Attachment

    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="first", client_id=str(uuid.uuid4()))
    first = await follow_reply(tab.recv)
    question = await database_sync_to_async(Message.objects.get)(role="user")
    await database_sync_to_async(Session.objects.filter(session_key=alice.session).delete)()
    await assert_silent(tab, alice)  # nobody told it
    if frame == "regenerate":
        await tab.send(type="regenerate", message_id=first.message_id, client_id=str(uuid.uuid4()))
    elif frame == "edit":
        await tab.send(type="edit", message_id=str(question.id), content="changed", client_id=str(uuid.uuid4()))
    elif frame == "send_with_image":
        out = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(out, "PNG")
        data = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
        await tab.send(type="send", content=[{"type": "image_url", "image_url": {"url": data}}],
                       client_id=str(uuid.uuid4()))
    else:
        await tab.send(type="send")
    signed_out = await tab.recv()
    assert signed_out["type"] == "error" and signed_out["code"] == "not_found" and "signed out" in signed_out["message"]
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    tab.connected = False
    assert await database_sync_to_async(Message.objects.count)() == 2
    assert not await database_sync_to_async(Attachment.objects.exists)()
