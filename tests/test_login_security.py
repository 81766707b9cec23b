"""Sign-in: brute force is throttled per account and per address, and sessions
cannot be fixed before sign-in nor outlive sign-out.

The counters live in the real cache (Redis, as in a team deployment); each test
gets its own key prefix, so tests never see each other's failures.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from importlib import import_module

import httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.models import Session
from django.test import Client, RequestFactory

from conversations.accounts import throttle as login_throttle
from tests.conftest import DaphneProcess, free_port

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/accounts/login/"
REFUSED = "Too many failed sign-in attempts"
WRONG = "didn't match"


@pytest.fixture(autouse=True)
def own_counters(settings):
    """A key prefix of its own for this test, and the limits' defaults."""
    cache = dict(django_settings.CACHES["default"])
    cache["KEY_PREFIX"] = f"{cache.get('KEY_PREFIX', '')}-login-{uuid.uuid4().hex}"
    settings.CACHES = {"default": cache}
    settings.LOGIN_FAILURES_PER_ACCOUNT = 5
    settings.LOGIN_FAILURES_PER_IP = 50
    settings.LOGIN_LOCKOUT_SECONDS = 900
    settings.TRUSTED_PROXY_COUNT = 0
    # Fast hashing for the many attempts; PBKDF2 still verifies (for daphne processes).
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


def member(name: str, password: str | None = None):
    return get_user_model().objects.create_user(name, password=password or f"pw-{name}-123")


def attempt(client: Client, username: str, password: str, ip: str = "10.0.0.1", **headers):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)


def error_text(response) -> str:
    found = re.search(r'<p class="error"[^>]*>(.*?)</p>', response.content.decode(), re.S)
    return found.group(1).strip() if found else ""


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def password_checks(monkeypatch):
    """How many times a password was checked against the database."""
    calls = []
    original = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        calls.append(username)
        return original(self, request, username=username, password=password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", counting)
    return calls


# Per account


def test_an_account_is_locked_after_its_failures_even_for_the_right_password(password_checks):
    member("alice")
    client = Client()
    for spelling in ["alice", "Alice", "ALICE", " alice", "aLiCe"]:  # one account, however it is typed
        response = attempt(client, spelling, "guess")
        assert response.status_code == 200
        assert WRONG in response.content.decode() and REFUSED not in response.content.decode()
    checks = len(password_checks)

    response = attempt(client, "alice", "pw-alice-123")
    assert response.status_code == 429
    assert error_text(response) == (
        "Too many failed sign-in attempts. For your security, please try again in 15 minutes."
    )
    assert response["Retry-After"] == "900"
    assert not signed_in(client)
    assert len(password_checks) == checks, "a refused attempt must not check the password"
    # Refused attempts are not counted and change nothing: still refused, from another address too.
    assert attempt(Client(), "alice", "pw-alice-123", ip="10.0.0.2").status_code == 429


def test_another_account_from_the_same_address_still_signs_in():
    member("alice")
    member("bob")
    client = Client()
    for _ in range(5):
        attempt(client, "alice", "guess")
    assert attempt(client, "alice", "pw-alice-123").status_code == 429

    response = attempt(client, "bob", "pw-bob-123")
    assert response.status_code == 302 and signed_in(client)


def test_the_admin_sign_in_is_locked_too(password_checks):
    get_user_model().objects.create_user("root", password="pw-root-123", is_staff=True, is_superuser=True)
    client = Client()
    for _ in range(5):
        attempt(client, "root", "guess")
    checks = len(password_checks)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": "pw-root-123"}, REMOTE_ADDR="10.0.0.1"
    )
    assert response.status_code == 200 and not signed_in(client)
    assert len(password_checks) == checks


def test_a_successful_sign_in_clears_the_account_count():
    member("alice")
    client = Client()
    for _ in range(4):
        attempt(client, "alice", "guess")
    assert attempt(client, "alice", "pw-alice-123").status_code == 302
    client.post("/accounts/logout/")

    for _ in range(4):  # 8 in all, but only 4 since the success
        assert attempt(client, "alice", "guess").status_code == 200
    response = attempt(client, "alice", "pw-alice-123")
    assert response.status_code == 302 and signed_in(client)


def test_the_lock_ends_after_the_lockout(settings):
    settings.LOGIN_LOCKOUT_SECONDS = 1
    member("alice")
    client = Client()
    for _ in range(5):
        attempt(client, "alice", "guess")
    response = attempt(client, "alice", "pw-alice-123")
    assert response.status_code == 429
    assert "try again in 1 minute." in error_text(response)

    time.sleep(1.5)  # the lock and the counts expire in the cache (Redis) after 1 s
    assert attempt(client, "alice", "guess").status_code == 200  # counted from zero again
    response = attempt(client, "alice", "pw-alice-123")
    assert response.status_code == 302 and signed_in(client)


def test_the_answers_do_not_tell_whether_the_account_exists():
    member("alice")
    answers = {}
    for name, ip in [("alice", "10.0.1.1"), ("nobody", "10.0.1.2")]:
        client = Client()
        failures = [attempt(client, name, "guess", ip=ip) for _ in range(5)]
        refused = attempt(client, name, "pw-alice-123", ip=ip)
        answers[name] = [(r.status_code, error_text(r)) for r in [*failures, refused]]
    assert answers["alice"] == answers["nobody"]
    assert answers["alice"][-1][0] == 429


# Per address


def test_an_address_is_locked_after_failures_over_many_usernames(settings):
    settings.LOGIN_FAILURES_PER_IP = 8
    member("bob")
    client = Client()
    for n in range(7):
        assert attempt(client, f"user{n}", "guess").status_code == 200
    # Signing in to one's own account does not reset the address's count.
    assert attempt(client, "bob", "pw-bob-123").status_code == 302
    client.post("/accounts/logout/")
    assert attempt(client, "user7", "guess").status_code == 200  # the 8th failure

    response = attempt(client, "bob", "pw-bob-123")
    assert response.status_code == 429 and REFUSED in error_text(response)
    assert attempt(Client(), "bob", "pw-bob-123", ip="10.0.0.99").status_code == 302


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(settings):
    settings.LOGIN_FAILURES_PER_IP = 4
    member("bob")
    client = Client()
    for n in range(4):  # a new made-up address each time: still one client
        attempt(client, f"user{n}", "guess", ip="10.0.0.5", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    response = attempt(client, "bob", "pw-bob-123", ip="10.0.0.5", HTTP_X_FORWARDED_FOR="198.51.100.200")
    assert response.status_code == 429


def test_behind_a_trusted_proxy_the_address_it_saw_is_counted(settings):
    settings.LOGIN_FAILURES_PER_IP = 4
    settings.TRUSTED_PROXY_COUNT = 1
    member("bob")
    proxy = "10.0.0.254"
    client = Client()
    for n in range(4):  # what the client wrote (left) is not believed; what the proxy appended is
        attempt(client, f"user{n}", "guess", ip=proxy, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 203.0.113.7")
    response = attempt(client, "bob", "pw-bob-123", ip=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 429
    # Another client behind the same proxy is not locked.
    assert attempt(Client(), "bob", "pw-bob-123", ip=proxy, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 302


@pytest.mark.parametrize(
    "remote,forwarded,proxies,expected",
    [
        ("10.0.0.1", "", 0, "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9", 0, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.9", 1, "203.0.113.9"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.2", 2, "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9", 2, "10.0.0.1"),  # fewer hops than proxies: not believed
        ("10.0.0.1", "not-an-address", 1, "unknown"),
        ("2001:db8:1:2:3:4:5:6", "", 0, "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "", 0, "192.0.2.1"),
    ],
)
def test_the_client_address(settings, remote, forwarded, proxies, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().post(LOGIN, REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert login_throttle.client_ip(request) == expected


def test_failures_racing_in_many_threads_are_all_counted(settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 200
    settings.LOGIN_FAILURES_PER_IP = 10_000
    request = RequestFactory().post(LOGIN, REMOTE_ADDR="10.0.0.7")
    start = threading.Barrier(8)

    def fail_25_times():
        start.wait()
        for _ in range(25):
            login_throttle.record_failure(request, "alice")

    threads = [threading.Thread(target=fail_25_times) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert login_throttle.locked_for(request, "alice") > 0, "an increment was lost"


def test_guesses_fired_at_once_get_no_more_password_checks_than_the_limit(password_checks):
    """Every guess is counted before its password is checked, not after it failed."""
    member("alice")
    start = threading.Barrier(12)
    statuses = []

    def guess() -> None:
        client = Client()
        start.wait()
        statuses.append(attempt(client, "alice", "guess").status_code)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(password_checks) <= 5, f"{len(password_checks)} passwords checked for a limit of 5"
    assert sorted(statuses) == [200] * len(password_checks) + [429] * (12 - len(password_checks))


def test_signing_in_gives_the_address_back_its_attempt(settings):
    settings.LOGIN_FAILURES_PER_IP = 3
    for name in ("alice", "bob", "carol", "dave"):  # more sign-ins than the address's limit
        member(name)
        client = Client()
        response = attempt(client, name, f"pw-{name}-123")
        assert response.status_code == 302 and signed_in(client)


def test_the_counts_are_shared_by_every_app_process(app_env, settings):
    """Three failures on one daphne process and two on another lock the account on both."""
    name = f"carol-{uuid.uuid4().hex[:8]}"
    get_user_model().objects.create_user(name, password="pw-carol-123")
    app_env.update(LOGIN_FAILURES_PER_ACCOUNT="5", LOGIN_FAILURES_PER_IP="1000", LOGIN_LOCKOUT_SECONDS="900")
    processes = [DaphneProcess(app_env), DaphneProcess(app_env)]
    try:
        clients = [httpx.Client(base_url=p.origin, timeout=30) for p in processes]

        def post(client: httpx.Client, password: str) -> httpx.Response:
            page = client.get(LOGIN)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            return client.post(LOGIN, data={"username": name, "password": password, "csrfmiddlewaretoken": token})

        for client in [clients[0], clients[1], clients[0], clients[1], clients[0]]:
            assert post(client, "guess").status_code == 200
        for client in clients:
            response = post(client, "pw-carol-123")
            assert response.status_code == 429 and REFUSED in response.text
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.stop()


# Sessions


def test_a_session_planted_before_sign_in_is_not_the_one_signed_in():
    member("alice")
    store = import_module(django_settings.SESSION_ENGINE).SessionStore()
    store["planted"] = "by someone else"
    store.create()
    planted = store.session_key
    client = Client()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = planted

    assert attempt(client, "alice", "pw-alice-123").status_code == 302
    signed = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert signed != planted
    assert not Session.objects.filter(session_key=planted).exists()

    attacker = Client()
    attacker.cookies[django_settings.SESSION_COOKIE_NAME] = planted
    assert attacker.get("/").status_code == 302
    assert attacker.get("/api/conversations/").status_code == 401
    assert client.get("/").status_code == 200


def test_signing_out_ends_the_session_on_the_server():
    member("alice")
    client = Client()
    assert attempt(client, "alice", "pw-alice-123").status_code == 302
    old = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    replay = Client()
    replay.cookies[django_settings.SESSION_COOKIE_NAME] = old
    assert replay.get("/").status_code == 200
    assert replay.get("/api/conversations/").status_code == 200

    assert client.post("/accounts/logout/").status_code == 302
    assert not Session.objects.filter(session_key=old).exists()
    replay = Client()
    replay.cookies[django_settings.SESSION_COOKIE_NAME] = old  # the cookie kept, e.g. stolen
    response = replay.get("/")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)
    assert replay.get("/api/conversations/").status_code == 401


def test_sign_in_while_redis_is_unreachable_is_a_clear_503(alice, settings):
    """The counts cannot be read: sign-in is refused (fails closed), saying why, not a 500."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1},
        }
    }
    response = Client().post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "cannot reach Redis" in response.content.decode()
    assert django_settings.SESSION_COOKIE_NAME not in response.cookies  # nobody was signed in
