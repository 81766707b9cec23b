"""Arbitrary input never gets past validation as anything but a clear error.

Frames are fuzzed at the validator every frame goes through, and through the
real consumer on one open socket; JSON bodies go through the real views, where
nothing may answer 500 or store a row.
"""

import json

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.models import Conversation, Message
from conversations.realtime.frames import ClientFrame, FrameError, parse_frame
from tests.conftest import assert_silent, open_tab

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["send", "stop", "regenerate", "edit", "hack"]) | st.text(max_size=8)},
    optional={
        "content": json_values,
        "client_id": st.uuids().map(str) | json_values,
        "message_id": st.uuids().map(str) | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), frame_like.map(json.dumps)))
def test_any_frame_is_either_valid_or_a_clear_error(raw):
    try:
        frame = parse_frame(raw)
    except FrameError as error:
        assert error.code in ("invalid", "too_large") and error.message
    else:
        assert isinstance(frame, ClientFrame)
        assert frame.type in ("send", "stop", "regenerate", "edit")
        if frame.type in ("send", "edit"):
            assert frame.text.strip() or frame.parts


body_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"title": json_values, "model": json_values, "system_prompt": json_values, "params": json_values},
    ),
)


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=body_like)
def test_any_api_body_gets_json_and_never_a_500(alice, body):
    before = Conversation.objects.count()
    response = alice.client.post("/api/conversations/", json.dumps(body), content_type="application/json")
    assert response.status_code in (201, 400), response.content
    assert response["Content-Type"] == "application/json"
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "invalid"
        assert Conversation.objects.count() == before
    else:
        conversation = Conversation.objects.get(pk=response.json()["id"])
        patched = alice.client.patch(
            f"/api/conversations/{conversation.id}/", json.dumps(body), content_type="application/json"
        )
        assert patched.status_code in (200, 400), patched.content


@pytest.mark.django_db(transaction=True)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.text(max_size=200), json_values.map(json.dumps), frame_like.map(json.dumps)))
async def test_any_frame_through_the_socket_leaves_it_open_and_stores_nothing_when_rejected(fuzz_tab, alice, raw):
    """The real consumer: a rejected frame is an error frame, no row, and the socket lives on."""
    tab, conversation = fuzz_tab
    try:
        frame = parse_frame(raw)
    except FrameError:
        frame = None
    if frame is not None and frame.type in ("send", "edit"):
        return  # valid questions start replies: the reply tests cover them
    before = await database_sync_to_async(Message.objects.filter(conversation=conversation).count)()
    await tab.send_raw(raw)
    if frame is None or frame.type == "regenerate":  # nothing to regenerate in an empty conversation
        answer = await tab.recv()
        assert answer["type"] == "error" and answer["code"] in ("invalid", "too_large", "not_found"), answer
    await assert_silent(tab, alice)  # nothing more: no reply started, no crash frame
    assert not tab.comm.future.done(), "the consumer ended"
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == before


@pytest.fixture
async def fuzz_tab(alice, sockets, settings):
    settings.WS_FRAME_BURST = 10_000  # every example goes through one socket: not a flood
    conversation = await database_sync_to_async(alice.conversation)()
    return await open_tab(sockets, alice, conversation), conversation
