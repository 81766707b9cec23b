"""Is a socket's session still signed in as its member?

A websocket is authenticated once, at the handshake. Signing out (which
deletes the session), a password change (which changes the session's auth
hash) and deactivation must still reach an open socket, so the consumer asks
this before acting on a client frame.
"""

from __future__ import annotations

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
