"""Which language a member reads: their choice when they made one, else their browser's."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import get_supported_language_variant
from django.utils.translation.trans_real import parse_accept_lang_header


def chosen_language(user) -> str | None:
    """The member's chosen language (account page), if it is one this site speaks."""
    return user.chosen_language if getattr(user, "is_authenticated", False) else None


def browser_language(accept_language: str) -> str:
    """The first language of an Accept-Language header this site speaks, else the default."""
    for code, _quality in parse_accept_lang_header(accept_language or ""):
        if code == "*":
            break
        try:
            return get_supported_language_variant(code)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


def socket_language(user, headers) -> str:
    """The language of a websocket's words: the member's choice, else its handshake's Accept-Language."""
    chosen = chosen_language(user)
    if chosen:
        return chosen
    accept = next((value.decode("latin1") for key, value in headers if key == b"accept-language"), "")
    return browser_language(accept)

