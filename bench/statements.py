"""What a send's and a reply end's database work cost, with prepared statements off and on.

    .venv/bin/python -m bench.statements [--n 300] [--rounds 2]

The worker-thread work of a turn, without the websocket, the event loop or the upstream: the
session check and `turns.ask` (as the `send` frame runs them, in one thread hop), then
`replies.finish_reply` for each reply, one after another on one thread. Per call: that thread's
CPU (its own, not the process's), its wall time, and the CPU of the benchmark database's
Postgres backends and server processes over the same calls (/proc). Each round runs a child
process per setting of DB_PREPARED_STATEMENTS, in an order that alternates (off, on, then on,
off), so drift on a shared machine falls on both. Medians over the rounds, and on ÷ off.
About a minute on 2 cores; needs Postgres (BENCH_PG_URL), not Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench import procs
from bench.stack import PG_ADMIN_URL, ROOT

DATABASE = "chat_bench_statements"
WARM_UP = 10  # calls before measuring: the pool fills, and statements reach the prepare threshold


def child(n: int) -> dict:
    """Runs in a process of its own, Django set up with the environment the parent chose."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection

    from conversations.accounts.sessions import signed_in_user_id
    from conversations.chat import broadcast, replies, turns
    from conversations.models import Conversation

    members = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"m-{uuid.uuid4().hex[:12]}") for _ in range(n + WARM_UP)])
    sessions = []
    for member in members:
        session = SessionStore()
        session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(member.pk), "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = member.get_session_auth_hash()
        session.create()
        sessions.append(session.session_key)
    conversations = Conversation.objects.bulk_create([Conversation(owner=m, model="fake-model") for m in members])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "OR backend_type <> 'client backend'")
        postgres = [pid for (pid,) in cursor.fetchall()]

    # As the consumer's turn runs it: the session check, then the turn, in one worker-thread call.
    send = broadcast._capturing(lambda member, conversation, key: (
        signed_in_user_id(key), turns.ask(member, conversation.id, "a question of a few words", None, uuid.uuid4())))
    end = broadcast._capturing(replies.finish_reply)

    def measure(calls) -> dict:
        first = calls[:WARM_UP]
        for call in first:
            call()
        pg_before, cpu_before, wall_before = procs.cpu_of(postgres), time.thread_time(), time.perf_counter()
        for call in calls[WARM_UP:]:
            call()
        count = len(calls) - WARM_UP
        return {"cpu_ms": 1000 * (time.thread_time() - cpu_before) / count,
                "wall_ms": 1000 * (time.perf_counter() - wall_before) / count,
                "postgres_ms": 1000 * procs.cpu_since(pg_before, procs.cpu_of(postgres)) / count}

    started = []
    sends = [lambda m=m, c=c, k=k: started.append(send(m, c, k)[0][1])
             for m, c, k in zip(members, conversations, sessions)]
    result = {"send": measure(sends)}
    ends = [lambda t=t: end(t.reply.id, t.reply.run_id, text="an answer " * 100, status="complete",
                            usage={"prompt_tokens": 12, "completion_tokens": 200, "total_tokens": 212})
            for t in started]
    result["end"] = measure(ends)
    return result


def run_child(prepared: bool, n: int, db_url: str) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DATABASE_URL": db_url,
           "SECRET_KEY": "bench-statements-secret-key", "DEBUG": "false", "LOG_LEVEL": "WARNING",
           "DEFAULT_MODEL": "fake-model", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "unused",
           "DB_PREPARED_STATEMENTS": "true" if prepared else "false", "REDIS_URL": ""}
    done = subprocess.run([sys.executable, "-m", "bench.statements", "--child", str(n)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fresh_database() -> str:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    db_url = urlsplit(PG_ADMIN_URL)._replace(path=f"/{DATABASE}").geturl()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": db_url, "SECRET_KEY": "bench-statements-secret-key",
                        "DEBUG": "false", "REDIS_URL": ""})
    return db_url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sends (and reply ends) measured per process")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each runs both settings, order alternating")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return
    db_url = fresh_database()
    results: dict[bool, list[dict]] = {False: [], True: []}
    for round_ in range(max(1, args.rounds)):
        for prepared in ((False, True) if round_ % 2 == 0 else (True, False)):
            results[prepared].append(run_child(prepared, args.n, db_url))
            print(f"round {round_ + 1}, prepared statements {'on' if prepared else 'off'}: "
                  f"{json.dumps(results[prepared][-1])}", flush=True)
    print(f"\n{args.n} calls per process, {args.rounds} rounds, medians; ms per call\n")
    print("| call | figure | off | on | on ÷ off |")
    print("|---|---|---|---|---|")
    for call in ("send", "end"):
        for figure, label in (("cpu_ms", "the app's thread CPU"), ("postgres_ms", "Postgres CPU"),
                              ("wall_ms", "wall time")):
            off, on = (statistics.median(r[call][figure] for r in results[p]) for p in (False, True))
            print(f"| {call} | {label} | {off:.2f} | {on:.2f} | {on / off:.2f} |")


if __name__ == "__main__":
    main()
