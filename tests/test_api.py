"""The JSON API and the pages, through Django's real views, middleware and
Postgres, with the fake upstream as a real HTTP server for /api/models/."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from conversations.chat import replies, turns
from conversations.models import Conversation, Message
from tests.conftest import free_port

pytestmark = pytest.mark.django_db

CONTRACT_KEYS = {"id", "title", "model", "system_prompt", "params", "created_at", "updated_at"}
# The contract's, plus the branch switcher's sibling_ids (docs/protocol.md).
MESSAGE_KEYS = {"id", "role", "content", "status", "parent_id", "created_at", "sibling_ids"}
ASSISTANT_KEYS = MESSAGE_KEYS | {"model", "finish_reason", "usage", "context"}  # context: where it began


def post(client: Client, url: str, data, **extra):
    return client.post(url, json.dumps(data), content_type="application/json", **extra)


def patch(client: Client, url: str, data, **extra):
    return client.patch(url, json.dumps(data), content_type="application/json", **extra)


def url_of(conversation) -> str:
    return f"/api/conversations/{conversation.id}/"


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def answered_turn(member, conversation, question: str, answer: str):
    """A user message and its completed reply, stored as the chat engine stores them."""
    turn = turns.ask(member.user, conversation.id, question, None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text=answer, status="complete", finish_reason="stop",
                         usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    return turn


def snapshot_row(conversation) -> dict:
    row = Conversation.objects.filter(pk=conversation.pk).values().get()
    row["message_count"] = Message.objects.filter(conversation_id=conversation.pk).count()
    return row


# --------------------------------------------------------------------------- list


def test_the_list_shows_only_my_conversations_newest_first(alice, bob):
    now = timezone.now()
    old = alice.conversation(title="old", updated_at=now - timedelta(days=2))
    new = alice.conversation(title="new", updated_at=now)
    middle = alice.conversation(title="middle", updated_at=now - timedelta(days=1))
    bob.conversation(title="bob's secret")

    response = alice.client.get("/api/conversations/")

    assert response.status_code == 200
    found = response.json()
    assert [c["id"] for c in found] == [str(new.id), str(middle.id), str(old.id)]
    assert all(set(c) == CONTRACT_KEYS for c in found)


def test_the_list_search_matches_titles_and_message_text(alice, bob):
    by_title = alice.conversation(title="Sourdough Planning")
    by_message = alice.conversation(title="Weekend")
    answered_turn(alice, by_message, "how long should SOURDOUGH rise?", "About 4 hours.")
    answered_turn(alice, by_message, "and the sourdough starter?", "Feed it daily.")
    by_reply = alice.conversation(title="Unrelated")
    answered_turn(alice, by_reply, "what bread is sour?", "Sourdough, mostly.")
    alice.conversation(title="Taxes")
    bobs = bob.conversation(title="sourdough too")
    answered_turn(bob, bobs, "sourdough?", "yes")

    response = alice.client.get("/api/conversations/", {"q": "  sourdough "})

    assert response.status_code == 200
    ids = [c["id"] for c in response.json()]
    assert sorted(ids) == sorted([str(by_title.id), str(by_message.id), str(by_reply.id)])
    assert len(ids) == len(set(ids))  # two matching messages, one row


def test_a_search_with_a_nul_character_is_not_a_server_error(alice):
    alice.conversation(title="anything")
    response = alice.client.get("/api/conversations/", {"q": "a\x00b"})
    assert response.status_code == 200
    assert response.json() == []


def test_an_anonymous_caller_gets_401_json_everywhere(alice):
    conversation = alice.conversation(title="private")
    anonymous = Client()
    for response in (
        anonymous.get("/api/conversations/"),
        post(anonymous, "/api/conversations/", {"title": "x"}),
        anonymous.get(url_of(conversation)),
        patch(anonymous, url_of(conversation), {"title": "hacked"}),
        anonymous.delete(url_of(conversation)),
        anonymous.get(f"{url_of(conversation)}export?format=md"),
        anonymous.get("/api/models/"),
    ):
        assert_json_error(response, 401, "unauthenticated")
    assert Conversation.objects.get(pk=conversation.pk).title == "private"


def test_the_list_costs_the_same_number_of_queries_for_many_conversations(alice, django_assert_max_num_queries):
    first = alice.conversation(title="one")
    answered_turn(alice, first, "hello", "hi")
    with django_assert_max_num_queries(50) as baseline:
        assert len(alice.client.get("/api/conversations/").json()) == 1
    with django_assert_max_num_queries(50) as baseline_search:
        assert len(alice.client.get("/api/conversations/", {"q": "hello"}).json()) == 1

    for i in range(30):
        conversation = alice.conversation(title=f"hello {i}")
        answered_turn(alice, conversation, f"hello again {i}", "hi")

    with django_assert_max_num_queries(len(baseline)):
        assert len(alice.client.get("/api/conversations/").json()) == 31
    with django_assert_max_num_queries(len(baseline_search)):
        assert len(alice.client.get("/api/conversations/", {"q": "hello"}).json()) == 31


# --------------------------------------------------------------------------- create


def test_creating_a_conversation_answers_201_with_exactly_the_contract_keys(alice):
    response = post(alice.client, "/api/conversations/", {
        "title": "Plans", "model": "gpt-x", "system_prompt": "Be kind.",
        "params": {"temperature": 0.5, "stop": ["END"]},
    })

    assert response.status_code == 201
    data = response.json()
    assert set(data) == CONTRACT_KEYS
    assert data["title"] == "Plans"
    assert data["model"] == "gpt-x"
    assert data["system_prompt"] == "Be kind."
    assert data["params"] == {"temperature": 0.5, "stop": ["END"]}
    stored = Conversation.objects.get(pk=data["id"])
    assert stored.owner == alice.user
    assert stored.params == {"temperature": 0.5, "stop": ["END"]}


def test_a_conversation_created_without_a_model_gets_the_default_model(alice, settings):
    settings.DEFAULT_MODEL = "house-model"
    response = post(alice.client, "/api/conversations/", {})
    assert response.status_code == 201
    data = response.json()
    assert data["model"] == "house-model"
    assert data["title"] == "" and data["system_prompt"] == "" and data["params"] == {}
    assert post(alice.client, "/api/conversations/", {"model": ""}).json()["model"] == "house-model"


@pytest.mark.parametrize(
    "body",
    [{"params": {"temperature": 5}}, {"params": {"top_p": 2}}, {"params": {"n": 2}}, {"params": {"logit_bias": {"x": 2}}},
     {"params": {"max_tokens": 0}}, {"params": {"stop": ["a", "b", "c", "d", "e"]}},
     {"params": {"response_format": {"type": "xml"}}}, {"params": {"user": "a\x00b"}},
     {"params": "temperature"}, {"params": '{"temperature": 1}'}, {"params": [1, 2]}, {"params": []},
     {"params": 3}, {"title": 5}, {"title": None}, {"title": "t" * 201}, {"title": "a\x00b"},
     {"model": ["gpt"]}, {"system_prompt": {"text": "x"}}, {"colour": "blue"}],
)
def test_creating_with_invalid_fields_is_400_invalid_and_stores_nothing(alice, body):
    response = post(alice.client, "/api/conversations/", body)
    error = assert_json_error(response, 400, "invalid")
    assert "fields" in error
    assert not Conversation.objects.filter(owner=alice.user).exists()


@pytest.mark.parametrize("raw", ["[]", '"title"', "42", "null", "not json", "{", b"\xff\xfe"])
def test_creating_with_a_body_that_is_not_a_json_object_is_400(alice, raw):
    response = alice.client.post("/api/conversations/", raw, content_type="application/json")
    assert_json_error(response, 400, "invalid")
    assert not Conversation.objects.filter(owner=alice.user).exists()


@pytest.mark.parametrize("raw", ['{"title": "a\\ud800b"}', '{"params": {"user": "\\udfff"}}'])
def test_a_lone_surrogate_in_the_body_is_400_not_a_server_error(alice, raw):
    assert "\\u" in raw
    assert_json_error(alice.client.post("/api/conversations/", raw, content_type="application/json"), 400, "invalid")
    conversation = alice.conversation(title="same")
    assert_json_error(alice.client.patch(url_of(conversation), raw, content_type="application/json"), 400, "invalid")
    assert Conversation.objects.get(pk=conversation.pk).title == "same"


def test_an_unsupported_method_is_405_json(alice):
    conversation = alice.conversation()
    for response in (
        alice.client.put("/api/conversations/", "{}", content_type="application/json"),
        alice.client.post(url_of(conversation), "{}", content_type="application/json"),
        alice.client.post(f"{url_of(conversation)}export"),
        alice.client.post("/api/models/"),
    ):
        assert_json_error(response, 405, "method_not_allowed")
        assert response["Allow"]


# --------------------------------------------------------------------------- detail


def test_the_detail_has_the_current_branch_oldest_first(alice):
    conversation = alice.conversation(title="Branches", system_prompt="sys")
    first = answered_turn(alice, conversation, "first question", "first answer")
    answered_turn(alice, conversation, "second question", "abandoned answer")
    regenerated = turns.regenerate(alice.user, conversation.id, None)
    replies.finish_reply(regenerated.reply.id, regenerated.reply.run_id, text="better answer", status="complete",
                         finish_reason="stop")

    response = alice.client.get(url_of(conversation))

    assert response.status_code == 200
    data = response.json()
    assert set(data) == CONTRACT_KEYS | {"messages"}
    messages = data["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "first question"), ("assistant", "first answer"),
        ("user", "second question"), ("assistant", "better answer"),
    ]
    assert messages[0]["parent_id"] is None
    assert [m["parent_id"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]
    assert messages[1]["id"] == str(first.reply.id)
    for message in messages:
        # client_id: the sending tab's id for the frame, when it gave one (docs/protocol.md).
        assert set(message) - {"client_id"} == (ASSISTANT_KEYS if message["role"] == "assistant" else MESSAGE_KEYS)
        assert message["status"] == "complete"
    assert messages[1]["model"] == "fake-model"
    assert messages[1]["finish_reason"] == "stop"
    assert messages[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_the_detail_of_a_new_conversation_has_no_messages(alice):
    conversation = alice.conversation(title="empty")
    data = alice.client.get(url_of(conversation)).json()
    assert data["id"] == str(conversation.id)
    assert data["messages"] == []


def test_the_detail_shows_content_parts_as_sent(alice):
    conversation = alice.conversation()
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    question = Message.objects.create(conversation=conversation, role="user", content="what is this?",
                                      content_parts=parts)
    conversation.current_leaf = question
    conversation.save()
    messages = alice.client.get(url_of(conversation)).json()["messages"]
    assert messages == [{
        "id": str(question.id), "role": "user", "content": parts, "status": "complete",
        "parent_id": None, "created_at": question.created_at.isoformat(), "sibling_ids": [str(question.id)],
    }]


@pytest.mark.parametrize("bad_id", [str(uuid.uuid4()), "not-a-uuid", "123"])
def test_an_unknown_or_malformed_id_is_404_json(alice, bad_id):
    for response in (
        alice.client.get(f"/api/conversations/{bad_id}/"),
        patch(alice.client, f"/api/conversations/{bad_id}/", {"title": "x"}),
        alice.client.delete(f"/api/conversations/{bad_id}/"),
        alice.client.get(f"/api/conversations/{bad_id}/export?format=json"),
    ):
        assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/api/nothing-here/", "/api/conversations/x/y/z/", "/api/uploads/a/b"])
def test_a_path_that_matches_nothing_under_the_api_is_404_json_and_elsewhere_a_page(alice, path):
    for response in (alice.client.get(path), Client().get(path), post(alice.client, path, {})):
        body = assert_json_error(response, 404, "not_found")
        assert body["message"] == "There is nothing at this address."
    page = alice.client.get("/nothing-here/")
    assert page.status_code == 404 and not page["Content-Type"].startswith("application/json")


# --------------------------------------------------------------------------- patch


def test_patch_changes_title_model_system_prompt_and_params(alice):
    conversation = alice.conversation(title="before", params={"temperature": 1})
    before = conversation.updated_at

    response = patch(alice.client, url_of(conversation), {
        "title": "after", "model": "other-model", "system_prompt": "Answer in French.",
        "params": {"top_p": 0.5, "seed": 7},
    })

    assert response.status_code == 200
    data = response.json()
    assert data["title"] == "after"
    assert data["model"] == "other-model"
    assert data["system_prompt"] == "Answer in French."
    assert data["params"] == {"top_p": 0.5, "seed": 7}
    assert data["messages"] == []
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.title, stored.model, stored.system_prompt) == ("after", "other-model", "Answer in French.")
    assert stored.params == {"top_p": 0.5, "seed": 7}
    assert stored.updated_at > before


def test_patch_changes_only_the_fields_it_names(alice):
    conversation = alice.conversation(title="keep", system_prompt="keep me", params={"temperature": 1})
    data = patch(alice.client, url_of(conversation), {"title": "renamed"}).json()
    assert data["title"] == "renamed"
    assert data["system_prompt"] == "keep me"
    assert data["params"] == {"temperature": 1}
    assert data["model"] == "fake-model"


def test_patch_with_an_empty_model_keeps_the_model_and_null_params_clear_them(alice):
    conversation = alice.conversation(model="chosen", params={"temperature": 1})
    data = patch(alice.client, url_of(conversation), {"model": "", "params": None}).json()
    assert data["model"] == "chosen"
    assert data["params"] == {}
    data = patch(alice.client, url_of(conversation), {"params": {"temperature": 0.2, "top_p": None}}).json()
    assert data["params"] == {"temperature": 0.2}


@pytest.mark.parametrize(
    "body",
    [{"title": 5}, {"title": ["a"]}, {"model": 3}, {"system_prompt": False}, {"params": "x"},
     {"params": '{"temperature": 1}'}, {"params": [1]}, {"params": {"temperature": 5}},
     {"params": {"frequency_penalty": "high"}}, {"owner": 1}, {"id": str(uuid.uuid4())}],
)
def test_patch_with_wrong_types_is_400_and_changes_nothing(alice, body):
    conversation = alice.conversation(title="same", params={"temperature": 1})
    before = snapshot_row(conversation)
    assert_json_error(patch(alice.client, url_of(conversation), body), 400, "invalid")
    assert snapshot_row(conversation) == before


def test_patch_with_a_body_that_is_not_an_object_is_400(alice):
    conversation = alice.conversation(title="same")
    assert_json_error(patch(alice.client, url_of(conversation), ["title", "x"]), 400, "invalid")
    response = alice.client.patch(url_of(conversation), "title=x", content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 400, "invalid")
    assert Conversation.objects.get(pk=conversation.pk).title == "same"


# --------------------------------------------------------------------------- delete


def test_delete_answers_204_and_the_conversation_and_its_messages_are_gone(alice):
    conversation = alice.conversation(title="bye")
    answered_turn(alice, conversation, "q", "a")

    response = alice.client.delete(url_of(conversation))

    assert response.status_code == 204
    assert response.content == b""
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert_json_error(alice.client.get(url_of(conversation)), 404, "not_found")
    assert_json_error(alice.client.delete(url_of(conversation)), 404, "not_found")


# --------------------------------------------------------------------------- export


def test_export_as_json_is_an_attachment_with_the_whole_conversation(alice):
    conversation = alice.conversation(title="Bread & Butter!", system_prompt="Be brief.")
    answered_turn(alice, conversation, "How do I bake bread?", "Knead, rise, bake.")

    response = alice.client.get(f"{url_of(conversation)}export", {"format": "json"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == 'attachment; filename="bread-butter.json"'
    data = json.loads(response.content)
    assert data["id"] == str(conversation.id)
    assert data["system_prompt"] == "Be brief."
    assert [m["content"] for m in data["messages"]] == ["How do I bake bread?", "Knead, rise, bake."]


def test_export_as_markdown_is_an_attachment_with_the_text(alice):
    conversation = alice.conversation(title="Bread", system_prompt="Be brief.")
    answered_turn(alice, conversation, "How do I bake bread?", "Knead, rise, bake.")

    response = alice.client.get(f"{url_of(conversation)}export", {"format": "md"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="bread.md"'
    text = response.content.decode()
    assert "# Bread" in text
    assert "Be brief." in text
    assert "How do I bake bread?" in text
    assert "Knead, rise, bake." in text


def test_export_of_an_untitled_conversation_has_a_fallback_filename(alice):
    conversation = alice.conversation()
    response = alice.client.get(f"{url_of(conversation)}export")
    assert response["Content-Disposition"] == 'attachment; filename="conversation.json"'


def test_export_in_an_unknown_format_is_400(alice):
    conversation = alice.conversation()
    assert_json_error(alice.client.get(f"{url_of(conversation)}export", {"format": "pdf"}), 400, "invalid")


# --------------------------------------------------------------------------- ownership


def test_another_members_conversation_is_404_for_every_method_and_stays_unchanged(alice, bob):
    conversation = alice.conversation(title="alice only", system_prompt="secret prompt", params={"seed": 1})
    answered_turn(alice, conversation, "alice's question", "alice's answer")
    conversation.refresh_from_db()
    before = snapshot_row(conversation)

    for response in (
        bob.client.get(url_of(conversation)),
        patch(bob.client, url_of(conversation), {"title": "bob was here", "params": {"seed": 2}}),
        bob.client.delete(url_of(conversation)),
        bob.client.get(f"{url_of(conversation)}export", {"format": "json"}),
        bob.client.get(f"{url_of(conversation)}export", {"format": "md"}),
    ):
        assert_json_error(response, 404, "not_found")
        assert b"alice" not in response.content
        assert b"secret prompt" not in response.content

    assert snapshot_row(conversation) == before
    assert bob.client.get("/api/conversations/").json() == []
    assert bob.client.get("/api/conversations/", {"q": "alice"}).json() == []


def test_a_deactivated_member_loses_access_at_once(alice):
    conversation = alice.conversation(title="mine")
    alice.user.is_active = False
    alice.user.save()
    response = alice.client.get(url_of(conversation))
    assert response.status_code in (401, 404)
    assert response["Content-Type"].startswith("application/json")


# --------------------------------------------------------------------------- CSRF


@pytest.fixture
def strict_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    return client


def csrf_token(client: Client) -> str:
    assert client.get("/").status_code == 200  # the page sets the csrftoken cookie
    return client.cookies[django_settings.CSRF_COOKIE_NAME].value


def test_unsafe_methods_without_the_csrf_token_are_refused_with_403_json(alice, strict_client):
    conversation = alice.conversation(title="guarded")
    for response in (
        post(strict_client, "/api/conversations/", {"title": "forged"}),
        patch(strict_client, url_of(conversation), {"title": "forged"}),
        strict_client.delete(url_of(conversation)),
    ):
        assert_json_error(response, 403, "csrf")
    assert list(Conversation.objects.filter(owner=alice.user).values_list("title", flat=True)) == ["guarded"]


def test_a_wrong_csrf_token_is_refused(alice, strict_client):
    csrf_token(strict_client)
    response = post(strict_client, "/api/conversations/", {"title": "forged"}, HTTP_X_CSRFTOKEN="x" * 32)
    assert_json_error(response, 403, "csrf")


def test_unsafe_methods_with_the_csrf_header_succeed(alice, strict_client):
    token = csrf_token(strict_client)

    created = post(strict_client, "/api/conversations/", {"title": "legit"}, HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201
    url = f"/api/conversations/{created.json()['id']}/"
    patched = patch(strict_client, url, {"title": "renamed"}, HTTP_X_CSRFTOKEN=token)
    assert patched.status_code == 200
    assert patched.json()["title"] == "renamed"
    assert strict_client.delete(url, HTTP_X_CSRFTOKEN=token).status_code == 204
    assert not Conversation.objects.filter(owner=alice.user).exists()


def test_safe_methods_need_no_csrf_token(alice, strict_client):
    conversation = alice.conversation(title="readable")
    assert strict_client.get("/api/conversations/").status_code == 200
    assert strict_client.get(url_of(conversation)).status_code == 200


# --------------------------------------------------------------------------- models


def test_the_models_list_comes_from_the_upstream(alice, upstream, settings):
    settings.DEFAULT_MODEL = "fake-model"
    response = alice.client.get("/api/models/")
    assert response.status_code == 200
    assert response.json() == {
        "models": ["fake-model"], "default": "fake-model",
        "available": [{"id": "fake-model", "provider": "", "context_length": 8192, "images": True}],
    }


def test_the_models_list_offers_the_default_model_when_the_upstream_is_down(alice, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    response = alice.client.get("/api/models/")
    assert response.status_code == 200
    data = response.json()
    assert data["models"] == [settings.DEFAULT_MODEL] and data["default"] == settings.DEFAULT_MODEL
    assert data["unavailable"][0]["code"] == "upstream_unavailable" and data["unavailable"][0]["message"]


def test_the_models_list_with_a_refused_key_says_so_and_never_shows_the_key(alice, upstream, settings):
    settings.OPENAI_API_KEY = "sk-wrong-key-for-this-test-0000"
    response = alice.client.get("/api/models/")
    assert response.status_code == 200
    assert response.json()["unavailable"][0]["code"] == "upstream_auth"
    assert b"sk-wrong" not in response.content
    assert b"wrong-key-for-this-test" not in response.content


# --------------------------------------------------------------------------- pages


def test_the_chat_page_sends_anonymous_users_to_the_login_page():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_login_page_renders_with_a_csrf_token():
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content


def test_a_member_can_sign_in_and_see_the_chat_page(alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    token = client.cookies[django_settings.CSRF_COOKIE_NAME].value
    assert page.status_code == 200
    response = client.post("/accounts/login/", {
        "username": "alice", "password": "pw-alice-123", "csrfmiddlewaretoken": token,
    })
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_the_conversation_page_is_404_for_another_member(alice, bob):
    conversation = alice.conversation(title="alice's page")
    assert alice.client.get(f"/c/{conversation.id}/").status_code == 200
    response = bob.client.get(f"/c/{conversation.id}/")
    assert response.status_code == 404
    assert b"alice&#x27;s page" not in response.content and b"alice's page" not in response.content


def test_the_conversation_page_sends_anonymous_users_to_the_login_page(alice):
    conversation = alice.conversation()
    response = Client().get(f"/c/{conversation.id}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_no_page_shows_the_upstream_api_key(alice):
    conversation = alice.conversation(title="keys")
    key = django_settings.OPENAI_API_KEY.encode()
    for url in ("/", f"/c/{conversation.id}/", "/api/conversations/", url_of(conversation)):
        assert key not in alice.client.get(url).content
