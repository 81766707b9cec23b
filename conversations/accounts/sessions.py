"""Is a socket's session still signed in as its member?

A websocket is authenticated once, at the handshake. Signing out (which
deletes the session), a password change (which changes the session's auth
hash) and deactivation must still reach an open socket, so the consumer asks
this before acting on a client frame, and when told to by `notify_member`:
signing out and saving a member tell every socket of that member at once,
so a socket that only listens stops hearing the conversation too.
"""

from __future__ import annotations

import hashlib
from importlib import import_module

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare

from conversations.chat import broadcast
from conversations.chat.threads import in_thread


def signed_in_user_id(session_key: str | None):
    """The primary key of the member the session signs in, or None.

    The same checks as django.contrib.auth.get_user (the session exists, names
    a configured backend and an active member, and its auth hash matches the
    current password under SECRET_KEY or a fallback), read fresh from the
    session store, but read-only: a socket cannot send the browser a new cookie,
    so it must not cycle or flush the session as an HTTP request may.
    """
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValueError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return None
    if hasattr(user, "get_session_auth_hash"):
        stored = session.get(HASH_SESSION_KEY)
        if not stored:
            return None
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        if not any(constant_time_compare(stored, current) for current in hashes):
            return None
    return user.pk


async def still_signed_in(session_key: str | None, user) -> bool:
    """Whether the session still signs in this member: not signed out, same
    password, still active (read from the session store, not the socket's copy)."""
    user_id = await in_thread(signed_in_user_id)(session_key)
    return user_id is not None and user_id == user.pk


def session_digest(session_key: str | None) -> str | None:
    """What travels over Redis instead of a session key."""
    if not session_key:
        return None
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def notify_member(user_id, ended_session: str | None = None) -> None:
    """Tell every open socket of the member to re-check its session, once committed.

    `ended_session` names a session being signed out: Django deletes it only
    after the signal, so its sockets cannot find that out by reading the store
    yet, and are told directly. (chat/broadcast.py: after commit, and never
    async_to_sync from an event loop.)
    """
    broadcast.announce(
        broadcast.member_group(user_id),
        {"type": "member.check", "ended_session": session_digest(ended_session)},
    )


def on_logged_out(sender, request, user, **kwargs) -> None:
    if user is not None and request is not None:
        notify_member(user.pk, ended_session=request.session.session_key)


def on_member_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    """A saved member may have a new password or be deactivated (signing in only touches last_login)."""
    if not created and set(update_fields or ()) != {"last_login"}:
        notify_member(instance.pk)


def on_members_changed(sender, ids, **kwargs) -> None:
    """A bulk update changed members' sign-in fields (models/member.py): tell each one's sockets."""
    for user_id in ids:
        notify_member(user_id)
