"""The one settings file: every value comes from the environment.

Each value is read through a small typed helper that fails at start with
ImproperlyConfigured and a message naming the variable, so a bad deployment
never half-works. `.env.example` lists every variable.
"""

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("chatsite")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def envbool(name: str, default: bool) -> bool:
    value = env(name).lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int, minimum: int = 0) -> int:
    value = env(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envfloat(name: str, default: float, minimum: float = 0.0) -> float:
    value = env(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def envurl(name: str, default: str) -> str:
    value = env(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an http(s) URL, not {value!r}")
    return value


DEBUG = envbool("DEBUG", False)

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for a local trial."
        )
    SECRET_KEY = "insecure-local-trial-key-never-use-in-production"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if urlsplit(_origin).scheme not in ("http", "https"):
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS entries must start with http:// or https://, not {_origin!r}"
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Trigram indexes for the staff's search (Postgres; the migration skips them on SQLite).
    "django.contrib.postgres",
    "channels",
    "csp",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "conversations.web.language.MemberLanguageMiddleware",  # the member's chosen language wins
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "conversations.outages.OutageMiddleware",  # 503, not 500, while Postgres or Redis is down
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: Postgres for teams and tests; a local SQLite file for a trial.
# Worker threads for database calls from async code (chat/threads.py).
DB_THREADS = envint("DB_THREADS", 6, minimum=1)
# Postgres connections come from psycopg's pool (Django 5.1+), not persistent per-thread
# connections: under ASGI a request's sync view may run in a new thread each time, and
# CONN_MAX_AGE then opens (and strands) a connection per thread; the benchmark counted 100
# opened for 100 API requests. Taken for each unit of work and given back after it, so a
# process holds at most DB_POOL_SIZE; waiting longer than DB_POOL_TIMEOUT is an outage (503).
# The pool checks a connection as it hands it out without a round trip (chatsite/postgres: the
# engine, in place of CONN_HEALTH_CHECKS's empty query on every checkout): one Postgres dropped
# while idle is replaced rather than failing the next write; after a failure the whole pool is
# checked (chat/threads.py).
DB_POOL_SIZE = envint("DB_POOL_SIZE", DB_THREADS + 10, minimum=2)
DB_POOL_TIMEOUT = envfloat("DB_POOL_TIMEOUT", 10.0, minimum=0.1)
# Prepared statements: parameters sent apart from the query (psycopg's server-side binding),
# and a statement a connection has run DB_PREPARE_THRESHOLD times is prepared there, so
# Postgres no longer parses and plans it, nor psycopg quotes its values into the text. A send's
# statements are the same every time: Postgres's CPU per send 3.4 -> 2.0 ms, the app's 10.3 -> 9.1
# (python -m bench.statements; docs/benchmarks.md). Off (Django's default) for a pooler that does not
# keep prepared statements (PgBouncer in transaction mode before 1.21).
DB_PREPARED_STATEMENTS = envbool("DB_PREPARED_STATEMENTS", True)
DB_PREPARE_THRESHOLD = envint("DB_PREPARE_THRESHOLD", 5)
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "chatsite.postgres"
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # the pool's own check (chatsite/postgres) does it
        options = DATABASES["default"].setdefault("OPTIONS", {})
        if DB_PREPARED_STATEMENTS:
            options.update(server_side_binding=True, prepare_threshold=DB_PREPARE_THRESHOLD)
        options["pool"] = {
            "min_size": 2, "max_size": DB_POOL_SIZE, "timeout": DB_POOL_TIMEOUT,
            # psycopg_pool retries a failed connection with a doubling wait for 5 minutes, so
            # after a 30 s outage the app could wait another 30 s to reconnect. Giving up after
            # 2 s lets the next request that needs a connection try again at once.
            "reconnect_timeout": 2.0,
        }
else:
    log.warning("DATABASE_URL is not set: using the local SQLite file db.sqlite3 (trial only)")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 20},
        }
    }
DATABASES["default"].setdefault("TEST", {})["NAME"] = env("TEST_DATABASE_NAME") or None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: Redis lets several daphne processes share groups.
# The Pub/Sub layer, not channels-redis's list-based one: that one keeps every
# socket of a process in one Redis list whose capacity, once full, silently
# drops group messages (done frames included), and spends a Lua script, a
# blocking pop and a backup write on every delta. Pub/Sub costs one PUBLISH
# per frame and one read per process; a delta lost in a Redis hiccup shows as
# a gap in offsets and the socket resyncs (docs/decisions.md).
REDIS_URL = env("REDIS_URL")
# Prefix of this site's keys in Redis, for the channel layer and the cache alike.
REDIS_PREFIX = env("CHANNEL_PREFIX", "chat")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's Pub/Sub layer, serving sockets of this process without Redis (chat/layer.py).
            "BACKEND": "conversations.chat.layer.LocalFirstPubSubLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default; give reads room.
                # A Redis that hangs rather than refuses costs at most 5 s to connect.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}],
                "prefix": REDIS_PREFIX,
            },
        }
    }
    # The cache holds the sign-in failure counts, which every process must share.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
            "OPTIONS": {"socket_connect_timeout": 5, "socket_timeout": 5},
        }
    }
else:
    log.warning(
        "REDIS_URL is not set: using the in-memory channel layer (one process only)"
        " and a per-process cache for sign-in throttling"
    )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": envint("CHANNEL_CAPACITY", 1000, minimum=10)},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }

AUTH_USER_MODEL = "conversations.Member"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The test suite makes members in nearly every test (tests/testenv.py sets this): MD5 is fast
# and worthless as a password hash. Never set it for a real deployment.
if envbool("TEST_FAST_PASSWORD_HASHER", False):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Staff review (docs/security.md, "Staff review"). Off: nobody reads members' messages in the
# admin, superusers included (counts and dates stay visible). On: staff holding the permission
# "Can read the messages of members' conversations" (superusers hold every permission) read
# transcripts and export them, and every reading is written to the audit log.
STAFF_REVIEW_ENABLED = envbool("STAFF_REVIEW_ENABLED", True)
# Anyone who can reach the site may create an account at /accounts/signup/. Off: staff create
# members in the admin, or send invite links.
SIGNUP_ENABLED = envbool("SIGNUP_ENABLED", False)
# Days an invite link made in the admin stays usable (once).
INVITE_DAYS = envint("INVITE_DAYS", 7, minimum=1)
# Conversations with no activity for this many days are deleted by `manage.py purge_conversations`
# (run it daily from cron). 0: keep them forever. Usage rows and the audit log are kept.
RETENTION_DAYS = envint("RETENTION_DAYS", 0)

# Sign-in throttling (conversations/login_throttle.py): failures are counted per
# account and per client address over LOGIN_LOCKOUT_SECONDS; past a limit, sign-in
# is refused for LOGIN_LOCKOUT_SECONDS without checking the password.
AUTHENTICATION_BACKENDS = [
    "conversations.accounts.throttle.LoginThrottleGate",  # refuses locked attempts; never signs anyone in
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURES_PER_ACCOUNT = envint("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_IP = envint("LOGIN_FAILURES_PER_IP", 50, minimum=1)
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
# How many proxies of yours append to X-Forwarded-For in front of the app; the
# client address is the entry the outermost one appended. 0: the header is ignored.
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0)

# English and Simplified Chinese ship together (locale/). The language follows the browser
# (Accept-Language) unless the member chose one on their account page.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve static files from the app folders too, so a checkout runs without collectstatic
# (the Docker image still collects and compresses them at build time).
WHITENOISE_USE_FINDERS = True
# Images members attach (chat/images.py): stored here, read only through the app (owner-only).
MEDIA_ROOT = Path(env("MEDIA_ROOT") or BASE_DIR / "media")
MAX_IMAGE_BYTES = envint("MAX_IMAGE_BYTES", 10 * 1024 * 1024, minimum=1024)
MAX_IMAGE_PIXELS = envint("MAX_IMAGE_PIXELS", 25_000_000, minimum=10_000)
MAX_IMAGE_SIDE = envint("MAX_IMAGE_SIDE", 2048, minimum=64)  # larger ones are scaled down (models see 2048 at most)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Behind an HTTPS proxy (see README, "Deploying"): secure cookies and HSTS.
HTTPS = envbool("HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds the whole domain to HTTPS in browsers for good: an operator
        # opts in with SECURE_HSTS_PRELOAD=true; until then the deploy check need not nag.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# No inline script anywhere, the admin's included; styles may be inline (KaTeX sets
# them on math). Sockets go to this same origin ('self' covers ws: and wss: here).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The upstream Chat Completions endpoint.
OPENAI_BASE_URL = envurl("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_API_KEY = env("OPENAI_API_KEY")
DEFAULT_MODEL = env("DEFAULT_MODEL", "gpt-4o-mini")
# After a conversation's first reply, ask its model for a short title (chat/titles.py).
MODEL_TITLES = envbool("MODEL_TITLES", True)
# Keys that encrypt providers' API keys at rest (cryptography's Fernet keys, comma-separated;
# the first encrypts, all decrypt: docs/operations.md says how to rotate). Unset: one derived
# from SECRET_KEY. Make one with:
#   python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'
PROVIDER_KEY_SECRETS = envlist("PROVIDER_KEY_SECRETS")
for _key in PROVIDER_KEY_SECRETS:
    try:
        from cryptography.fernet import Fernet

        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured("PROVIDER_KEY_SECRETS entries must be Fernet keys (32 url-safe base64 bytes)") from None
# How long the list of models a provider offers is kept before it is asked again.
MODEL_LIST_CACHE_SECONDS = envint("MODEL_LIST_CACHE_SECONDS", 300, minimum=1)
# How long a process keeps the enabled models and the quota rows before it reads them
# again (models/memo.py); changes made through this process apply at once, other
# processes' within this time. 0 reads them on every send.
MEMO_SECONDS = envfloat("MEMO_SECONDS", 5.0)
UPSTREAM_CONNECT_TIMEOUT = envfloat("UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# Longest wait for the first token or between two chunks before the reply fails.
UPSTREAM_READ_TIMEOUT = envfloat("UPSTREAM_READ_TIMEOUT", 120.0, minimum=0.1)
UPSTREAM_MAX_RETRIES = envint("UPSTREAM_MAX_RETRIES", 2)
UPSTREAM_MAX_RETRY_WAIT = envfloat("UPSTREAM_MAX_RETRY_WAIT", 20.0)
# SSRF defence (conversations/netguard.py): model servers (other than OPENAI_BASE_URL's own
# host and port, allowed implicitly) and image URLs may not reach loopback, private,
# link-local or other non-public addresses, except these hosts: names, addresses, `host:port`,
# `[ipv6]:port` or CIDR ranges, e.g. `127.0.0.1:8000,vllm.lan,10.20.0.0/16`.
UPSTREAM_ALLOWED_HOSTS = envlist("UPSTREAM_ALLOWED_HOSTS")
for _entry in UPSTREAM_ALLOWED_HOSTS:
    from conversations.upstream.netguard import parse_allowed_host

    try:
        parse_allowed_host(_entry)
    except ValueError as exc:
        raise ImproperlyConfigured(f"UPSTREAM_ALLOWED_HOSTS: {exc}") from None

# Replies: how they stream, persist and recover.
DELTA_COALESCE_SECONDS = envfloat("DELTA_COALESCE_MS", 40.0) / 1000
REPLY_FLUSH_SECONDS = envfloat("REPLY_FLUSH_SECONDS", 1.0, minimum=0.05)
REPLY_LEASE_SECONDS = envfloat("REPLY_LEASE_SECONDS", 30.0, minimum=1.0)
if REPLY_LEASE_SECONDS < 3 * REPLY_FLUSH_SECONDS:
    raise ImproperlyConfigured("REPLY_LEASE_SECONDS must be at least 3 x REPLY_FLUSH_SECONDS")
MAX_REPLY_CHARS = envint("MAX_REPLY_CHARS", 200_000, minimum=100)
CONTEXT_TOKEN_BUDGET = envint("CONTEXT_TOKEN_BUDGET", 32_000, minimum=256)
MAX_MESSAGE_CHARS = envint("MAX_MESSAGE_CHARS", 100_000, minimum=100)
WS_MAX_FRAME_BYTES = envint("WS_MAX_FRAME_BYTES", 8 * 1024 * 1024, minimum=1024)
# permessage-deflate on websockets (chatsite/server.py): a reply's small frames shrink to about
# their text. Its window (2^bits bytes, 9..15) and zlib memory level (1..9) bound each socket's cost.
WS_COMPRESSION = envbool("WS_COMPRESSION", True)
WS_COMPRESSION_WINDOW_BITS = envint("WS_COMPRESSION_WINDOW_BITS", 10, minimum=9)
WS_COMPRESSION_MEM_LEVEL = envint("WS_COMPRESSION_MEM_LEVEL", 2, minimum=1)
# Frames one socket may send: WS_FRAME_BURST at once, then WS_FRAMES_PER_SECOND (realtime/ratelimit.py).
WS_FRAMES_PER_SECOND = envfloat("WS_FRAMES_PER_SECOND", 2.0, minimum=0.01)
WS_FRAME_BURST = envint("WS_FRAME_BURST", 20, minimum=1)
# On SIGTERM a process takes no new replies and gives running ones this long to finish, then
# saves them as interrupted (chat/drain.py). docker-compose.yml's stop_grace_period is longer.
DRAIN_SECONDS = envfloat("DRAIN_SECONDS", 25.0)
# Bytes a websocket may leave unread once the kernel's buffers and twisted's 64 KiB are full;
# past it the server drops that socket (chatsite/server.py). 1 MiB is minutes of a live reply
# (coalesced deltas are a few KiB/s) yet caps what one tab that stopped reading can pin.
WS_SEND_BUFFER_BYTES = envint("WS_SEND_BUFFER_BYTES", 1024 * 1024, minimum=64 * 1024)

# Importing conversations (POST /api/import, chat/imports.py): the largest file, and the most
# conversations and messages one file may hold. A file over any of them is refused whole.
IMPORT_MAX_BYTES = envint("IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
IMPORT_MAX_CONVERSATIONS = envint("IMPORT_MAX_CONVERSATIONS", 2000, minimum=1)
IMPORT_MAX_MESSAGES = envint("IMPORT_MAX_MESSAGES", 100_000, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request line at INFO; keep the relay's log about the relay.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # The pool logs every failed reconnection while Postgres is down; outages.py and
        # chat/generation.py say so once.
        "psycopg.pool": {"level": "ERROR"},
    },
}
CSRF_FAILURE_VIEW = "conversations.web.api.csrf_failure"
