"""The embedded default's SQLite backend reuses a process's closed connections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.utils import ConnectionHandler


@pytest.fixture(autouse=True)
def _unblocked(django_db_blocker: Any) -> Iterator[None]:
    """These tests open their own databases, never the test database."""
    with django_db_blocker.unblock():
        yield


def _handler(path: Path) -> ConnectionHandler:
    return ConnectionHandler({"default": {"ENGINE": "dataspace.sqlite_pool", "NAME": str(path)}})


def test_a_closed_connection_is_reused_with_its_transaction_rolled_back(tmp_path: Path) -> None:
    handler = _handler(tmp_path / "db.sqlite3")
    wrapper = handler["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x integer)")
    raw = wrapper.connection
    wrapper.close()
    assert wrapper.connection is None
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
    assert wrapper.connection is raw  # taken from the pool, not opened again

    # Closed inside a transaction (a request that failed mid-way): nothing of it stays.
    wrapper.set_autocommit(False)
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (1)")
    assert raw.in_transaction
    wrapper.close()
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (0,)
    assert wrapper.connection is raw
    wrapper.close()


def test_another_file_and_a_test_database_get_connections_of_their_own(tmp_path: Path) -> None:
    first = _handler(tmp_path / "a.sqlite3")["default"]
    first.ensure_connection()
    raw = first.connection
    first.close()
    other = _handler(tmp_path / "b.sqlite3")["default"]
    other.ensure_connection()
    assert other.connection is not raw
    other.close()

    # A test database is made again under its name: its connections are never kept.
    name = tmp_path / "test.sqlite3"
    test_db = ConnectionHandler(
        {
            "default": {
                "ENGINE": "dataspace.sqlite_pool",
                "NAME": str(name),
                "TEST": {"NAME": str(name)},
            }
        }
    )["default"]
    test_db.ensure_connection()
    raw = test_db.connection
    test_db.close()
    test_db.ensure_connection()
    assert test_db.connection is not raw
    test_db.close()
