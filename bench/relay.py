"""The relay benchmark: `python -m bench.relay [--quick] [--runs 3] [--json out.json] [--no-profile] [--docs]`.

It stands up what a team deployment has, on loopback: a fresh Postgres
database (`chat_bench`), Redis as the channel layer, the app as a daphne
process, and the fake OpenAI server (tests/fake_upstream.py) as its own
process; beside them the bare relay (bench/bare_relay.py) in a daphne of its
own. Websocket clients and the direct httpx baseline run in yet another
process (bench/clients.py), so each side's CPU is its own.

Phases, in this order (the order matters where noted):
  1. wire and database: N=10 replies of M = 100, 500, 2000 tokens, and a paced one;
     bytes per reply and Postgres writes per reply. First, so the counters start
     from a daphne that has written nothing.
  2. the main table, `runs` times: for each N, the direct baseline, then the app
     (unpaced, M=500), then the bare relay where the plan says; then the paced rows
     (50 tokens/s, M=250) the same way. N sends leave the clients at once.
  3. two processes: the same replies watched from a second daphne.
  4. idle sockets: 1,000 open, memory and CPU of the app.
  5. py-spy profiles of the app during paced, then unpaced, N=100 replies (--no-profile skips them).
  6. context rebuild of a 1,000-message conversation, in this process.
Then it prints the tables and writes bench/results/latest.{md,json}
(and with --docs, the generated part of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from . import procs, profiling, report
from .figures import percentile

ROOT = procs.ROOT
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
BENCH_DB = "chat_bench"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
API_KEY = "bench-upstream-key"
SECRET_KEY = "bench-only-secret-key-shared-by-the-driver-and-daphne"
MODEL = "fake-model"
PACE_DELAY = 0.02  # seconds between tokens: 50 tokens/s per stream
# Postgres 15+ keeps a backend's table counters until it has been idle this long
# (PGSTAT_IDLE_INTERVAL): pg_stat_user_tables is only exact after that.
PGSTAT_IDLE_INTERVAL = 10.0
# A phase ends this long after the last frame reached any client: an overloaded app
# can lose a reply's `done`, and waiting for the deadline would eat the time budget.
STALL_SECONDS = 15.0
MESSAGE_TABLE, CONVERSATION_TABLE = "conversations_message", "conversations_conversation"
USAGE_TABLE = "conversations_usage"  # one row per reply (absent before usage was recorded)
# Only one benchmark at a time on a Postgres server: they would drop each other's database.
# A session-level advisory lock (any database) is seen by every worktree and checkout.
ADVISORY_LOCK = 0x63686174  # "chat"


@dataclass
class Plan:
    """What to measure; --quick shrinks it to a one-minute smoke run."""

    runs: int = 3
    ns: tuple[int, ...] = (1, 10, 100, 200)
    tokens: int = 500
    paced_ns: tuple[int, ...] = (10, 100)
    paced_tokens: int = 250  # at 50 tokens/s a 500-token reply takes 10 s: half saves time
    bare_ns: tuple[int, ...] = (100,)  # the bare relay beside the app: unpaced rows
    bare_paced_ns: tuple[int, ...] = (10, 100)  # and paced rows
    wire_n: int = 10
    wire_tokens: tuple[int, ...] = (100, 500, 2000)
    watch_n: int = 10
    idle_sockets: int = 1000
    idle_seconds: float = 10.0
    context_messages: int = 1000
    profile: bool = True
    profile_n: int = 100
    # Postgres 15 flushes a backend's table counters only once it has been idle 10 s: the
    # database figures wait for that. --quick does not, so its writes per reply are approximate.
    exact_db_counters: bool = True
    budget_seconds: float = 540.0  # phases that would start later are skipped, and said so

    @classmethod
    def quick(cls) -> Plan:
        return cls(runs=1, ns=(1, 10), paced_ns=(10,), bare_ns=(10,), bare_paced_ns=(10,), wire_tokens=(100,),
                   idle_sockets=200, idle_seconds=3.0, profile_n=10, exact_db_counters=False)

    def members_needed(self) -> int:
        return max(self.ns + self.paced_ns + (self.wire_n, self.watch_n, self.profile_n))

    def conversations_needed(self) -> int:
        main = self.runs * (sum(self.ns) + sum(self.paced_ns))
        wire = self.wire_n * (len(self.wire_tokens) + 1)
        profile = 2 * self.profile_n if self.profile else 0
        return main + wire + 2 * self.watch_n + self.idle_sockets + profile


def expected_reply(user_text: str, tokens: int) -> str:
    """What tests/fake_upstream.py streams for a user text without `text`: an echo, then w1, w2, ..."""
    return f"You said: {user_text[:200]} " + "".join(f"w{i} " for i in range(1, tokens))


def message_for(tag: str, tokens: int, delay: float) -> tuple[str, str]:
    """A unique bench message (the fake's record is found by it) and its exact reply."""
    user_text = f"bench {tag}"
    directive = json.dumps({"tokens": tokens, "delay": delay}, separators=(",", ":"))
    return f"{user_text} fake:{directive}", expected_reply(user_text, tokens)


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


class Bench:
    """One benchmark: its database, its processes, and a method per phase.

    Phases return plain dicts (JSON as they are); report.py turns them into tables.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.logs = RESULTS / "logs"
        self.prefix = f"bench-{os.getpid()}-{int(time.time())}"
        self.fake: procs.Service | None = None
        self.daphne: procs.Service | None = None
        self.bare: procs.Service | None = None
        self.stats: psycopg.Connection | None = None
        self.redis: redis.Redis | None = None
        self.pool: list[dict] = []
        self.sessions: list[str] = []
        self.phase_count = 0
        self.fake_port = procs.free_port()
        self.env = self._app_env()

    # Set-up

    def _app_env(self) -> dict:
        """The app's environment, for daphne, manage.py and this process's Django alike."""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="chatsite.settings",
            DATABASE_URL=self.db_url,
            REDIS_URL=REDIS_URL,
            CHANNEL_PREFIX=self.prefix,
            SECRET_KEY=SECRET_KEY,
            DEBUG="false",
            OPENAI_BASE_URL=f"http://127.0.0.1:{self.fake_port}/v1",
            OPENAI_API_KEY=API_KEY,
            DEFAULT_MODEL=MODEL,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            UPSTREAM_READ_TIMEOUT="60",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        # A title request after each first reply is not the relay being measured; and every measured
        # reply is a first one, whose title request would carry the bench message's fake: directive
        # (a 250- or 500-token reply, not a title's few). Off unless asked for (MODEL_TITLES=true).
        env.setdefault("MODEL_TITLES", "false")
        return env

    @property
    def db_url(self) -> str:
        return urlsplit(PG_ADMIN_URL)._replace(path=f"/{BENCH_DB}").geturl()

    def setup(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._check_services()
        self._create_database()
        self._step("migrating", lambda: subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=self.env,
            check=True, capture_output=True,
        ))
        self._step("creating members and conversations", self._create_rows)
        self.fake = procs.start_fake_upstream(self.fake_port, API_KEY, self.logs)
        self.daphne = procs.start_daphne("daphne-A", procs.free_port(), self.env, self.logs)
        self.bare = procs.start_bare_relay("bare-relay", procs.free_port(), self.env, self.logs)
        self.stats = psycopg.connect(self.db_url, autocommit=True)
        self.redis = redis.Redis.from_url(REDIS_URL, socket_timeout=5)

    def _step(self, what: str, action) -> None:
        started = time.monotonic()
        action()
        print(f"  {what}: {time.monotonic() - started:.1f}s", flush=True)

    def _check_services(self) -> None:
        try:
            psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
        except psycopg.Error as exc:
            raise SystemExit(
                f"Postgres is not reachable at {PG_ADMIN_URL} ({exc}); try ./scripts/ensure-services.sh"
            ) from None
        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
        except redis.RedisError as exc:
            raise SystemExit(
                f"Redis is not reachable at {REDIS_URL} ({exc}); try ./scripts/ensure-services.sh"
            ) from None

    def _create_database(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))

    def _create_rows(self) -> None:
        """Members with sessions and a pool of empty conversations, from this process's Django.

        Each phase takes fresh conversations, so every measured reply is a first turn
        and runs compare. The connection is closed at the end: that flushes this
        backend's table counters before the database phase reads them.
        """
        django_setup(self.env)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password
        from django.db import connection
        from django.test import Client

        from conversations.models import Conversation

        user_model = get_user_model()
        users = user_model.objects.bulk_create(
            [user_model(username=f"bench-{i:04d}", password=make_password(None))
             for i in range(self.plan.members_needed())]
        )
        for user in users:
            client = Client()
            client.force_login(user)
            self.sessions.append(client.cookies["sessionid"].value)
        count = self.plan.conversations_needed()
        conversations = Conversation.objects.bulk_create(
            [Conversation(owner=users[i % len(users)], model=MODEL) for i in range(count)], batch_size=1000
        )
        self.pool = [{"id": str(c.id), "session": self.sessions[i % len(users)]}
                     for i, c in enumerate(conversations)]
        self.pool.reverse()  # taken from the end
        connection.close()

    def teardown(self) -> None:
        for service in (self.daphne, self.bare, self.fake):
            if service is not None:
                service.stop()
        if self.stats is not None:
            self.stats.close()
        if self.redis is not None:
            self.redis.close()
        self._forget_channel_keys()

    def _forget_channel_keys(self) -> None:
        """channels-redis keeps groups for a day: remove this run's keys (bounded)."""
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            keys = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                keys.append(key)
                if len(keys) >= 200_000:
                    break
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        except redis.RedisError as exc:
            self.notes.append(f"could not remove the run's Redis keys: {exc}")
        finally:
            client.close()

    # Helpers of every phase

    def over_budget(self, what: str) -> bool:
        elapsed = time.monotonic() - self.started
        if elapsed > self.plan.budget_seconds:
            self.notes.append(f"skipped {what}: {elapsed:.0f}s spent, budget {self.plan.budget_seconds:.0f}s")
            print(f"  skipped {what} (time budget)", flush=True)
            return True
        return False

    def take(self, n: int) -> list[dict]:
        if len(self.pool) < n:
            raise RuntimeError("the conversation pool is empty: Plan.conversations_needed is wrong")
        taken, self.pool[-n:] = self.pool[-n:], []
        return taken

    def messages(self, n: int, tokens: int, delay: float, label: str) -> list[dict]:
        self.phase_count += 1
        out = []
        for i in range(n):
            content, expected = message_for(f"{label}.{self.phase_count}-{i}", tokens, delay)
            out.append({"content": content, "expected": expected})
        return out

    def pg_wait(self) -> None:
        """Before reading pg_stat_user_tables: until every backend has flushed its counters."""
        if self.plan.exact_db_counters:
            time.sleep(PGSTAT_IDLE_INTERVAL + 1.0)

    @staticmethod
    def endpoint(service: procs.Service) -> dict:
        return {"ws": f"ws://127.0.0.1:{service.port}", "origin": f"http://127.0.0.1:{service.port}"}

    @staticmethod
    def deadline(tokens: int, delay: float) -> float:
        return 60.0 + tokens * delay

    def drive(self, spec: dict, n_sockets: int, server: procs.Service | None = None,
              on_go=None, on_result=None) -> tuple[dict, dict]:
        """Run one client process through ready -> go -> result.

        Returns its result and the CPU-seconds used from `go` to the result by the relay
        under test (`server`, the app by default), Redis, Postgres and the fake upstream
        (the hooks run just before `go` and just after the result, for the profiler).
        """
        server = server or self.daphne
        spec_path = RESULTS / "clients-spec.json"
        with procs.ClientProcess(spec, spec_path, self.logs / "clients.log") as clients:
            ready = clients.expect("ready", timeout=180)
            if ready["connected"] < n_sockets:
                self.notes.append(f"{spec['mode']}: {ready['connected']}/{n_sockets} sockets opened: {ready['errors']}")
            if on_go is not None:
                on_go()
            before = self.cpu_readings(server)
            clients.send("go")
            result = clients.expect("result", timeout=spec["deadline"] + 30)
            after = self.cpu_readings(server)
            if on_result is not None:
                on_result()
            clients.send("close")
        cpu = {key: after[key] - before[key] for key in ("app", "redis", "fake")}
        cpu["postgres"] = procs.cpu_since(before["postgres"], after["postgres"])
        return result, cpu

    def cpu_readings(self, server: procs.Service) -> dict:
        return {"app": procs.cpu_seconds(server.pid), "redis": self.redis_cpu(),
                "fake": procs.cpu_seconds(self.fake.pid), "postgres": procs.cpu_of(self.postgres_pids())}

    def postgres_pids(self) -> list[int]:
        """The benchmark database's backends and the server's own processes (WAL writer,
        checkpointer, ...), not the backends of other databases (other test runs)."""
        rows = self.stats.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type <> 'client backend'"
        ).fetchall()
        return [pid for (pid,) in rows]

    def redis_cpu(self) -> float:
        """CPU-seconds the Redis server has used: channels-redis moves part of the relay's work there."""
        info = self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def fake_requests(self) -> list[dict]:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.fake_port}/_fake/requests", timeout=30).json()

    def reset_fake(self) -> None:
        import httpx

        httpx.post(f"http://127.0.0.1:{self.fake_port}/_fake/reset", timeout=10).raise_for_status()

    def upstream_times(self) -> dict[str, dict]:
        """The fake's `received_at` and `first_chunk_at` of each request, by its last user message."""
        found = {}
        for record in self.fake_requests():
            users = [m for m in (record.get("body") or {}).get("messages", []) if m.get("role") == "user"]
            if users and isinstance(users[-1].get("content"), str):  # the first request with that text
                found.setdefault(users[-1]["content"], {"received_at": record.get("received_at"),
                                                        "first_chunk_at": record.get("first_chunk_at")})
        return found

    def wait_quiet(self, timeout: float = 30.0) -> None:
        """Between phases: until no reply streams (a reply may outlive its socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            streaming = self.stats.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE status = 'streaming'").format(sql.Identifier(MESSAGE_TABLE))
            ).fetchone()[0]
            if not streaming:
                return
            time.sleep(0.2)
        self.notes.append(f"replies still streaming {timeout:.0f}s after a phase")

    def wait_app_idle(self, server: procs.Service | None = None, timeout: float = 30.0) -> None:
        """Until the relay uses under 10% of a core: an overloaded phase leaves work behind
        (queued frames, logging) that would otherwise be billed to the next one."""
        server = server or self.daphne
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = procs.cpu_seconds(server.pid)
            time.sleep(0.5)
            if procs.cpu_seconds(server.pid) - before < 0.05:
                return
        self.notes.append(f"{server.name} was still busy {timeout:.0f}s after a phase")

    def db_counters(self) -> dict[str, int]:
        rows = self.stats.execute(
            "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            [[MESSAGE_TABLE, CONVERSATION_TABLE, USAGE_TABLE]],
        ).fetchall()
        counters = {"usage_ins": 0, "usage_upd": 0}
        # Connections the app opened (Postgres 14+ counts sessions per database), for the pool.
        (counters["sessions"],) = self.stats.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        for relname, inserted, updated in rows:
            short = {MESSAGE_TABLE: "message", CONVERSATION_TABLE: "conversation", USAGE_TABLE: "usage"}[relname]
            counters[f"{short}_ins"], counters[f"{short}_upd"] = inserted, updated
        return counters

    # Phases

    def relay_phase(self, n: int, tokens: int, delay: float, label: str, **hooks) -> dict:
        """N replies through the app, one signed-in tab each."""
        convs = [dict(c, **m) for c, m in zip(self.take(n), self.messages(n, tokens, delay, label))]
        figures = self._socket_phase("relay", self.daphne, convs, tokens, delay, label, **hooks)
        self.wait_quiet()
        self.wait_app_idle()
        return figures

    def bare_phase(self, n: int, tokens: int, delay: float, label: str) -> dict:
        """The same replies through the bare relay (it has no conversations: any id will do)."""
        convs = [dict(id=str(uuid.uuid4()), session="", **m) for m in self.messages(n, tokens, delay, label)]
        figures = self._socket_phase("bare", self.bare, convs, tokens, delay, label)
        self.wait_app_idle(self.bare)
        return figures

    def _socket_phase(self, mode: str, server: procs.Service, convs: list[dict], tokens: int, delay: float,
                      label: str, **hooks) -> dict:
        n = len(convs)
        self.reset_fake()
        spec = {"mode": "relay", "app": self.endpoint(server), "convs": convs,
                "deadline": self.deadline(tokens, delay), "stall": STALL_SECONDS}
        result, cpu = self.drive(spec, n, server, **hooks)
        figures = phase_figures(mode, n, tokens, delay, convs, result, self.upstream_times())
        held = figures["ok"] == n
        for key in ("app", "redis", "postgres", "fake"):
            figures[f"{key}_cpu_s"] = cpu[key]
            figures[f"{key}_cpu_ms_per_token"] = cpu[key] * 1000 / (n * tokens) if held else None
        # The keys the report has always read: the relay's own CPU.
        figures["cpu_s"], figures["cpu_ms_per_token"] = cpu["app"], figures["app_cpu_ms_per_token"]
        if not held:
            self.notes.append(f"{mode} N={n} M={tokens}{' paced' if delay else ''} ({label}): only {figures['ok']}/{n} "
                              f"replies ended complete; {figures['errors']}")
        self.print_phase(figures)
        return figures

    def direct_phase(self, n: int, tokens: int, delay: float, label: str) -> dict:
        convs = self.messages(n, tokens, delay, label)
        self.reset_fake()
        spec = {"mode": "direct", "convs": convs, "deadline": self.deadline(tokens, delay), "stall": STALL_SECONDS,
                "upstream": {"url": f"http://127.0.0.1:{self.fake_port}/v1/chat/completions",
                             "api_key": API_KEY, "model": MODEL}}
        result, cpu = self.drive(spec, n)
        figures = phase_figures("direct", n, tokens, delay, convs, result, self.upstream_times())
        figures["fake_cpu_s"] = cpu["fake"]
        figures["fake_cpu_ms_per_token"] = cpu["fake"] * 1000 / (n * tokens)
        app_cpu = figures["app_cpu_s"] = cpu["app"]  # the app has nothing to do here: is it quiet?
        if app_cpu > 0.1:
            self.notes.append(f"the app used {app_cpu:.2f} CPU-s during direct N={n} ({label})")
        self.print_phase(figures)
        return figures

    @staticmethod
    def print_phase(f: dict) -> None:
        pace = f" @{1 / f['delay']:.0f}/s" if f["delay"] else ""
        rate = f"{f['tok_per_s']:,.0f} tok/s" if f["tok_per_s"] else "did not hold"
        line = f"  {f['mode']:6} N={f['n']:<4} M={f['tokens']}{pace}: {f['ok']}/{f['n']} ok, {rate}"
        if f.get("cpu_ms_per_token") is not None:
            line += f", {f['cpu_ms_per_token']:.4f} CPU-ms/token"
        if f["added_ms"]:
            line += (f", added TTFT p50 {percentile(f['added_ms'], 50):.1f} ms "
                     f"({percentile(f['to_upstream_ms'], 50):.1f} + {percentile(f['after_upstream_ms'], 50):.1f})")
        if f["errors"]:
            line += f"  errors: {f['errors']}"
        print(line, flush=True)

    def wire_and_database(self) -> list[dict]:
        """Bytes and database writes per reply, for several reply lengths and a paced reply.

        Each reading of pg_stat_user_tables waits until every daphne backend has been
        idle PGSTAT_IDLE_INTERVAL, so the counters include all of the phase's writes.
        """
        print(f"wire and database (N={self.plan.wire_n})", flush=True)
        n = self.plan.wire_n
        self.pg_wait()  # the set-up's writes are counted before, not in, the first phase
        before = self.db_counters()
        rows = []
        variants = [(tokens, 0.0) for tokens in self.plan.wire_tokens] + [(self.plan.paced_tokens, PACE_DELAY)]
        for tokens, delay in variants:
            if self.over_budget(f"wire M={tokens}"):
                break
            figures = self.relay_phase(n, tokens, delay, f"wire-{tokens}")
            self.pg_wait()
            after = self.db_counters()
            figures["db_per_reply"] = {key: (after[key] - before[key]) / n for key in after}
            before = after
            rows.append(figures)
        return rows

    def api_connections(self, requests: int = 100, concurrency: int = 10) -> dict:
        """Database connections the app opens for JSON API requests (GET /api/conversations/).

        Under ASGI each request's sync view may run in a new thread; with persistent
        connections (CONN_MAX_AGE) every such thread opens its own and leaves it open.
        """
        import httpx

        print(f"API requests ({requests}, {concurrency} at a time)", flush=True)
        url = f"http://127.0.0.1:{self.daphne.port}/api/conversations/"
        cookies = {"sessionid": self.sessions[0]}
        self.pg_wait()
        before = self.db_counters()["sessions"]
        started = time.monotonic()
        statuses: list[int] = []

        def one(_):
            with httpx.Client(cookies=cookies, timeout=30) as client:
                statuses.append(client.get(url).status_code)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        took = time.monotonic() - started
        self.pg_wait()
        opened = self.db_counters()["sessions"] - before
        figures = {"requests": requests, "concurrency": concurrency, "ok": statuses.count(200),
                   "connections_opened": opened, "seconds": took}
        print(f"  {figures['ok']}/{requests} ok, {opened} connections opened, {took:.1f}s", flush=True)
        return figures

    def main_table(self) -> list[dict]:
        """`runs` rounds of: per N, direct then relay; then the paced rows."""
        plan = self.plan
        gave_up: set[int] = set()
        runs = []
        for run in range(plan.runs):
            print(f"run {run + 1}/{plan.runs}", flush=True)
            ticks, table, began = procs.machine_ticks(), procs.process_table(), time.monotonic()
            phases = []
            below_held = True  # did the relay hold at the previous N of this run?
            for n in plan.ns:
                if n > 100 and (n in gave_up or not below_held):
                    # "and 200 if the machine holds it": only above an N that held, and not again once failed.
                    if n not in gave_up:
                        self.notes.append(f"N={n} not attempted in run {run + 1}: the relay did not hold at the N below")
                    continue
                if self.over_budget(f"run {run + 1} N={n}"):
                    continue
                phases.append(self.direct_phase(n, plan.tokens, 0.0, f"r{run + 1}-direct-{n}"))
                relay = self.relay_phase(n, plan.tokens, 0.0, f"r{run + 1}-relay-{n}")
                phases.append(relay)
                if n in plan.bare_ns:
                    phases.append(self.bare_phase(n, plan.tokens, 0.0, f"r{run + 1}-bare-{n}"))
                below_held = relay["ok"] == n
                if not below_held and n > 100:
                    gave_up.add(n)
            for n in plan.paced_ns:
                if self.over_budget(f"run {run + 1} paced N={n}"):
                    continue
                phases.append(self.direct_phase(n, plan.paced_tokens, PACE_DELAY, f"r{run + 1}-pdirect-{n}"))
                phases.append(self.relay_phase(n, plan.paced_tokens, PACE_DELAY, f"r{run + 1}-prelay-{n}"))
                if n in plan.bare_paced_ns:
                    phases.append(self.bare_phase(n, plan.paced_tokens, PACE_DELAY, f"r{run + 1}-pbare-{n}"))
            machine = procs.machine_load(ticks, procs.machine_ticks())
            machine["others_cpu_s"] = procs.others_cpu(table, procs.process_table(), os.getpid())
            machine["seconds"], machine["cores"] = time.monotonic() - began, os.cpu_count()
            runs.append({"run": run + 1, "phases": phases, "machine": machine})
        return runs

    def two_processes(self) -> list[dict]:
        """Deltas of replies generated on daphne-A, as seen by sockets on A and on daphne-B."""
        print("two processes", flush=True)
        other = procs.start_daphne("daphne-B", procs.free_port(), self.env, self.logs)
        rows = []
        try:
            for tokens, delay in ((self.plan.tokens, 0.0), (self.plan.paced_tokens, PACE_DELAY)):
                if self.over_budget(f"two processes M={tokens}"):
                    break
                n = self.plan.watch_n
                convs = [dict(c, **m) for c, m in zip(self.take(n), self.messages(n, tokens, delay, "watch"))]
                spec = {"mode": "watch", "app": self.endpoint(self.daphne), "other": self.endpoint(other),
                        "convs": convs, "deadline": self.deadline(tokens, delay), "stall": STALL_SECONDS}
                result, _cpu = self.drive(spec, 2 * n)
                self.wait_quiet()
                latencies_ms = [x * 1000 for x in result["latencies"]]
                row = {
                    "n": n, "tokens": tokens, "delay": delay,
                    "ok": sum(r["ok"] for r in result["replies"]),
                    "watchers_ok": sum(r["ok"] for r in result["watchers"]),
                    "matched": len(latencies_ms), "unmatched": result["unmatched"],
                    "p50_ms": percentile(latencies_ms, 50), "p90_ms": percentile(latencies_ms, 90),
                    "p99_ms": percentile(latencies_ms, 99),
                }
                print(f"  M={tokens} delay={delay}: {row['matched']} deltas matched, "
                      f"added p50 {row['p50_ms'] or 0:.2f} ms", flush=True)
                rows.append(row)
        finally:
            other.stop()
        return rows

    def idle_sockets(self) -> dict:
        """Memory per open, authenticated, idle socket, and the app's CPU while they idle."""
        count = self.plan.idle_sockets
        print(f"idle sockets ({count})", flush=True)
        convs = self.take(count)
        pid = self.daphne.pid
        rss_before = procs.rss_bytes(pid)
        spec = {"mode": "idle", "app": self.endpoint(self.daphne), "convs": convs}
        with procs.ClientProcess(spec, RESULTS / "clients-spec.json", self.logs / "clients.log") as clients:
            started = time.monotonic()
            ready = clients.expect("ready", timeout=240)
            open_seconds = time.monotonic() - started
            time.sleep(1.0)  # the last handshakes' work settles
            rss_open = procs.rss_bytes(pid)
            cpu_before, wall_before = procs.cpu_seconds(pid), time.monotonic()
            time.sleep(self.plan.idle_seconds)
            idle_cpu = procs.cpu_seconds(pid) - cpu_before
            idle_wall = time.monotonic() - wall_before
            clients.send("close")
            clients.expect("closed", timeout=120)
        connected = ready["connected"]
        result = {
            "sockets": count, "connected": connected, "open_seconds": open_seconds,
            "rss_before_mb": rss_before / 2**20, "rss_open_mb": rss_open / 2**20,
            "kb_per_socket": (rss_open - rss_before) / 1024 / connected if connected else None,
            "idle_seconds": idle_wall, "idle_cpu_s": idle_cpu, "idle_cpu_percent": 100 * idle_cpu / idle_wall,
        }
        if ready["errors"]:
            result["errors"] = ready["errors"]
        print(f"  {connected}/{count} open in {open_seconds:.1f}s, {result['kb_per_socket'] or 0:.1f} KB each, "
              f"idle CPU {result['idle_cpu_percent']:.2f}%", flush=True)
        return result

    def profiles(self) -> list[dict]:
        """py-spy profiles of the app: paced N=profile_n replies first (the workload of the
        CPU target), then unpaced ones, each from `go` to the last reply."""
        executable = profiling.py_spy()
        if executable is None:
            return [{"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}]
        runs = []
        for tokens, delay in ((self.plan.paced_tokens, PACE_DELAY), (self.plan.tokens, 0.0)):
            pace = "paced" if delay else "unpaced"
            if self.over_budget(f"profile, {pace}"):
                break
            runs.append(self.profile(executable, tokens, delay))
        return runs

    def profile(self, executable: str, tokens: int, delay: float) -> dict:
        n, pace = self.plan.profile_n, "paced" if delay else "unpaced"
        print(f"profile (py-spy, N={n} {pace})", flush=True)
        raw = RESULTS / f"profile-{pace}-N{n}.txt"
        recorder = profiling.Recorder(executable, self.daphne.pid, raw, self.logs / "py-spy.log")
        try:
            figures = self.relay_phase(n, tokens, delay, f"profile-{pace}", on_go=recorder.start,
                                       on_result=recorder.stop)
        finally:
            recorder.stop()
            recorder.wait()
        samples = recorder.samples()
        base = {"pace": pace, "n": n, "tokens": tokens, "delay": delay}
        if not samples.strip():
            return {**base, "skipped": f"py-spy wrote nothing: {procs.tail(self.logs / 'py-spy.log', 500)}"}
        return {**base, "seconds": recorder.seconds, "replies_ok": figures["ok"], "rate_hz": profiling.RATE_HZ,
                "raw": str(raw.relative_to(ROOT)), "cpu_ms_per_token": figures["cpu_ms_per_token"],
                **profiling.summary(samples)}

    def context_rebuild(self) -> dict:
        """Queries and time of load_branch + build_context for a long conversation, in-process."""
        print(f"context rebuild ({self.plan.context_messages} messages)", flush=True)
        return measure_context_rebuild(self.plan.context_messages)


def added_times(replies: list[dict], convs: list[dict], upstream: dict[str, dict]) -> dict[str, list[float]]:
    """Per reply, in ms: what the relay added to the time to first token, in two parts.

    `to_upstream`: the send left the client -> the upstream had read the request.
    `after_upstream`: the upstream wrote its first chunk -> the first delta reached the tab.
    `added`: their sum, i.e. the time to first token less the upstream's own.
    Every reply whose first token arrived counts, even if a later frame was lost.
    """
    times: dict[str, list[float]] = {"to_upstream_ms": [], "after_upstream_ms": [], "added_ms": []}
    for reply, conv in zip(replies, convs):
        seen = upstream.get(conv["content"]) or {}
        received, first_chunk = seen.get("received_at"), seen.get("first_chunk_at")
        if not (reply["send_at"] and reply["first_at"] and received and first_chunk):
            continue
        to_upstream = (received - reply["send_at"]) * 1000
        after_upstream = (reply["first_at"] - first_chunk) * 1000
        times["to_upstream_ms"].append(to_upstream)
        times["after_upstream_ms"].append(after_upstream)
        times["added_ms"].append(to_upstream + after_upstream)
    return times


def phase_figures(mode: str, n: int, tokens: int, delay: float, convs: list[dict], result: dict,
                  upstream: dict[str, dict]) -> dict:
    """One phase's figures from its clients' outcomes (replies are in the order of convs)."""
    replies = result["replies"]
    ok = [r for r in replies if r["ok"]]
    sends = [r["send_at"] for r in replies if r["send_at"]]
    # Throughput is defined for a phase whose every reply arrived whole: N*M / (last done - first send).
    wall = max(r["done_at"] for r in ok) - min(sends) if len(ok) == n else None
    delivered = len(ok) * tokens
    return {
        "mode": mode, "n": n, "tokens": tokens, "delay": delay,
        "ok": len(ok), "errors": sorted({r["error"] for r in replies if r["error"]})[:3],
        "wall_s": wall, "tokens_delivered": delivered,
        "tok_per_s": n * tokens / wall if wall else None,
        "client_cpu_s": result.get("client_cpu"),
        **added_times(replies, convs, upstream),
        "gap_ms": [r["gap_max"] * 1000 for r in ok if r.get("gap_max") is not None],
        "reply_chars": mean([r["text_len"] for r in ok]),
        "reply_s": mean([r["done_at"] - r["send_at"] for r in ok]),
        "deltas_per_reply": mean([r["deltas"] for r in ok]),
        "frames_per_reply": mean([r["frames"] for r in ok]),
        "bytes_per_reply": mean([r["bytes"] for r in ok]),
        "wire_bytes_per_reply": mean([r["wire_bytes"] for r in ok]),
        "compressed": any(r.get("compressed") for r in replies),
        "delta_bytes_per_reply": mean([r["delta_bytes"] for r in ok]),
    }


def django_setup(env: dict) -> None:
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def measure_context_rebuild(count: int, repeats: int = 5) -> dict:
    """Build a `count`-message branch (long-ish turns) and time rebuilding its context."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone as dj_timezone

    from conversations.chat.context import build_context, load_branch
    from conversations.models import Conversation, Message

    owner = get_user_model().objects.order_by("pk").first()
    conversation = Conversation.objects.create(owner=owner, model=MODEL)
    start = dj_timezone.now()
    messages, parent_id = [], None
    for i in range(count):
        role = Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT
        words = 40 if role == Message.Role.USER else 250  # a question, then a 500-token-ish answer
        message = Message(conversation=conversation, parent_id=parent_id, role=role,
                          content=" ".join(f"word{j}" for j in range(words)),
                          created_at=start + timedelta(microseconds=i))
        messages.append(message)
        parent_id = message.id
    Message.objects.bulk_create(messages, batch_size=500)
    timings, queries, context, path = [], None, None, []
    for _ in range(repeats):
        fresh = Conversation.objects.get(pk=conversation.pk)
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            path = load_branch(fresh, parent_id)
            context = build_context(fresh, path, None)
            timings.append((time.perf_counter() - began) * 1000)
        queries = len(captured.captured_queries)
    connection.close()
    return {
        "messages": count, "branch": len(path), "sent": len(context.messages), "dropped": context.dropped,
        "estimated_tokens": context.estimated_tokens, "queries": queries,
        "ms_median": statistics.median(timings), "ms_min": min(timings), "repeats": repeats,
    }


def app_settings() -> dict:
    """The app's settings that shape the figures, as the app reads them (Django is set up by then)."""
    from django.conf import settings

    layer = settings.CHANNEL_LAYERS["default"]
    return {
        "channel layer": layer["BACKEND"].rsplit(".", 1)[-1],
        "channel capacity": layer.get("CONFIG", {}).get("capacity", "—"),
        "DELTA_COALESCE_MS": round(settings.DELTA_COALESCE_SECONDS * 1000, 3),
        "REPLY_FLUSH_SECONDS": settings.REPLY_FLUSH_SECONDS,
        "MODEL_TITLES": getattr(settings, "MODEL_TITLES", "—"),
        "DB_PREPARED_STATEMENTS": getattr(settings, "DB_PREPARED_STATEMENTS", "—"),
    }


def code_version() -> dict:
    """The commit measured, and the files that differed from it (the tree may be shared)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout if done.returncode == 0 else ""

    paths = [line[3:] for line in git("status", "--porcelain").splitlines()]  # "XY path"
    # A worktree's .venv is a link to the main checkout's (untracked, not code).
    changed = [path for path in paths if not path.startswith(("bench/", "docs/benchmarks.md", ".venv"))]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "?", "changed": changed}


def versions(bench: Bench) -> dict:
    postgres = bench.stats.execute("SHOW server_version").fetchone()[0]
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {"postgres": postgres, "redis": redis_version}


def run(plan: Plan) -> dict:
    bench = Bench(plan)
    results: dict = {"plan": asdict(plan), "machine": procs.machine(), "code": code_version(),
                     "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                     "command": " ".join(["python -m bench.relay", *sys.argv[1:]])}
    ticks = procs.machine_ticks()
    print("setting up", flush=True)
    try:
        bench.setup()
        results["settings"] = app_settings()
        results["machine"].update(versions(bench))
        results["wire"] = bench.wire_and_database()
        results["api"] = bench.api_connections()
        results["runs"] = bench.main_table()
        if not bench.over_budget("two processes"):
            results["watch"] = bench.two_processes()
        if not bench.over_budget("idle sockets"):
            results["idle"] = bench.idle_sockets()
        if plan.profile and not bench.over_budget("profile"):
            results["profiles"] = bench.profiles()
    finally:
        bench.teardown()
    results["context"] = bench.context_rebuild()
    results["machine"]["load"] = procs.machine_load(ticks, procs.machine_ticks())
    results["elapsed_s"] = time.monotonic() - bench.started
    results["notes"] = bench.notes
    return results


@contextmanager
def server_lock():
    """The lock file above covers one checkout; this covers every checkout and worktree
    that uses the same Postgres (they would all drop and recreate `chat_bench`)."""
    try:
        conn = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        yield  # setup() says what is wrong with Postgres
        return
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK]).fetchone()[0]:
            raise SystemExit("another bench.relay is using this Postgres server (from another checkout?): wait for it")
        yield
    finally:
        conn.close()  # ends the session, and with it the lock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1,10 only, one run, fewer sockets (a smoke run)")
    parser.add_argument("--runs", type=int, help="rounds of the main table (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="profile the app with py-spy during paced, then unpaced, N=100 replies (the default)")
    parser.add_argument("--docs", action="store_true", help="rewrite the generated part of docs/benchmarks.md")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: print the tables of an earlier run's results (with --docs, write them)")
    args = parser.parse_args(argv)
    if args.render:
        markdown = report.render(json.loads(args.render.read_text()))
        print(markdown)
        if args.docs:
            report.update_docs(DOCS, markdown)
            print(f"updated {DOCS.relative_to(ROOT)}")
        return
    plan = Plan.quick() if args.quick else Plan()
    if args.runs:
        plan.runs = max(1, min(args.runs, 10))
    plan.profile = args.profile

    RESULTS.mkdir(parents=True, exist_ok=True)
    lock = open(RESULTS / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            "another bench.relay is running here (it recreates the same database): wait for it"
        ) from None
    with server_lock():
        results = run(plan)
    markdown = report.render(results)
    print()
    print(markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "latest.md").write_text(markdown)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.docs:
        report.update_docs(DOCS, markdown)
        print(f"updated {DOCS.relative_to(ROOT)}")
    print(f"raw results: {(RESULTS / 'latest.json').relative_to(ROOT)} ({results['elapsed_s']:.0f}s)")


if __name__ == "__main__":
    main()
