"""Django's PostgreSQL backend whose pool checks a connection without a round trip.

Why: every piece of database work the app does (each `database_sync_to_async`
call, each request) takes a connection from psycopg's pool and gives it back.
Django's own check (`CONN_HEALTH_CHECKS` with the pool) sends an empty query
each time a connection is handed out: one more round trip per unit of work,
about a tenth of a streaming process's CPU in a profile.

A connection Postgres closed (a restart, `pg_terminate_backend`, an idle
timeout) or wrote to while it sat in the pool has something to read on its
socket: the server's goodbye, then the end of the stream. One with nothing to
read, open and idle by libpq's account, is handed out as it is; any other gets
the real check, and one that fails it is dropped by the pool, which takes the
next. Nothing is lost where the real check would not have helped either: a
server that vanished without a word (a cable pulled) leaves a quiet socket
that an empty query would have waited on too, and the first statement fails
as it would have (chat/threads.py and outages.py deal with that).

One dead connection usually means the server restarted and the other idle ones
are dead too. The pool would then find them one checkout at a time, sleeping
a doubling while between them (1 s, 2 s, ...), long enough to time a request
out; so the first dead one found has every idle connection checked at once.

Django builds the pool itself and passes `check=` from CONN_HEALTH_CHECKS, so
a `check` in OPTIONS["pool"] would be a second keyword (a TypeError): the
check is installed here instead, on the pool Django made.
"""

from __future__ import annotations

import logging
import select

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base
from psycopg import Connection
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


def quiet(conn: Connection) -> bool:
    """True if the connection is open and idle and the server has sent it nothing since."""
    if conn.closed or conn.broken:
        return False
    info = conn.info
    if info.status != ConnStatus.OK or info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        fd = conn.fileno()
    except Exception:  # no socket
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)  # readable, hung up or in error: not quiet
    readable, _, broken = select.select([fd], [], [fd], 0)
    return not readable and not broken


class QuietCheck:
    """The pool's `check`: no query for a quiet connection, the real check for any other."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def __call__(self, conn: Connection) -> None:
        if quiet(conn):
            return
        try:
            ConnectionPool.check_connection(conn)  # an empty query: raises if the connection is dead
        except Exception:
            log.info("a pooled database connection was dead; checking the other idle ones")
            try:
                self.pool.check()  # the pool's real check of each idle connection, replacing the dead
            except Exception:  # the server is still down: the pool reconnects by itself
                log.info("checking the idle connections failed", exc_info=True)
            raise


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and not isinstance(getattr(pool, "_check", None), QuietCheck):
            if not hasattr(pool, "_check"):  # psycopg_pool changed: fail loudly, not run unchecked
                raise ImproperlyConfigured("psycopg_pool's ConnectionPool has no _check: update chatsite/postgres")
            pool._check = QuietCheck(pool)
        return pool
