"""Providers staff add: each conversation's requests go to its own provider with its own key,
keys stay secret (encrypted at rest, write-only, in no page, answer, frame or log), private
addresses need a deliberate switch, and members use only the models they are allowed."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from channels.db import database_sync_to_async
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test import Client

from conversations.models import Conversation, Message, Provider, ProviderModel, Usage
from conversations.upstream import providers
from tests.conftest import follow_reply, open_tab
from tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.django_db(transaction=True)

KEYS = {"north": "sk-north-PROVIDER-key-1111111111", "south": "sk-south-PROVIDER-key-2222222222"}


@pytest.fixture
def servers():
    with FakeUpstream(api_key=KEYS["north"], model="north-large", models=["north-large", "north-small"]) as north, \
            FakeUpstream(api_key=KEYS["south"], model="south-chat") as south:
        yield {"north": north, "south": south}


def add_provider(name: str, server: FakeUpstream, **fields) -> Provider:
    provider = Provider(name=name, base_url=server.base_url, allow_private_address=True, **fields)
    provider.set_api_key(KEYS[name])
    provider.save()
    return provider


def enable(provider: Provider, model: str, **fields) -> ProviderModel:
    fields.setdefault("context_length", 32_000)
    return ProviderModel.objects.create(provider=provider, name=model, enabled=True, **fields)


@pytest.fixture
def two_providers(servers, upstream):
    north, south = add_provider("north", servers["north"]), add_provider("south", servers["south"])
    enable(north, "north-large")
    enable(south, "south-chat")
    return north, south


@pytest.fixture
def staff_client(make_member):
    staff = make_member("root", is_staff=True, is_superuser=True)
    return staff.client


async def test_two_providers_serve_two_conversations_at_once_each_with_its_own_key(
    alice, servers, two_providers, sockets
):
    north, south = two_providers
    one = await database_sync_to_async(alice.conversation)(model="north-large", provider=north)
    two = await database_sync_to_async(alice.conversation)(model="south-chat", provider=south)
    tab_one, tab_two = await open_tab(sockets, alice, one), await open_tab(sockets, alice, two)
    await asyncio.gather(
        tab_one.send(type="send", content='to the north fake:{"tokens": 20, "delay": 0.01}', client_id=str(uuid.uuid4())),
        tab_two.send(type="send", content='to the south fake:{"tokens": 20, "delay": 0.01}', client_id=str(uuid.uuid4())),
    )
    replies = await asyncio.gather(follow_reply(tab_one.recv), follow_reply(tab_two.recv))
    assert all(reply.end["type"] == "done" for reply in replies)
    (north_request,), (south_request,) = servers["north"].requests, servers["south"].requests
    assert north_request["headers"]["authorization"] == f"Bearer {KEYS['north']}"
    assert south_request["headers"]["authorization"] == f"Bearer {KEYS['south']}"
    assert north_request["body"]["model"] == "north-large" and south_request["body"]["model"] == "south-chat"
    assert "to the north" in json.dumps(north_request["body"]) and "to the south" in json.dumps(south_request["body"])
    rows = await database_sync_to_async(lambda: {r.reply_id: r for r in Usage.objects.all()})()
    reply_rows = await database_sync_to_async(lambda: list(Message.objects.filter(role="assistant")))()
    for reply in reply_rows:
        expected = "north" if reply.conversation_id == one.id else "south"
        assert reply.request["provider"] == expected and rows[reply.id].provider == expected


def test_keys_are_encrypted_at_rest_and_rotate(two_providers, settings):
    north, _south = two_providers
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM conversations_provider WHERE id = %s", [north.id])
        (stored,) = cursor.fetchone()
    assert KEYS["north"] not in stored and stored
    assert Provider.objects.get(pk=north.pk).api_key == KEYS["north"]

    old = Fernet.generate_key().decode()
    settings.PROVIDER_KEY_SECRETS = [old]
    call_command("rotate_provider_keys", from_secret_key=settings.SECRET_KEY)  # from the derived key
    assert Provider.objects.get(pk=north.pk).api_key == KEYS["north"]
    new = Fernet.generate_key().decode()
    settings.PROVIDER_KEY_SECRETS = [new, old]
    call_command("rotate_provider_keys")
    settings.PROVIDER_KEY_SECRETS = [new]  # the old key is gone: everything still opens
    assert {p.api_key for p in Provider.objects.all()} == set(KEYS.values())
    settings.PROVIDER_KEY_SECRETS = [old]
    with pytest.raises(ValueError):
        Provider.objects.get(pk=north.pk).api_key  # noqa: B018  (the new key is needed now)


def test_the_key_is_write_only_in_the_admin(staff_client, two_providers):
    north, _south = two_providers
    url = f"/admin/conversations/provider/{north.pk}/change/"
    page = staff_client.get(url).content.decode()
    assert KEYS["north"] not in page and KEYS["north"][-6:] not in page and 'name="api_key"' in page
    form = {"name": "north", "base_url": north.base_url, "api_key": "", "allow_private_address": "on",
            "enabled": "on", "models-TOTAL_FORMS": "1", "models-INITIAL_FORMS": "1", "models-MIN_NUM_FORMS": "0",
            "models-MAX_NUM_FORMS": "1000", "models-0-id": str(north.models.get().pk), "models-0-provider": str(north.pk),
            "models-0-name": "north-large", "models-0-enabled": "on", "models-0-context_length": "32000"}
    assert staff_client.post(url, form).status_code == 302
    assert Provider.objects.get(pk=north.pk).api_key == KEYS["north"]  # empty: kept
    assert staff_client.post(url, {**form, "api_key": "sk-new-key-333333333"}).status_code == 302
    assert Provider.objects.get(pk=north.pk).api_key == "sk-new-key-333333333"


def test_a_private_address_needs_the_switch(staff_client, settings):
    settings.UPSTREAM_ALLOWED_HOSTS = []
    form = {"name": "lan", "base_url": "http://10.1.2.3:8000/v1", "api_key": "k", "enabled": "on",
            "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0", "models-MIN_NUM_FORMS": "0",
            "models-MAX_NUM_FORMS": "1000"}
    refused = staff_client.post("/admin/conversations/provider/add/", form)
    assert refused.status_code == 200 and "not allowed" in refused.content.decode()
    assert not Provider.objects.exists()
    accepted = staff_client.post("/admin/conversations/provider/add/", {**form, "allow_private_address": "on"})
    assert accepted.status_code == 302 and Provider.objects.get().allow_private_address


async def test_a_private_provider_without_the_switch_is_refused_at_connect_time_too(alice, servers, upstream, sockets,
                                                                                   settings):
    settings.UPSTREAM_ALLOWED_HOSTS = []  # the fake servers are on loopback
    north = await database_sync_to_async(add_provider)("north", servers["north"])
    await database_sync_to_async(Provider.objects.filter(pk=north.pk).update)(allow_private_address=False)
    await database_sync_to_async(enable)(north, "north-large")
    conversation = await database_sync_to_async(alice.conversation)(model="north-large", provider=north)
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="hello", client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["code"] == "upstream_unavailable" and reply.end["detail"]["reason"] == "blocked"
    assert servers["north"].requests == []


def test_fetching_a_providers_models_adds_them_disabled_with_family_defaults(staff_client, servers):
    provider = add_provider("north", servers["north"])
    response = staff_client.post("/admin/conversations/provider/", {"action": "fetch_models",
                                                                     "_selected_action": [provider.pk]})
    assert response.status_code == 302
    rows = {row.name: row for row in provider.models.all()}
    assert set(rows) == {"north-large", "north-small"} and not any(row.enabled for row in rows.values())
    assert all(row.context_length == providers.DEFAULT_CONTEXT_LENGTH for row in rows.values())
    assert providers.context_length_for("gpt-4o-mini") == 128_000
    assert providers.context_length_for("qwen2.5:7b") == 32_768


def test_the_models_list_names_each_models_provider_and_follows_group_allow_lists(alice, bob, two_providers,
                                                                                  upstream, settings):
    settings.DEFAULT_MODEL = "fake-model"
    north, south = two_providers
    team = Group.objects.create(name="research")
    north.models.get().groups.add(team)
    alice.user.groups.add(team)
    for member, expected in ((alice, {("north-large", "north"), ("south-chat", "south"), ("fake-model", "")}),
                             (bob, {("south-chat", "south"), ("fake-model", "")})):
        data = member.client.get("/api/models/").json()
        assert {(m["id"], m["provider"]) for m in data["available"]} == expected


async def test_a_model_taken_from_a_members_allowed_list_fails_clearly_without_going_upstream(
    alice, servers, two_providers, sockets
):
    north, _south = two_providers
    conversation = await database_sync_to_async(alice.conversation)(model="north-large", provider=north)
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="first", client_id=str(uuid.uuid4()))
    assert (await follow_reply(tab.recv)).end["type"] == "done"

    team = await database_sync_to_async(Group.objects.create)(name="others")
    await database_sync_to_async(lambda: north.models.get().groups.add(team))()  # now only for "others"
    await tab.send(type="send", content="second", client_id=str(uuid.uuid4()))
    refused = await tab.until(lambda f: f["type"] == "error")
    assert refused["code"] == "invalid" and refused["detail"] == {"reason": "model_not_allowed", "model": "north-large"}
    assert "north-large" in refused["message"]
    assert len(servers["north"].requests) == 1
    assert await database_sync_to_async(Message.objects.filter(content="second").exists)() is False


def test_a_conversation_made_with_a_providers_model_records_the_provider(alice, two_providers):
    north, _south = two_providers
    made = alice.client.post("/api/conversations/", json.dumps({"model": "north-large"}),
                             content_type="application/json")
    assert made.status_code == 201
    assert Conversation.objects.get(pk=made.json()["id"]).provider == north
    refused = alice.client.post("/api/conversations/", json.dumps({"model": "north-large", "provider": "south"}),
                                content_type="application/json")
    assert refused.status_code == 400 and "model" in refused.json()["error"]["fields"]


async def test_a_server_that_refuses_stream_options_is_asked_again_without_them(alice, upstream, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content='hi fake:{"reject_stream_options": true}', client_id=str(uuid.uuid4()))
    reply = await follow_reply(tab.recv)
    assert reply.end["type"] == "done" and reply.end["usage"]["estimated"] is True
    first, second = upstream.requests
    assert "stream_options" in first["body"] and "stream_options" not in second["body"]


async def test_a_provider_key_appears_in_no_page_answer_frame_or_log(
    alice, servers, two_providers, sockets, staff_client, caplog
):
    for name in ("", "conversations", "httpx", "httpcore", "django", "channels"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    north, south = two_providers
    conversation = await database_sync_to_async(alice.conversation)(model="north-large", provider=north)
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content="fine", client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    await tab.send(type="send", content='bad fake:{"status": 401, "error_message": "Incorrect API key {key}"}',
                   client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)

    def pages() -> list[str]:
        urls = ["/admin/", "/admin/conversations/provider/", f"/admin/conversations/provider/{north.pk}/change/",
                f"/admin/conversations/provider/{south.pk}/change/", "/admin/conversations/usage/",
                "/admin/conversations/usage/report/", "/admin/conversations/usage/report/?format=csv",
                "/admin/conversations/conversation/", f"/admin/conversations/conversation/{conversation.pk}/transcript/",
                "/admin/conversations/quota/"]
        answers = [staff_client.get(url) for url in urls]
        assert [a.status_code for a in answers] == [200] * len(urls), [(u, a.status_code) for u, a in zip(urls, answers)]
        seen = [a.content.decode(errors="replace") for a in answers]
        seen += [Client().get(url).content.decode() for url in ("/accounts/login/",)]
        seen += [alice.client.get(url).content.decode() for url in
                 ("/api/models/", "/api/conversations/", f"/api/conversations/{conversation.pk}/",
                  f"/api/conversations/{conversation.pk}/export?format=json")]
        return seen

    texts = await database_sync_to_async(pages)()
    texts.append(json.dumps(tab.frames))
    texts.append(caplog.text)
    assert servers["north"].requests[-1]["headers"]["authorization"] == f"Bearer {KEYS['north']}"
    for key in KEYS.values():
        for text in texts:
            assert key not in text and key[8:24] not in text
