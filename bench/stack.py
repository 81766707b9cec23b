"""The app against the fake model server, started for a browser: a fresh Postgres database of
its own, one member, the fake upstream and daphne (the in-memory channel layer: one process).

Used by bench/browser.py and scripts/screenshots.py. Every process is stopped by its handle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench import procs

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
API_KEY = "browser-stack-upstream-key"
MEMBER, PASSWORD = "demo", "demo-password"


class AppStack:
    """`with AppStack("chat_bench_browser", logs) as app:` then `app.origin`; the database is dropped and made anew."""

    def __init__(self, database: str, log_dir: Path):
        self.database = database
        self.log_dir = log_dir
        self.fake: procs.Service | None = None
        self.daphne: procs.Service | None = None
        self.fake_port = procs.free_port()
        self.port = procs.free_port()
        db_url = urlsplit(PG_ADMIN_URL)._replace(path=f"/{database}").geturl()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DATABASE_URL": db_url,
            "SECRET_KEY": "browser-stack-only-secret-key",
            "DEBUG": "false",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.fake_port}/v1",
            "OPENAI_API_KEY": API_KEY,
            "DEFAULT_MODEL": "fake-model",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "MODEL_TITLES": "false",  # the fake model would title every chat "You said: …"
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AppStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        except psycopg.OperationalError as exc:
            raise SystemExit(f"Postgres is not reachable at {PG_ADMIN_URL} ({exc}); try ./scripts/ensure-services.sh") from None
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=self.env, check=True, capture_output=True)
        subprocess.run([*manage, "ensure_member", "--username", MEMBER, "--password", PASSWORD],
                       cwd=ROOT, env=self.env, check=True, capture_output=True)
        self.fake = procs.Service(
            "fake-upstream",
            [sys.executable, "-m", "tests.fake_upstream", "--port", str(self.fake_port), "--api-key", API_KEY],
            {**os.environ, "PYTHONUNBUFFERED": "1"}, self.fake_port, self.log_dir,
        )
        self.daphne = procs.start_daphne("daphne", self.port, self.env, self.log_dir)
        return self

    def __exit__(self, *exc) -> None:
        for service in (self.daphne, self.fake):
            if service is not None:
                service.stop()


def sign_in(page, origin: str) -> None:
    page.goto(f"{origin}/accounts/login/")
    page.locator("#id_username").fill(MEMBER)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    page.wait_for_url(f"{origin}/")
    page.locator("#chat[data-ready=true]").wait_for()
