"""The pod's local store: a SQLite file in the pod's home. Records never leave the device."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    category TEXT NOT NULL,
    data TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_category ON records (category);
CREATE TABLE IF NOT EXISTS categories (
    slug TEXT PRIMARY KEY,
    fields TEXT NOT NULL
);
"""


class LocalStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_records(
        self, category: str, fields: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
    ) -> int:
        """Store validated rows for a category, all or nothing."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO categories (slug, fields) VALUES (?, ?) "
                "ON CONFLICT (slug) DO UPDATE SET fields = excluded.fields",
                (category, json.dumps(list(fields))),
            )
            db.executemany(
                "INSERT INTO records (category, data, imported_at) VALUES (?, ?, ?)",
                [(category, json.dumps(row, sort_keys=True), now) for row in rows],
            )
        return len(rows)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT category, COUNT(*) FROM records GROUP BY category ORDER BY category"
        ).fetchall()
        return {str(category): int(count) for category, count in rows}

    def count(self, category: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM records WHERE category = ?", (category,))
        return int(row.fetchone()[0])

    def records(self, category: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data FROM records WHERE category = ? ORDER BY id", (category,)
        ).fetchall()
        return [json.loads(data) for (data,) in rows]

    def fields(self, category: str) -> list[dict[str, Any]] | None:
        """The catalog's fields for ``category`` as its records were last imported under."""
        row = self._db.execute("SELECT fields FROM categories WHERE slug = ?", (category,))
        found = row.fetchone()
        return None if found is None else list(json.loads(found[0]))

    def clear(self, category: str) -> int:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM records WHERE category = ?", (category,))
        return int(cursor.rowcount)
