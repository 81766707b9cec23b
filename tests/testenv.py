"""Test environment: real Postgres and real Redis, set before Django reads its settings.

Loaded as a pytest plugin (`-p tests.testenv` in pyproject.toml) because
pytest-django configures Django before any conftest.py is imported. Each value
can be overridden from the environment (see README, "Tests").
"""
import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CHANNEL_PREFIX", f"chat-test-{os.getpid()}")
os.environ.setdefault("SECRET_KEY", "test-secret-key-for-the-suite-only")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("OPENAI_API_KEY", "sk-test-SECRET-upstream-key-0123456789")
os.environ.setdefault("DEFAULT_MODEL", "fake-model")
os.environ.setdefault("UPSTREAM_MAX_RETRY_WAIT", "2")
os.environ.setdefault("UPSTREAM_READ_TIMEOUT", "5")
os.environ.setdefault("REPLY_FLUSH_SECONDS", "0.2")
os.environ.setdefault("REPLY_LEASE_SECONDS", "5")
# App processes the tests start and stop drain briefly (tests/test_drain.py sets its own).
os.environ.setdefault("DRAIN_SECONDS", "3")
# A database that refuses connections shows as an outage after 1 s, not after the default 10.
os.environ.setdefault("DB_POOL_TIMEOUT", "1")
# The fake model servers listen on loopback, not always at OPENAI_BASE_URL (which is
# allowed implicitly): allow them as an operator of a local model server would.
# tests/test_ssrf.py empties the list wherever it tests what is refused.
os.environ.setdefault("UPSTREAM_ALLOWED_HOSTS", "127.0.0.1")
# Members are made in nearly every test, in this process and the app processes it starts:
# a fast password hash instead of PBKDF2's million rounds (settings.py; never in production).
os.environ.setdefault("TEST_FAST_PASSWORD_HASHER", "true")
# No title requests after first replies (they would be extra upstream requests in every test);
# tests/test_titles.py turns them on.
os.environ.setdefault("MODEL_TITLES", "false")
