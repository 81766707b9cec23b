"""Where async code runs database work: a pool of worker threads, one connection each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings

# One pool for the process: its size bounds the database connections that
# sockets and replies hold at once (each thread takes one from Django's pool).
_db_threads = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="db")


def in_thread(func):
    """`func`, made awaitable: it runs in a worker thread with its own connection.

    Not the single thread-sensitive thread: a burst of sends, flushes and
    snapshots would queue behind each other there while Postgres sits idle.
    """
    return database_sync_to_async(func, thread_sensitive=False, executor=_db_threads)
