"""Django's SQLite backend, with each process's closed connections kept for reuse.

Under ASGI every HTTP request runs in a thread of its own and every WebSocket message's
database work closes its connection after it (``CONN_MAX_AGE`` = 0, as Django advises for
ASGI), so each one opened a new SQLite connection: the file opened, the schema parsed, the
functions registered and the pragmas run again — a tenth of the server's CPU in a 400-pod
round. Here a closed connection goes back to a small per-process pool instead (rolled back
first if a transaction was left open) and the next ``connect`` takes it. PostgreSQL has
psycopg's pool for the same (``DATABASE_POOL_MAX_SIZE``).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from typing import Any

from django.db.backends.sqlite3 import base

# Idle connections kept per process and database file.
POOL_SIZE = 8

_pools: dict[tuple[str, int, int, int], queue.LifoQueue[sqlite3.Connection]] = {}
_pools_lock = threading.Lock()


def _pool_for(name: str) -> queue.LifoQueue[sqlite3.Connection] | None:
    """The pool of connections to the file ``name`` as it is now, in this process: a file
    deleted and made again (a test database) or a forked child never gets another's."""
    try:
        stat = os.stat(name)
    except OSError:
        return None
    key = (name, stat.st_dev, stat.st_ino, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = queue.LifoQueue(POOL_SIZE)
        return pool


class DatabaseWrapper(base.DatabaseWrapper):
    def _pool(self) -> queue.LifoQueue[sqlite3.Connection] | None:
        name = str(self.settings_dict["NAME"])
        # A test database is deleted and made again under the same name (and maybe inode).
        if self.is_in_memory_db() or name == str(self.settings_dict["TEST"].get("NAME")):
            return None
        return _pool_for(name)

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        pool = self._pool()
        if pool is not None:
            try:
                return pool.get_nowait()
            except queue.Empty:
                pass
        connection: sqlite3.Connection = super().get_new_connection(conn_params)
        return connection

    def _close(self) -> None:
        connection = self.connection
        if connection is None:
            return
        pool = self._pool()
        with self.wrap_database_errors:
            if pool is not None:
                if connection.in_transaction:
                    connection.rollback()
                try:
                    pool.put_nowait(connection)
                    return
                except queue.Full:
                    pass
            connection.close()
