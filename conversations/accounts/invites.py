"""Invite links and self-signup: the ways a member can join without staff typing a password.

An invite is single-use and expires (settings.INVITE_DAYS). Its token is
shown once, when staff make it; only its SHA-256 is stored. Accepting it
creates the member and spends the invite in one transaction, with the
invite's row locked, so two people racing with one link make one member.
Self-signup (settings.SIGNUP_ENABLED, off by default) uses the same form.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.utils import timezone

from conversations.models import Invite, Member


class InviteInvalid(Exception):
    """No usable invite for this token: unknown, used, expired or revoked."""


class MemberCreationForm(UserCreationForm):
    """Username and password twice (Django's validators), for a new member who is not staff."""

    class Meta(UserCreationForm.Meta):
        model = Member
        fields = ("username",)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(created_by, *, note: str = "", days: int | None = None) -> tuple[Invite, str]:
    """A new invite and its token (shown once: only the digest is kept)."""
    token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        token_hash=digest(token), note=note, created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days or settings.INVITE_DAYS),
    )
    return invite, token


def find_invite(token: str) -> Invite | None:
    """The usable invite for this token, or None."""
    if not token or len(token) > 200:
        return None
    return Invite.objects.usable().filter(token_hash=digest(token)).first()


def accept_invite(token: str, form: MemberCreationForm) -> Member:
    """Create the member from a valid form and spend the invite, or raise InviteInvalid."""
    with transaction.atomic():
        invite = (Invite.objects.select_for_update().usable()
                  .filter(token_hash=digest(token)).first())
        if invite is None:
            raise InviteInvalid()
        member = form.save()
        invite.used_at, invite.used_by = timezone.now(), member
        invite.save(update_fields=["used_at", "used_by"])
    return member


def revoke(invites) -> int:
    """Make unused invites unusable at once; return how many."""
    return invites.usable().update(expires_at=timezone.now())


def sign_up(form: MemberCreationForm) -> Member:
    """Create a member from a valid signup form (the view checks settings.SIGNUP_ENABLED)."""
    return form.save()
