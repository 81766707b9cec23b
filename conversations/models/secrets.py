"""Secrets at rest: model server API keys, encrypted with keys from the environment.

MultiFernet: the first of PROVIDER_KEY_SECRETS encrypts, every one of them
decrypts, so a key can be rotated (docs/operations.md): put the new key first,
run `manage.py rotate_provider_keys`, then drop the old one. Without the
setting, one key is derived from SECRET_KEY (a trial; rotating SECRET_KEY
would then make stored keys unreadable, which the rotate command's
--from-secret-key option covers).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _derived(secret: str) -> bytes:
    digest = hashlib.sha256(b"provider keys at rest\x00" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def fernet() -> MultiFernet:
    keys = list(settings.PROVIDER_KEY_SECRETS) or [_derived(settings.SECRET_KEY).decode()]
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def encrypt(plain: str) -> str:
    return fernet().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    """The plain key; '' when there is none. Raises ValueError when no configured key opens it."""
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("a stored API key cannot be decrypted with PROVIDER_KEY_SECRETS") from None


def rotate(token: str) -> str:
    """Re-encrypt under the first key (MultiFernet.rotate)."""
    return fernet().rotate(token.encode()).decode() if token else ""


def derived_from_secret_key(secret_key: str) -> Fernet:
    return Fernet(_derived(secret_key))
