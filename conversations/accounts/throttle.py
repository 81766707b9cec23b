"""Sign-in throttling: failed sign-ins counted per account and per client IP.

Failures are counted in Django's cache (Redis when REDIS_URL is set, so every
daphne process shares the counts) with atomic increments, over a window of
LOGIN_LOCKOUT_SECONDS from an account's (or address's) first failure. Once an
account has LOGIN_FAILURES_PER_ACCOUNT failures, or an address
LOGIN_FAILURES_PER_IP, further attempts are refused for LOGIN_LOCKOUT_SECONDS
without the password being checked, even when it is right.

The pieces, all wired in settings and apps.py:

- `LoginThrottleGate`, the first entry of AUTHENTICATION_BACKENDS: refuses a
  locked attempt (PermissionDenied stops `authenticate()` before any backend
  checks the password). Being a backend, it guards every sign-in form, the
  admin's included.
  It also counts each attempt it lets through, before the password is
  checked, so that attempts fired at once cannot all slip past a lock that
  none of them has set yet.
- `reset_on_login`, receiver of Django's `user_logged_in`: the attempt that
  succeeded, and the account's failures, are forgiven.
- `LoginView`: Django's, answering a refused attempt with 429 and a message
  that says when to try again (the same for known and unknown usernames).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
import unicodedata

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.utils.translation import ngettext

# Set on the request when an attempt was refused: seconds until the lock ends.
REFUSED_ATTR = "login_refused_for"


def client_ip(request) -> str:
    """The address to count failures against.

    REMOTE_ADDR, unless the operator says how many proxies of theirs stand in
    front (TRUSTED_PROXY_COUNT): then the X-Forwarded-For entry the outermost
    of them appended. Entries further left are whatever the client wrote and
    are never used. An IPv6 client counts as its /64, which one host usually has.
    """
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            address = hops[-proxies]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _account(username: str) -> str:
    # Normalised as Django's username field does, then case-insensitively;
    # hashed so keys are short and usernames are not written to Redis.
    folded = unicodedata.normalize("NFKC", username).strip().casefold()
    return hashlib.sha256(folded.encode()).hexdigest()[:32]


def _scopes(request, username: str) -> list[tuple[str, int]]:
    """The counters an attempt belongs to, with their limits."""
    return [
        (f"login-fail:user:{_account(username)}", settings.LOGIN_FAILURES_PER_ACCOUNT),
        (f"login-fail:ip:{client_ip(request)}", settings.LOGIN_FAILURES_PER_IP),
    ]


def locked_for(request, username: str) -> float:
    """Seconds until this attempt may be made (0: it may be made now)."""
    locks = cache.get_many([f"{key}:lock" for key, _limit in _scopes(request, username)])
    until = max(locks.values(), default=0.0)
    return max(until - time.time(), 0.0)


def record_failure(request, username: str) -> bool:
    """Count an attempt against its account and address; False if it is over a limit.

    Counted before the password is checked (and forgiven on success), so that
    attempts fired at once cannot all pass a gate that only looks for a lock.
    """
    window = settings.LOGIN_LOCKOUT_SECONDS
    within = True
    for key, limit in _scopes(request, username):
        # add + incr: atomic in Redis (INCR keeps the key's expiry), so attempts
        # racing on several processes are all counted.
        cache.add(key, 0, timeout=window)
        try:
            failures = cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.add(key, 1, timeout=window)
            failures = 1
        if failures >= limit:
            # add, not set: later failures do not push the end of the lock back.
            cache.add(f"{key}:lock", time.time() + window, timeout=window)
        within = within and failures <= limit
    return within


def clear_account(request, username: str) -> None:
    """A successful sign-in clears the account's count, and gives the address back
    the one attempt it counted (not more: signing in to one's own account must not
    reset a guesser's budget)."""
    key = f"login-fail:user:{_account(username)}"
    cache.delete_many([key, f"{key}:lock"])
    if request is None:
        return
    key = f"login-fail:ip:{client_ip(request)}"
    try:
        remaining = cache.decr(key)
    except ValueError:  # expired meanwhile
        return
    if remaining < settings.LOGIN_FAILURES_PER_IP:
        cache.delete(f"{key}:lock")  # set by this very attempt, which succeeded


def refusal_message(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return ngettext(
        "Too many failed sign-in attempts. For your security, please try again in %(minutes)d minute.",
        "Too many failed sign-in attempts. For your security, please try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


class LoginThrottleGate:
    """An authentication backend that only ever refuses: a locked attempt stops
    `authenticate()` here, before any backend checks the password.

    It has no `get_user`, so no session ever names it (and Django's test
    client's `force_login` passes over it).
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None or not username:
            return None
        wait = locked_for(request, username)  # a refused attempt is not counted
        if wait == 0 and not record_failure(request, username):
            wait = locked_for(request, username) or settings.LOGIN_LOCKOUT_SECONDS  # lost a race
        if wait > 0:
            setattr(request, REFUSED_ATTR, wait)
            raise PermissionDenied
        return None


def reset_on_login(sender, request, user, **kwargs) -> None:
    """user_logged_in: the attempt that succeeded, and the account's failures, are forgiven."""
    clear_account(request, user.get_username())


class LoginView(auth_views.LoginView):
    """Django's sign-in page; a refused attempt gets 429 and when to come back."""

    def form_invalid(self, form):
        wait = getattr(self.request, REFUSED_ATTR, None)
        if wait is None:
            return super().form_invalid(form)
        context = self.get_context_data(form=form, refused=refusal_message(wait))
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(math.ceil(wait))
        return response
