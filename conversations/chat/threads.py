"""Where async code runs database work: a pool of worker threads, with Django's connection pool.

Each call takes a connection from psycopg's pool (settings.py) for its work
and gives it back after. When a call finds the database gone (Postgres
restarted, connections terminated), the pool's idle connections are likely
dead too: the pool is checked at once, so the next call gets a fresh
connection rather than each retry meeting another dead one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import wraps

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

log = logging.getLogger(__name__)

# A lost or refused connection. Any other database error is a bug, not an outage.
DATABASE_OUTAGE_ERRORS = (OperationalError, InterfaceError)

# One pool for the process: its size bounds the database work sockets and replies do at once.
_db_threads = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="db")


def check_pool() -> None:
    """Test the pool's idle connections and replace the dead ones (blocking: call from a thread)."""
    pool = getattr(connections["default"], "pool", None)
    if pool is None:
        return
    try:
        pool.check()
    except Exception as error:  # the database is still down: the pool reconnects by itself later
        log.info("checking the database connection pool failed (%s)", type(error).__name__)


def in_thread(func):
    """`func`, made awaitable: it runs in a worker thread, with a pooled connection.

    Not the single thread-sensitive thread: a burst of sends, flushes and
    snapshots would queue behind each other there while Postgres sits idle.
    """

    @wraps(func)
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DATABASE_OUTAGE_ERRORS:
            connections["default"].close()  # give back the broken connection before the check
            check_pool()
            raise

    return database_sync_to_async(run, thread_sensitive=False, executor=_db_threads)
