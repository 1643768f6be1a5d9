"""Shared setup for the compensation and rollback command-line tests (issue 10 item 5): a user
module whose ``insert`` writes a record into a real SQLite table and whose ``delete`` undoes it,
as ``--fn``/``--compensate``/``batchguard rollback --fn`` load it."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap
from pathlib import Path


def shop(tmp_path: Path, *, fatal_at: int | None = None) -> tuple[Path, str]:
    """Write ``shop.py`` into ``tmp_path``; returns its table's database and the module's path.

    ``insert(record)`` inserts ``{"id", "name"}`` (a None name breaks the NOT NULL constraint)
    and returns the row id, raising MemoryError (fatal) for the record whose id is ``fatal_at``;
    ``delete(record, rowid)`` deletes that row."""
    db = tmp_path / "shop.db"
    module = tmp_path / "shop.py"
    module.write_text(textwrap.dedent(f"""
        import contextlib, sqlite3

        def _db():
            db = sqlite3.connect({str(db)!r}, isolation_level=None)
            db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            return contextlib.closing(db)

        def insert(record):
            if record["id"] == {fatal_at!r}:
                raise MemoryError("out of memory")
            with _db() as db:
                return db.execute("INSERT INTO items (id, name) VALUES (?, ?)",
                                  (record["id"], record["name"])).lastrowid

        def delete(record, rowid):
            with _db() as db:
                db.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
    """))
    return db, str(module)


def item_ids(db: Path) -> list[int]:
    """The ids in the shop's table, in order."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
