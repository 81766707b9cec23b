"""Bad configuration stops the app at start with a message naming the variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start(**env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base.update(SECRET_KEY="x" * 50, DEBUG="false")
    base.update(env)
    base = {k: v for k, v in base.items() if v is not None}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "env,says",
    [
        ({"SECRET_KEY": None}, "SECRET_KEY is not set"),
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"OPENAI_BASE_URL": "ftp://models.example"}, "OPENAI_BASE_URL must be an http(s) URL"),
        ({"UPSTREAM_READ_TIMEOUT": "soon"}, "UPSTREAM_READ_TIMEOUT must be a number"),
        ({"CONTEXT_TOKEN_BUDGET": "10"}, "CONTEXT_TOKEN_BUDGET must be at least 256"),
        ({"REPLY_LEASE_SECONDS": "1", "REPLY_FLUSH_SECONDS": "1"}, "REPLY_LEASE_SECONDS must be at least 3 x"),
        ({"CSRF_TRUSTED_ORIGINS": "chat.example.com"}, "CSRF_TRUSTED_ORIGINS entries must start with http"),
        ({"DATABASE_URL": "nonsense://"}, "DATABASE_URL is not a database URL"),
        ({"LOGIN_FAILURES_PER_ACCOUNT": "0"}, "LOGIN_FAILURES_PER_ACCOUNT must be at least 1"),
        ({"TRUSTED_PROXY_COUNT": "one"}, "TRUSTED_PROXY_COUNT must be"),
        ({"WS_SEND_BUFFER_BYTES": "1000"}, "WS_SEND_BUFFER_BYTES must be at least 65536"),
        ({"UPSTREAM_ALLOWED_HOSTS": "http://x/"}, "UPSTREAM_ALLOWED_HOSTS:"),
    ],
)
def test_bad_configuration_fails_at_start_with_a_clear_message(env, says):
    result = start(**env)
    assert result.returncode != 0
    assert says in result.stderr


def test_without_database_or_redis_it_says_it_uses_sqlite_and_one_process():
    result = start(DEBUG="true", SECRET_KEY=None)
    assert result.returncode == 0, result.stderr
    assert "DATABASE_URL is not set: using the local SQLite file" in result.stderr
    assert "REDIS_URL is not set: using the in-memory channel layer" in result.stderr


def test_the_deploy_check_is_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DEBUG": "false",
            "HTTPS": "true",
            "SECRET_KEY": "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
            "ALLOWED_HOSTS": "chat.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
        },
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def setting(name: str, **env) -> str:
    """A setting's value as the app reads it from this environment."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", *env)}
    base.update(SECRET_KEY="x" * 50, DEBUG="false", **{k: v for k, v in env.items() if v is not None})
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after the shell's own note on what it imported


def test_streamed_text_is_coalesced_over_40_ms_unless_configured():
    assert setting("DELTA_COALESCE_SECONDS", DELTA_COALESCE_MS=None) == "0.04"
    assert setting("DELTA_COALESCE_SECONDS", DELTA_COALESCE_MS="25") == "0.025"


def database_options(**env) -> dict:
    """The Postgres OPTIONS Django gets, from a fresh settings module."""
    script = "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    result = subprocess.run(
        [sys.executable, "-c", f"import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatsite.settings'); {script}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SECRET_KEY": "x" * 50, "DEBUG": "false",
             "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/chat", **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_prepared_statements_are_on_unless_a_pooler_needs_them_off():
    assert database_options() | {"pool": None} == {
        "server_side_binding": True, "prepare_threshold": 5, "pool": None}
    assert "server_side_binding" not in database_options(DB_PREPARED_STATEMENTS="false")
    assert database_options(DB_PREPARE_THRESHOLD="2")["prepare_threshold"] == 2
