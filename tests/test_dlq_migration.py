"""Queues written before entries had a status are upgraded in place (issue 9 item 4).

Each test builds a queue in the format the previous release wrote -- its SQLite and PostgreSQL
CREATE TABLE statements, its Redis keys, its JSONL lines, copied literally -- then opens it
with this release: every old entry reads as open, and triage (resolve, status filters)
works on it. Two processes opening the same old SQLite file at once both succeed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchguard.dlq import JsonlDLQ, PostgresDLQ, RedisDLQ, SqliteDLQ

# The previous release's SQLite schema (dlq/sqlite.py before the status column), verbatim.
OLD_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        job_id TEXT,
        stage TEXT NOT NULL,
        error_class TEXT NOT NULL,
        error_type TEXT NOT NULL,
        entry TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dead_letters_run_id ON dead_letters (run_id)",
    "CREATE INDEX IF NOT EXISTS dead_letters_job_id ON dead_letters (job_id) WHERE job_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS dead_letters_error_type ON dead_letters (error_type)",
)
OLD_SQLITE_INSERT = """
    INSERT INTO dead_letters (id, run_id, job_id, stage, error_class, error_type, entry)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""


def old_entry(i: int, run_id: str = "old-run") -> str:
    """An entry as the previous release stored it: no status, history nor http_status."""
    error_type = "TimeoutError" if i % 2 else "ValueError"
    return json.dumps({
        "id": f"{run_id}:process:{i}", "run_id": run_id, "job_id": None, "record_id": i,
        "record_index": i, "batch_index": i // 10, "stage": "process", "payload": {"id": i},
        "payload_encoding": "json", "error_class": "permanent", "error_type": error_type,
        "error_message": f"bad record {i}", "traceback": None,
        "attempts": [{"attempt": 1, "at": "2025-01-02T03:04:05.000+00:00", "error_type": error_type,
                      "error_message": f"bad record {i}", "delay_s": None}],
        "first_failed_at": "2025-01-02T03:04:05.000+00:00",
        "last_failed_at": "2025-01-02T03:04:05.000+00:00",
    }, separators=(",", ":"))


def old_row(i: int) -> tuple[Any, ...]:
    data = json.loads(old_entry(i))
    return (data["id"], data["run_id"], None, "process", "permanent", data["error_type"], old_entry(i))


def make_old_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in OLD_SQLITE_SCHEMA:
            conn.execute(statement)
        conn.executemany(OLD_SQLITE_INSERT, [old_row(i) for i in range(n)])
    conn.close()


def check_upgraded(queue: Any, n: int) -> None:
    """Every old entry reads as open, and triage works on them."""
    assert queue.count() == n and queue.count(status="all") == n
    assert all(e.status == "open" and e.history == () for e in queue.list(status="all"))
    first, second = (e.id for e in queue.list(limit=2))
    assert queue.resolve([first], "migrated queue, skipped") == 1
    assert queue.count() == n - 1 and queue.count(status="resolved") == 1
    assert queue.count(status="open", error_type="TimeoutError") == n // 2 - (1 if first.endswith("1") else 0)
    assert [e.id for e in queue.list(status="resolved")] == [first]
    assert queue.list(limit=1)[0].id == second


def sqlite_columns(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")]
    finally:
        conn.close()


def test_an_old_sqlite_queue_gains_the_status_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_sqlite(path, 10)
    assert "status" not in sqlite_columns(path)
    with SqliteDLQ(path) as queue:
        check_upgraded(queue, 10)
    assert sqlite_columns(path).count("status") == 1
    with SqliteDLQ(path) as queue:  # opening again changes nothing
        assert queue.count(status="resolved") == 1 and queue.count() == 9
    assert sqlite_columns(path).count("status") == 1


OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from batchguard.dlq import SqliteDLQ
    path, go, mine = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    while not go.exists():
        time.sleep(0.001)
    with SqliteDLQ(path) as queue:
        queue.resolve([mine], "resolved by " + mine)
        print(queue.count(status="all"))
""")


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_an_old_sqlite_queue_at_once_all_migrate_it(tmp_path: Path, round_: int) -> None:
    path, go = tmp_path / "old.db", tmp_path / "go"
    make_old_sqlite(path, 8)
    ids = [json.loads(old_entry(i))["id"] for i in range(4)]
    children = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(go), entry_id],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for entry_id in ids]
    time.sleep(0.5)  # every child is importing, then waiting for the signal
    go.touch()
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["8"] * 4
    assert sqlite_columns(path).count("status") == 1
    with SqliteDLQ(path) as queue:
        assert sorted(e.id for e in queue.list(status="resolved")) == sorted(ids)
        assert queue.count() == 4


def test_an_old_jsonl_queue_reads_as_open_and_its_changes_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    lines = [old_entry(i) for i in range(6)] + [json.dumps({"$remove": [json.loads(old_entry(5))["id"]]})]
    path.write_text("".join(line + "\n" for line in lines))
    with JsonlDLQ(path) as queue:
        check_upgraded(queue, 5)
    written = path.read_text().splitlines()
    assert written[:7] == lines  # the old lines are left as they were: the change is appended
    assert json.loads(written[7])["status"] == "resolved"
    with JsonlDLQ(path) as queue:
        assert queue.count(status="resolved") == 1 and queue.count() == 4


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[tuple[str, str]]:
    import redis

    prefix = f"bgmigrate:{uuid.uuid4().hex[:12]}"
    yield redis_url, prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.mark.redis
def test_an_old_redis_queue_reads_as_open_without_a_migration(redis_prefix: tuple[str, str]) -> None:
    import redis

    url, prefix = redis_prefix
    # The previous release's keys: the entries hash, the order zset, the counter, the index sets.
    with redis.Redis.from_url(url) as client:
        for i in range(8):
            data = json.loads(old_entry(i))
            client.hset(f"{prefix}:entries", data["id"], old_entry(i))
            client.zadd(f"{prefix}:order", {data["id"]: i + 1})
            for field in ("run_id", "stage", "error_class", "error_type"):
                client.sadd(f"{prefix}:idx:{field}:{data[field]}", data["id"])
        client.set(f"{prefix}:seq", 8)
    with RedisDLQ(url, key_prefix=prefix) as queue:
        check_upgraded(queue, 8)
    with redis.Redis.from_url(url, decode_responses=True) as client:
        assert client.smembers(f"{prefix}:idx:status:resolved") == {json.loads(old_entry(0))["id"]}
        assert not client.exists(f"{prefix}:idx:status:open")  # open is the absence from closed sets


OLD_POSTGRES_SCHEMA = (
    "CREATE TABLE {t} (seq bigserial NOT NULL, id text PRIMARY KEY, run_id text NOT NULL, job_id text, "
    "stage text NOT NULL, error_class text NOT NULL, error_type text NOT NULL, entry jsonb NOT NULL)",
    "CREATE INDEX {t}_seq_idx ON {t} (seq)",
    *(f"CREATE INDEX {{t}}_{field}_idx ON {{t}} ({field}, seq)"
      for field in ("run_id", "job_id", "stage", "error_class", "error_type")),
)


@pytest.fixture
def old_postgres_table(postgres_url: str) -> Iterator[tuple[str, str]]:
    import psycopg

    table = f"bg_old_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in OLD_POSTGRES_SCHEMA:
            conn.execute(statement.format(t=table))
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} (id, run_id, job_id, stage, error_class, error_type, entry) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)", [old_row(i) for i in range(10)])
    yield postgres_url, table
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def postgres_columns(url: str, table: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                            (table,)).fetchall()
    return [name for (name,) in rows]


@pytest.mark.postgres
def test_an_old_postgres_queue_gains_the_status_column_in_place(old_postgres_table: tuple[str, str]) -> None:
    url, table = old_postgres_table
    assert "status" not in postgres_columns(url, table)
    with PostgresDLQ(url, table=table) as queue:
        check_upgraded(queue, 10)
    with PostgresDLQ(url, table=table) as queue:
        assert queue.count(status="resolved") == 1 and queue.count() == 9
    assert postgres_columns(url, table).count("status") == 1


@pytest.mark.postgres
def test_connections_opening_an_old_postgres_queue_at_once_all_migrate_it(
        old_postgres_table: tuple[str, str]) -> None:
    url, table = old_postgres_table
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            start.wait()
            PostgresDLQ(url, table=table).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert postgres_columns(url, table).count("status") == 1
    with PostgresDLQ(url, table=table) as queue:
        assert queue.count() == 10
