"""The layer under the SQL stores: one URL rule for the DLQs and the job stores, one named
protocol for a DLQ that joins a job store's transaction, and the same closed/failed errors
whichever store holds the database."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from batchguard.dlq import JsonlDLQ, MemoryDLQ, PostgresDLQ, SqliteDLQ, TransactionalDLQ, open_dlq
from batchguard.errors import ConfigError, DLQError, JobError
from batchguard.jobs import PostgresJobStore, SqliteJobStore, open_job_store


@pytest.fixture
def name() -> str:
    return f"db_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(("path", "problem"), [
    ("host/x.db", "has a host"),
    ("/", "names no file"),
    ("/x.db?mode=ro", "takes no query parameters"),
    ("/x%00.db", "NUL character"),
])
def test_dlq_and_job_store_urls_follow_one_sqlite_path_rule(path: str, problem: str) -> None:
    url = f"sqlite://{path}"
    with pytest.raises(ConfigError, match=problem) as dlq_error:
        open_dlq(url)
    with pytest.raises(ConfigError, match=problem) as store_error:
        open_job_store(url)
    assert str(dlq_error.value).removeprefix("dlq URL") == str(store_error.value).removeprefix("job store URL")


def test_a_sqlite_url_keeps_every_character_of_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_dlq("sqlite:///odd#name%20here.db") as dlq:  # type: ignore[attr-defined]
        assert dlq.path == Path("odd#name here.db")
    with open_job_store("sqlite:///odd#name%20here.db") as store:  # type: ignore[attr-defined]
        assert store.path == Path("odd#name here.db")


def test_only_the_sql_queues_can_join_a_transaction(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as sqlite_dlq, JsonlDLQ(tmp_path / "dlq.jsonl") as jsonl_dlq:
        assert isinstance(sqlite_dlq, TransactionalDLQ)
        assert not isinstance(jsonl_dlq, TransactionalDLQ)
    assert not isinstance(MemoryDLQ(), TransactionalDLQ)


def test_a_sqlite_store_joins_a_dlq_in_its_own_file_only(tmp_path: Path) -> None:
    os.symlink(tmp_path / "jobs.db", tmp_path / "link.db")
    with SqliteJobStore(tmp_path / "jobs.db") as store, \
            SqliteDLQ(tmp_path / "link.db") as same, SqliteDLQ(tmp_path / "other.db") as other:
        assert store._joined(same) is same  # the same file through a symlink
        assert store._joined(other) is None


@pytest.mark.postgres
def test_a_postgres_store_joins_a_dlq_on_its_own_database(postgres_url: str, tmp_path: Path) -> None:
    with PostgresJobStore(postgres_url) as store, PostgresDLQ(postgres_url) as same, \
            SqliteDLQ(tmp_path / "dlq.db") as elsewhere:
        assert isinstance(same, TransactionalDLQ)
        assert store._joined(same) is same
        assert store._joined(elsewhere) is None


def test_closed_stores_say_which_store_is_closed(tmp_path: Path) -> None:
    dlq = SqliteDLQ(tmp_path / "dlq.db")
    dlq.close()
    dlq.close()  # twice is fine
    with pytest.raises(DLQError, match=r"SQLite dead-letter queue .*dlq\.db is closed"):
        dlq.count()
    store = SqliteJobStore(tmp_path / "jobs.db")
    store.close()
    with pytest.raises(JobError, match=r"SQLite job store .*jobs\.db is closed"):
        store.list()


@pytest.mark.postgres
def test_postgres_stores_reconnect_after_the_server_drops_them(postgres_url: str, name: str) -> None:
    with PostgresDLQ(postgres_url, table=f"t_{name}") as dlq, \
            PostgresJobStore(postgres_url, table_prefix=f"p_{name}_") as store:
        pids = [dlq.connection.info.backend_pid, store._db.connection.info.backend_pid]
        with PostgresDLQ(postgres_url, table=f"t_{name}") as admin, admin.transaction() as cur:
            for pid in pids:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The first use after the drop may fail (the driver learns of it then); the next reconnects.
        for use in (lambda: dlq.count(), lambda: store.list()):
            try:
                use()
            except (DLQError, JobError):
                pass
            use()
        assert dlq.connection.info.backend_pid not in pids
        assert store._db.connection.info.backend_pid not in pids
