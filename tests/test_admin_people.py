"""People in the admin: staff create members and set passwords, deactivate them (their sockets
are cut at once), and send single-use, expiring invite links; self-signup stays off unless set."""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from conversations.accounts import invites
from conversations.models import Invite

pytestmark = pytest.mark.django_db(transaction=True)

MEMBERS = "/admin/conversations/member/"
INVITES = "/admin/conversations/invite/"
Member = get_user_model()


def signs_in(username: str, password: str) -> bool:
    return Client().login(username=username, password=password)


def test_staff_create_a_member_and_reset_their_password(reviewer):
    created = reviewer.client.post(f"{MEMBERS}add/", {
        "username": "carol", "usable_password": "true",
        "password1": "a-long-first-password", "password2": "a-long-first-password"})
    assert created.status_code == 302
    carol = Member.objects.get(username="carol")
    assert not carol.is_staff and not carol.is_superuser
    assert signs_in("carol", "a-long-first-password")

    reset = reviewer.client.post(f"{MEMBERS}{carol.pk}/password/", {
        "usable_password": "true", "password1": "another-long-password", "password2": "another-long-password"})
    assert reset.status_code == 302
    assert signs_in("carol", "another-long-password") and not signs_in("carol", "a-long-first-password")


def test_staff_who_manage_people_cannot_grant_rights_or_touch_a_superuser(make_staff, reviewer, alice):
    staff = make_staff("manager", perms=("view_member", "change_member", "add_member"))
    page = staff.client.get(f"{MEMBERS}{alice.user.pk}/change/")
    assert page.status_code == 200
    assert 'name="is_superuser"' not in page.content.decode() and 'name="user_permissions"' not in page.content.decode()
    staff.client.post(f"{MEMBERS}{alice.user.pk}/change/", {
        "username": "alice", "is_active": "on", "is_staff": "on", "is_superuser": "on",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "language": "", "theme": "", "default_model": ""})
    alice.user.refresh_from_db()
    assert not alice.user.is_staff and not alice.user.is_superuser
    superuser_page = staff.client.get(f"{MEMBERS}{reviewer.user.pk}/change/")
    assert 'name="_save"' not in superuser_page.content.decode()  # read-only for them
    assert staff.client.post(f"{MEMBERS}{reviewer.user.pk}/change/", {
        "username": "reviewer", "is_active": "", "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00"}).status_code == 403
    assert staff.client.post(f"{MEMBERS}{reviewer.user.pk}/password/", {
        "usable_password": "true", "password1": "taken-over-pass-1", "password2": "taken-over-pass-1"}).status_code == 403
    staff.client.post(MEMBERS, {"action": "deactivate", "_selected_action": [reviewer.user.pk, staff.user.pk],
                                "index": 0})
    assert Member.objects.get(pk=reviewer.user.pk).is_active and Member.objects.get(pk=staff.user.pk).is_active
    assert signs_in("reviewer", "pw-reviewer-123")


async def test_the_deactivate_action_cuts_the_members_open_sockets_at_once(alice, bob, reviewer, sockets):
    conversation = await database_sync_to_async(alice.conversation)()
    tab = sockets(alice, conversation.id)
    assert (await tab.connect())[0]
    await tab.recv()  # the snapshot
    done = await sync_to_async(reviewer.client.post)(
        MEMBERS, {"action": "deactivate", "_selected_action": [alice.user.pk], "index": 0})
    assert done.status_code == 302
    refused = await tab.recv()  # without the tab sending anything
    assert (refused["type"], refused["code"]) == ("error", "not_found")
    assert await tab.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    tab.connected = False
    assert not (await database_sync_to_async(Member.objects.get)(pk=alice.user.pk)).is_active
    assert (await database_sync_to_async(Member.objects.get)(pk=bob.user.pk)).is_active


def invite_link(html: str) -> str:
    found = re.search(r"http://testserver(/accounts/invite/[^/\s]+/)", html)
    assert found, "no invite link in the page"
    return found.group(1)


def test_an_invite_link_is_shown_once_and_makes_exactly_one_member(reviewer):
    made = reviewer.client.post(f"{INVITES}add/", {"note": "for dave", "days": 3})
    assert made.status_code == 302
    link = invite_link(reviewer.client.get(made["Location"]).content.decode())  # the next page says it
    token = link.rstrip("/").rsplit("/", 1)[1]
    invite = Invite.objects.get()
    assert invite.token_hash == hashlib.sha256(token.encode()).hexdigest()  # only the hash is stored
    assert token not in reviewer.client.get(INVITES).content.decode()
    assert token not in reviewer.client.get(f"{INVITES}{invite.pk}/change/").content.decode()
    assert timedelta(days=2, hours=23) < invite.expires_at - timezone.now() <= timedelta(days=3)
    assert invite.created_by_id == reviewer.user.pk

    dave = Client()
    assert dave.get(link).status_code == 200
    joined = dave.post(link, {"username": "dave", "password1": "dave-likes-long-words", "password2":
                              "dave-likes-long-words"})
    assert joined.status_code == 302 and joined["Location"] == "/"
    assert dave.get("/").status_code == 200  # signed in
    member = Member.objects.get(username="dave")
    assert not member.is_staff and not member.is_superuser
    invite.refresh_from_db()
    assert invite.used_by_id == member.pk and invite.used_at is not None

    again = Client()
    assert again.get(link).status_code == 404
    assert again.post(link, {"username": "eve", "password1": "eve-likes-long-words",
                             "password2": "eve-likes-long-words"}).status_code == 404
    assert not Member.objects.filter(username="eve").exists()


def test_an_expired_revoked_or_made_up_invite_gets_the_same_refusal(reviewer):
    old, old_token = invites.create_invite(reviewer.user, days=1)
    Invite.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked, revoked_token = invites.create_invite(reviewer.user)
    reviewer.client.post(INVITES, {"action": "revoke", "_selected_action": [revoked.pk], "index": 0})
    answers = [Client().get(f"/accounts/invite/{token}/") for token in (old_token, revoked_token, "made-up")]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert len({a.content.decode().split("<main")[1] for a in answers}) == 1  # the page less its header
    assert Client().post(f"/accounts/invite/{old_token}/", {
        "username": "late", "password1": "late-but-long-enough", "password2": "late-but-long-enough"}).status_code == 404
    assert not Member.objects.filter(username="late").exists()


def test_two_people_racing_with_one_invite_make_one_member(reviewer):
    _invite, token = invites.create_invite(reviewer.user)
    link = f"/accounts/invite/{token}/"
    start, answers = threading.Barrier(2), {}

    def join(name: str) -> None:
        client = Client()
        client.get(link)
        start.wait()
        answers[name] = client.post(link, {"username": name, "password1": "racing-to-sign-up",
                                           "password2": "racing-to-sign-up"}).status_code

    racers = [threading.Thread(target=join, args=(name,)) for name in ("frank", "grace")]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=30)
    assert sorted(answers.values()) == [302, 404]
    assert Member.objects.filter(username__in=["frank", "grace"]).count() == 1


def test_a_signed_in_member_following_an_invite_leaves_it_unused(reviewer, alice):
    _invite, token = invites.create_invite(reviewer.user)
    assert alice.client.get(f"/accounts/invite/{token}/")["Location"] == "/"
    assert invites.find_invite(token) is not None


def test_self_signup_is_off_unless_switched_on(settings):
    form = {"username": "heidi", "password1": "heidi-has-a-long-one", "password2": "heidi-has-a-long-one"}
    assert Client().get("/accounts/signup/").status_code == 404
    assert Client().post("/accounts/signup/", form).status_code == 404
    assert not Member.objects.filter(username="heidi").exists()

    settings.SIGNUP_ENABLED = True
    visitor = Client()
    assert visitor.get("/accounts/signup/").status_code == 200
    assert visitor.post("/accounts/signup/", form)["Location"] == "/"
    heidi = Member.objects.get(username="heidi")
    assert not heidi.is_staff and visitor.get("/").status_code == 200
    # The same name in other letters, and a weak password, are refused.
    taken = Client().post("/accounts/signup/", {**form, "username": "HEIDI"})
    weak = Client().post("/accounts/signup/", {"username": "ivan", "password1": "123", "password2": "123"})
    assert taken.status_code == weak.status_code == 200
    assert Member.objects.filter(username__iexact="heidi").count() == 1
    assert not Member.objects.filter(username="ivan").exists()
