"""The database pool hands out a healthy connection without a query, and never a dead one.

Counted on the server: `pg_stat_activity` shows, for each connection, when its last
statement began (an empty query counts), so a check that talks to the server cannot hide.
"""

from __future__ import annotations

import asyncio
import select
import threading

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, connections

from chatsite.postgres.base import QuietCheck, quiet
from conversations.chat import threads
from conversations.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


class Server:
    """A connection of our own to the server (another database), to watch and cut the app's connections."""

    def __init__(self):
        db = connection.settings_dict
        self.name = db["NAME"]
        self.conn = psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                                    password=db["PASSWORD"] or None, dbname="postgres", autocommit=True)

    def connect_to_test_database(self) -> psycopg.Connection:
        db = connection.settings_dict
        return psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                               password=db["PASSWORD"] or None, dbname=self.name, autocommit=True)

    def activity(self) -> dict[int, tuple]:
        """When each connection to the test database last began a statement."""
        rows = self.conn.execute(
            "SELECT pid, query_start, query FROM pg_stat_activity WHERE datname = %s", [self.name]).fetchall()
        return {pid: (started, query) for pid, started, query in rows}

    def terminate_all(self) -> list[int]:
        """End every connection to the test database, waiting until each is gone."""
        return [pid for pid, ended in self.conn.execute(
            "SELECT pid, pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s",
            [self.name]).fetchall() if ended]


@pytest.fixture
def server():
    watcher = Server()
    connection.close()
    connection.close_pool()  # a pool of this test's own, opened on first use
    yield watcher
    watcher.conn.close()
    connection.close()
    connection.close_pool()
    # The thread that database_sync_to_async uses may hold a connection the test terminated:
    # have it returned (and so checked) before its next use, as a request's end would.
    asyncio.run(database_sync_to_async(close_old_connections)())
    close_worker_connections()  # and so may the worker threads


def close_worker_connections() -> None:
    """Have every database worker thread give back the connection it holds, if any.

    Under the test framework a worker thread may still hold one after its call; a
    connection this test terminated would then fail that thread's next call.
    """
    workers = settings.DB_THREADS
    barrier = threading.Barrier(workers)

    def close() -> None:
        try:
            barrier.wait(timeout=10)  # one job per thread: each waits until all are taken
        except threading.BrokenBarrierError:
            pass
        for wrapper in connections.all(initialized_only=True):
            try:
                wrapper.close()
            except Exception:
                wrapper.connection = None  # its pool is gone: forget it

    for job in [threads._db_threads.submit(close) for _ in range(workers)]:
        job.result()


def idle_pool(size: int):
    """The pool, opened, holding `size` idle connections that have each run a statement."""
    pool = connection.pool
    pool.open()
    taken = [pool.getconn() for _ in range(size)]
    for conn in taken:
        conn.execute("SELECT 1")
        pool.putconn(conn)
    pool.wait()
    return pool


def test_the_pool_checks_connections_without_a_query(server):
    assert isinstance(idle_pool(3)._check, QuietCheck)


def test_a_healthy_connection_is_handed_out_without_any_query(server):
    idle_pool(3)
    before = server.activity()
    connection.ensure_connection()  # a checkout, as every unit of work does
    pid = connection.connection.info.backend_pid
    after = server.activity()
    assert after[pid] == before[pid], "a statement ran on the connection as it was handed out"
    # Nor on any other idle one (a connection the pool is still opening in the background
    # runs its own set-up statements: it was never handed out).
    ready = [p for p, (started, _query) in before.items() if started is not None]
    assert {p: after.get(p) for p in ready} == {p: before[p] for p in ready}

    # The probe sees what a round-trip check sends: an empty query.
    connection.connection.execute("")
    assert server.activity()[pid] != before[pid]


def test_connections_the_server_killed_are_replaced_on_the_next_call(alice, server):
    # Four dead: the pool alone would skip the first at once and sleep a second before the
    # next, past the suite's DB_POOL_TIMEOUT of 1 s.
    pool = idle_pool(4)
    killed = server.terminate_all()
    assert len(killed) >= 4

    conversation = alice.conversation(title="after a restart")  # the next ORM call just works
    assert connection.connection.info.backend_pid not in killed
    assert Conversation.objects.get(pk=conversation.pk).title == "after a restart"
    connection.close()
    assert pool.get_stats()["connections_lost"] >= 1


def test_a_connection_the_server_wrote_to_gets_the_real_check_and_is_kept(server):
    check = QuietCheck(idle_pool(1))
    with server.connect_to_test_database() as listening, server.connect_to_test_database() as other:
        listening.execute("LISTEN wakeup")
        pid = listening.info.backend_pid
        check(listening)
        before = server.activity()[pid]
        check(listening)
        assert server.activity()[pid] == before  # quiet: no query

        other.execute("NOTIFY wakeup")
        assert select.select([listening.fileno()], [], [], 30)[0], "the notification never arrived"
        check(listening)
        assert server.activity()[pid] != before, "no query checked the connection the server wrote to"
        assert listening.execute("SELECT 1").fetchone() == (1,)


def test_a_closed_connection_is_not_quiet(server):
    conn = server.connect_to_test_database()
    assert quiet(conn)
    conn.close()
    assert not quiet(conn)


def test_a_statement_run_again_and_again_is_prepared_on_the_server(alice, server):
    """Server-side binding and prepared statements (settings.DB_PREPARED_STATEMENTS): a send's
    statements are the same each time, so Postgres parses and plans each once per connection."""
    conversation = alice.conversation(title="asked often")
    connection.close()  # a connection from the pool, as every unit of work has
    for _ in range(settings.DB_PREPARE_THRESHOLD + 1):
        assert Conversation.objects.get(pk=conversation.pk).title == "asked often"
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    # The value travelled apart from the text ($1), not quoted into it.
    assert any('FROM "conversations_conversation"' in text and "$1" in text for text in prepared), prepared
    assert not any(str(conversation.pk) in text for text in prepared)
