"""Presets: a member's own and the team's, someone else's never; a new conversation starts from one,
or from the member's defaults; the account endpoint that sets those defaults; the admin's team presets."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.test import Client

from conversations.models import Conversation, Member, Preset, Provider, ProviderModel

pytestmark = pytest.mark.django_db(transaction=True)

PRESET_KEYS = {"id", "name", "model", "provider", "system_prompt", "params", "team", "created_at", "updated_at"}
CONTRACT_KEYS = {"id", "title", "model", "system_prompt", "params", "created_at", "updated_at"}


def send(client: Client, method: str, url: str, body):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def preset_url(preset) -> str:
    return f"/api/presets/{preset.id if isinstance(preset, Preset) else preset}/"


@pytest.fixture
def team():
    return Preset.objects.create(name="Translator", model="team-model", system_prompt="Translate to English.",
                                 params={"temperature": 0.2})


@pytest.fixture
def lab():
    """A provider whose `lab-model` only the research group may use."""
    provider = Provider(name="lab", base_url="https://lab.example/v1")
    provider.set_api_key("sk-lab-key-000000000000")
    provider.save()
    row = ProviderModel.objects.create(provider=provider, name="lab-model", enabled=True, context_length=8000)
    row.groups.add(Group.objects.create(name="research"))
    return provider


# --------------------------------------------------------------------------- the list and ownership


def test_the_list_has_my_presets_then_the_teams_each_marked(alice, bob, team):
    mine = send(alice.client, "post", "/api/presets/", {
        "name": "Reviewer", "model": "gpt-x", "system_prompt": "Review this code.", "params": {"temperature": 0.1}})
    assert mine.status_code == 201
    assert set(mine.json()) == PRESET_KEYS
    assert mine.json()["team"] is False and mine.json()["provider"] == ""
    send(bob.client, "post", "/api/presets/", {"name": "Bob's secret", "system_prompt": "bob only"})

    listed = alice.client.get("/api/presets/").json()

    assert [(p["name"], p["team"]) for p in listed] == [("Reviewer", False), ("Translator", True)]
    assert all(set(p) == PRESET_KEYS for p in listed)
    assert listed[1]["system_prompt"] == "Translate to English." and listed[1]["params"] == {"temperature": 0.2}
    assert Preset.objects.get(name="Reviewer").owner == alice.user


def test_another_members_preset_is_404_for_every_method_and_stays_unchanged(alice, bob):
    theirs = Preset.objects.create(owner=bob.user, name="Bob's", system_prompt="bob's secret prompt")
    for response in (
        alice.client.get(preset_url(theirs)),
        send(alice.client, "patch", preset_url(theirs), {"name": "alice was here"}),
        alice.client.delete(preset_url(theirs)),
        alice.client.get(preset_url(uuid.uuid4())),
        alice.client.get(preset_url("not-a-uuid")),
    ):
        assert_error(response, 404, "not_found")
        assert b"secret" not in response.content
    theirs.refresh_from_db()
    assert theirs.name == "Bob's"


def test_a_team_preset_is_read_only_to_members_even_staff(alice, make_member, team):
    staff = make_member("carol", is_staff=True)
    for member in (alice, staff):
        assert member.client.get(preset_url(team)).json()["team"] is True
        assert_error(send(member.client, "patch", preset_url(team), {"name": "mine now"}), 403, "forbidden")
        assert_error(member.client.delete(preset_url(team)), 403, "forbidden")
    team.refresh_from_db()
    assert team.name == "Translator" and team.owner is None


def test_i_change_and_delete_my_own_preset(alice, lab):
    made = send(alice.client, "post", "/api/presets/", {"name": "Draft", "system_prompt": "v1"}).json()
    changed = send(alice.client, "patch", preset_url(made["id"]), {"system_prompt": "v2", "params": {"seed": 3}})
    assert changed.status_code == 200
    assert changed.json()["system_prompt"] == "v2" and changed.json()["params"] == {"seed": 3}
    assert changed.json()["name"] == "Draft" and changed.json()["updated_at"] > made["updated_at"]

    assert send(alice.client, "patch", preset_url(made["id"]), {"model": ""}).json()["model"] == ""
    assert alice.client.delete(preset_url(made["id"])).status_code == 204
    assert not Preset.objects.filter(pk=made["id"]).exists()


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": "x" * 101}, {"name": "a\x00b"},
    {"name": "ok", "params": {"temperature": 3}}, {"name": "ok", "params": [1]}, {"name": "ok", "params": "x"},
    {"name": "ok", "system_prompt": ["a"]}, {"name": "ok", "model": 7}, {"name": "ok", "title": "no"},
    {"name": "ok", "team": True}, {"name": "ok", "owner": 1}, {"name": "ok", "provider": "lab"},
    {"name": "ok", "model": "lab-model", "provider": "nowhere"},
    {"name": "ok", "model": "lab-model"},  # only the research group may use it
])
def test_creating_a_preset_validates_every_field_and_stores_nothing_when_wrong(alice, lab, body):
    error = assert_error(send(alice.client, "post", "/api/presets/", body), 400, "invalid")
    assert error["fields"]
    assert not Preset.objects.exists()


def test_a_preset_name_is_mine_once(alice, bob, team):
    assert send(alice.client, "post", "/api/presets/", {"name": "Short"}).status_code == 201
    error = assert_error(send(alice.client, "post", "/api/presets/", {"name": "Short"}), 400, "invalid")
    assert "name" in error["fields"]
    assert send(bob.client, "post", "/api/presets/", {"name": "Short"}).status_code == 201  # bob's own
    assert send(alice.client, "post", "/api/presets/", {"name": "Translator"}).status_code == 201  # beside the team's
    other = send(alice.client, "post", "/api/presets/", {"name": "Other"}).json()
    assert_error(send(alice.client, "patch", preset_url(other["id"]), {"name": "Short"}), 400, "invalid")


def test_a_member_of_the_group_may_keep_a_preset_with_the_groups_model(alice, lab):
    alice.user.groups.add(Group.objects.get(name="research"))
    response = send(alice.client, "post", "/api/presets/", {"name": "Lab", "model": "lab-model"})
    assert response.status_code == 201
    assert response.json()["provider"] == "lab"


def test_the_presets_api_needs_a_member_and_the_csrf_token(alice, team):
    assert_error(Client().get("/api/presets/"), 401, "unauthenticated")
    assert_error(Client().get(preset_url(team)), 401, "unauthenticated")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice.user)
    assert_error(send(strict, "post", "/api/presets/", {"name": "forged"}), 403, "csrf")
    assert_error(alice.client.put("/api/presets/", "{}", content_type="application/json"), 405, "method_not_allowed")
    assert not Preset.objects.filter(owner=alice.user).exists()


# --------------------------------------------------------------------------- starting a conversation


def test_a_conversation_starts_from_a_preset(alice, team):
    response = send(alice.client, "post", "/api/conversations/", {"preset": str(team.id)})

    assert response.status_code == 201
    data = response.json()
    assert set(data) == CONTRACT_KEYS
    assert (data["model"], data["system_prompt"], data["params"]) == (
        "team-model", "Translate to English.", {"temperature": 0.2})


def test_fields_given_with_the_preset_win_over_its_own(alice, team):
    data = send(alice.client, "post", "/api/conversations/", {
        "preset": str(team.id), "model": "my-model", "params": {"seed": 1}, "title": "Mine"}).json()
    assert (data["model"], data["system_prompt"], data["params"], data["title"]) == (
        "my-model", "Translate to English.", {"seed": 1}, "Mine")
    data = send(alice.client, "post", "/api/conversations/", {"preset": str(team.id), "system_prompt": ""}).json()
    assert (data["model"], data["system_prompt"]) == ("team-model", "")


def test_a_preset_with_a_provider_gives_the_conversation_its_provider(alice, lab):
    alice.user.groups.add(Group.objects.get(name="research"))
    preset = Preset.objects.create(owner=alice.user, name="Lab", model="lab-model", provider=lab)
    data = send(alice.client, "post", "/api/conversations/", {"preset": str(preset.id)}).json()
    assert Conversation.objects.get(pk=data["id"]).provider == lab


@pytest.mark.parametrize("which", ["bob's", "missing", "malformed", "number", "lab's model"])
def test_starting_from_a_preset_i_cannot_use_is_400(alice, bob, lab, which):
    preset = {
        "bob's": lambda: str(Preset.objects.create(owner=bob.user, name="b", system_prompt="bob's").id),
        "missing": lambda: str(uuid.uuid4()),
        "malformed": lambda: "nope",
        "number": lambda: 5,
        "lab's model": lambda: str(Preset.objects.create(name="Lab", model="lab-model", provider=lab).id),
    }[which]()
    error = assert_error(send(alice.client, "post", "/api/conversations/", {"preset": preset}), 400, "invalid")
    assert "preset" in error["fields"]
    assert not Conversation.objects.filter(owner=alice.user).exists()


def test_a_preset_is_not_a_field_a_conversation_can_change(alice, team):
    conversation = alice.conversation(title="x")
    response = send(alice.client, "patch", f"/api/conversations/{conversation.id}/", {"preset": str(team.id)})
    assert_error(response, 400, "invalid")


async def test_a_conversation_started_from_a_preset_is_announced(alice, sockets, team):
    tab = sockets(alice, None, path="/ws/member/")
    assert (await tab.connect())[0]
    response = await database_sync_to_async(send)(alice.client, "post", "/api/conversations/", {"preset": str(team.id)})
    assert response.status_code == 201
    frame = await tab.recv()
    assert frame == {"type": "conversation_created", "conversation": response.json()}
    assert frame["conversation"]["system_prompt"] == "Translate to English."


# --------------------------------------------------------------------------- the member's defaults


def test_a_new_conversation_takes_my_default_preset_else_my_default_model_else_the_teams(alice, team, settings):
    settings.DEFAULT_MODEL = "house-model"
    assert send(alice.client, "post", "/api/conversations/", {}).json()["model"] == "house-model"

    assert send(alice.client, "patch", "/api/account/", {"default_model": "my-model"}).status_code == 200
    data = send(alice.client, "post", "/api/conversations/", {}).json()
    assert (data["model"], data["system_prompt"]) == ("my-model", "")

    assert send(alice.client, "patch", "/api/account/", {"default_preset": str(team.id)}).status_code == 200
    data = send(alice.client, "post", "/api/conversations/", {}).json()
    assert (data["model"], data["system_prompt"], data["params"]) == (
        "team-model", "Translate to English.", {"temperature": 0.2})
    data = send(alice.client, "post", "/api/conversations/", {"model": "chosen", "params": {}}).json()
    assert (data["model"], data["system_prompt"], data["params"]) == ("chosen", "Translate to English.", {})

    mine = Preset.objects.create(owner=alice.user, name="No model", system_prompt="Be terse.")
    send(alice.client, "patch", "/api/account/", {"default_preset": str(mine.id)})
    data = send(alice.client, "post", "/api/conversations/", {}).json()
    assert (data["model"], data["system_prompt"]) == ("my-model", "Be terse.")  # the preset has no model

    mine.delete()  # a deleted default preset leaves no default
    alice.user.refresh_from_db()
    assert alice.user.default_preset is None
    data = send(alice.client, "post", "/api/conversations/", {}).json()
    assert (data["model"], data["system_prompt"]) == ("my-model", "")


def test_a_default_preset_whose_model_i_may_no_longer_use_falls_back_to_my_default_model(alice, lab, settings):
    settings.DEFAULT_MODEL = "house-model"
    preset = Preset.objects.create(name="Lab", model="lab-model", provider=lab, system_prompt="Lab rules.")
    Member.objects.filter(pk=alice.user.pk).update(default_preset=preset)
    data = send(alice.client, "post", "/api/conversations/", {}).json()
    assert (data["model"], data["system_prompt"]) == ("house-model", "Lab rules.")


def test_the_new_chat_page_starts_from_my_default_preset_too(alice, team):
    from conversations.chat.conversations import create_conversation

    Member.objects.filter(pk=alice.user.pk).update(default_preset=team)
    alice.user.refresh_from_db()
    conversation = create_conversation(alice.user)
    assert (conversation.model, conversation.system_prompt) == ("team-model", "Translate to English.")


# --------------------------------------------------------------------------- the account endpoint


def test_the_account_reads_and_changes_my_settings(alice, team, settings):
    response = alice.client.get("/api/account/")
    assert response.json() == {"language": "", "theme": "", "default_model": "", "default_preset": None}

    response = send(alice.client, "patch", "/api/account/", {
        "language": "zh-hans", "theme": "dark", "default_model": "gpt-x", "default_preset": str(team.id)})
    assert response.status_code == 200
    assert response.json() == {"language": "zh-hans", "theme": "dark", "default_model": "gpt-x",
                               "default_preset": str(team.id)}
    stored = Member.objects.get(pk=alice.user.pk)
    assert (stored.language, stored.theme, stored.default_model, stored.default_preset) == (
        "zh-hans", "dark", "gpt-x", team)

    response = send(alice.client, "patch", "/api/account/", {"theme": "", "default_preset": None})
    assert response.json() == {"language": "zh-hans", "theme": "", "default_model": "gpt-x", "default_preset": None}


@pytest.mark.parametrize("body", [
    {"language": "klingon"}, {"language": 1}, {"theme": "neon"}, {"theme": None}, {"default_model": ["a"]},
    {"default_model": "m" * 201}, {"default_model": "lab-model"}, {"default_model": "a\x00b"},
    {"default_preset": "not-a-uuid"}, {"default_preset": str(uuid.uuid4())}, {"default_preset": 5},
    {"default_preset": "BOBS"}, {"username": "mallory"}, {"is_staff": True},
    {"theme": "dark", "language": "klingon"},  # one wrong field saves nothing
])
def test_account_changes_are_validated_and_nothing_is_saved_when_one_is_wrong(alice, bob, lab, body):
    if body.get("default_preset") == "BOBS":
        body = {"default_preset": str(Preset.objects.create(owner=bob.user, name="b").id)}
    error = assert_error(send(alice.client, "patch", "/api/account/", body), 400, "invalid")
    assert error["fields"]
    stored = Member.objects.get(pk=alice.user.pk)
    assert (stored.language, stored.theme, stored.default_model, stored.default_preset_id) == ("", "", "", None)
    assert stored.username == "alice" and not stored.is_staff


def test_the_account_endpoint_needs_a_member_and_the_csrf_token(alice):
    assert_error(Client().get("/api/account/"), 401, "unauthenticated")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice.user)
    assert_error(send(strict, "patch", "/api/account/", {"theme": "dark"}), 403, "csrf")
    assert_error(alice.client.post("/api/account/", "{}", content_type="application/json"), 405, "method_not_allowed")
    assert Member.objects.get(pk=alice.user.pk).theme == ""
    assert strict.get("/").status_code == 200
    token = strict.cookies[django_settings.CSRF_COOKIE_NAME].value
    response = strict.patch("/api/account/", json.dumps({"theme": "dark"}), content_type="application/json",
                            HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and response.json()["theme"] == "dark"


# --------------------------------------------------------------------------- the admin


@pytest.fixture
def staff(make_member):
    return make_member("root", is_staff=True, is_superuser=True)


def test_staff_publish_a_team_preset_in_the_admin(staff, alice):
    response = staff.client.post("/admin/conversations/preset/add/", {
        "name": "Summariser", "model": "gpt-x", "provider": "", "system_prompt": "Summarise in three lines.",
        "params": '{"temperature": 0.5}',
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    preset = Preset.objects.get(name="Summariser")
    assert preset.owner is None and preset.params == {"temperature": 0.5}
    assert [p["name"] for p in alice.client.get("/api/presets/").json()] == ["Summariser"]


@pytest.mark.parametrize("fields", [
    {"params": '{"temperature": 9}'}, {"params": '{"colour": 1}'}, {"name": "Taken"},
    {"provider": "LAB", "model": ""}, {"provider": "LAB", "model": "not-served"},
])
def test_the_admin_refuses_a_team_preset_that_is_wrong(staff, lab, fields):
    Preset.objects.create(name="Taken")
    data = {"name": "New", "model": "", "provider": "", "system_prompt": "", "params": "{}", **fields}
    if data["provider"] == "LAB":
        data["provider"] = str(lab.pk)
    response = staff.client.post("/admin/conversations/preset/add/", data)
    assert response.status_code == 200  # the form again, with its errors
    assert not Preset.objects.filter(name="New").exists()
    assert Preset.objects.count() == 1


def test_the_admin_lists_team_presets_only(staff, alice):
    Preset.objects.create(name="Team one")
    Preset.objects.create(owner=alice.user, name="Alice's private preset")
    page = staff.client.get("/admin/conversations/preset/").content.decode()
    assert "Team one" in page and "Alice&#x27;s private preset" not in page and "private preset" not in page
