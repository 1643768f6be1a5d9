"""No secret from any URL or DSN form reaches a repr, a log, a report, a stored config or an error
message (issue 7, defect 20).

The forms: URL userinfo (``postgresql://user:pw@host``), URL query (``?password=``,
``?sslpassword=``) and the libpq ``key=value`` connection string (``host=... password=...``),
against a real PostgreSQL server (trust authentication: the password is accepted and ignored).
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from batchguard import PostgresJobStore, RetryPolicy, job_status, run_batches
from batchguard._urls import redact
from batchguard.dlq import PostgresDLQ, open_dlq
from batchguard.errors import BatchguardError

SECRET = "Zq8sEcReT"
ONCE = RetryPolicy(max_attempts=1)


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://app:{SECRET}@db:5432/jobs", "postgresql://app:***@db:5432/jobs"),
    (f"postgresql://app@db/jobs?password={SECRET}&application_name=x",
     "postgresql://app@db/jobs?password=***&application_name=x"),
    (f"postgresql://app@db/jobs?sslpassword={SECRET}", "postgresql://app@db/jobs?sslpassword=***"),
    (f"redis://:{SECRET}@cache:6379/0?token={SECRET}", "redis://:***@cache:6379/0?token=***"),
    (f"host=db port=5432 password={SECRET} dbname=jobs", "host=db port=5432 password=*** dbname=jobs"),
    (f"host=db password = '{SECRET} with \\' quote' dbname=jobs", "host=db password = *** dbname=jobs"),
    (f"dbname=jobs sslpassword={SECRET}", "dbname=jobs sslpassword=***"),
    (f"user=app password='{SECRET}", "user=app password=***"),  # unterminated quote
    ("sqlite:///dead.db", "sqlite:///dead.db"),
    ("host=db dbname=jobs", "host=db dbname=jobs"),
])
def test_redact_hides_the_secret_of_every_form(url: str, shown: str) -> None:
    assert redact(url) == shown


def _forms(postgres_url: str) -> dict[str, str]:
    parts = urlsplit(postgres_url)
    host, port, db = parts.hostname, parts.port or 5432, parts.path.lstrip("/")
    return {
        "userinfo": f"postgresql://postgres:{SECRET}@{host}:{port}/{db}",
        "query": f"postgresql://postgres@{host}:{port}/{db}?password={SECRET}",
        "sslpassword": f"postgresql://postgres@{host}:{port}/{db}?sslpassword={SECRET}&sslmode=disable",
        "dsn": f"host={host} port={port} dbname={db} user=postgres password={SECRET}",
        "quoted dsn": f"host={host} port={port} dbname={db} user=postgres password='{SECRET} x'",
    }


FORMS = ["userinfo", "query", "sslpassword", "dsn", "quoted dsn"]


def fail_odd(n: int) -> int:
    if n % 2:
        raise ValueError(f"odd {n}")
    return n


@pytest.fixture
def cleanup(postgres_url: str) -> Iterator[list[str]]:
    tables: list[str] = []
    yield tables
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
@pytest.mark.parametrize("form", FORMS)
def test_a_postgres_dlq_never_shows_its_password(form: str, postgres_url: str, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture,
                                                  cleanup: list[str]) -> None:
    url = _forms(postgres_url)[form]
    table = f"bg_secret_{uuid.uuid4().hex[:10]}"
    cleanup.append(table)
    store = tmp_path / "jobs.db"
    with caplog.at_level(logging.DEBUG, logger="batchguard"), PostgresDLQ(url, table=table) as dlq:
        shown = [repr(dlq), dlq.url, str(dlq)]
        report = run_batches(range(20), fail_odd, dlq=dlq, job="secret", store=f"sqlite:///{store}",
                             retry=ONCE, batch_size=5)
        shown += [report.summary(), str(report.to_dict()), str(job_status("secret", store=f"sqlite:///{store}"))]
    assert report.failure_count == 10
    shown.append(caplog.text)
    for text in shown:
        assert SECRET not in text
    # The job's stored configuration names the DLQ, without its password.
    with sqlite3.connect(store) as conn:
        (config,) = conn.execute("SELECT config FROM jobs WHERE name = 'secret'").fetchone()
    assert "PostgresDLQ(" in config and SECRET not in config
    assert SECRET.encode() not in store.read_bytes() + Path(f"{store}-wal").read_bytes()


@pytest.mark.postgres
@pytest.mark.parametrize("form", FORMS)
def test_a_postgres_job_store_never_shows_or_stores_its_password(form: str, postgres_url: str,
                                                                  cleanup: list[str]) -> None:
    import psycopg

    url = _forms(postgres_url)[form]
    prefix = f"bgs{uuid.uuid4().hex[:8]}_"
    cleanup.extend([f"{prefix}jobs", f"{prefix}job_batches"])
    with PostgresJobStore(url, table_prefix=prefix) as store:
        assert SECRET not in repr(store) + store.url
        report = run_batches(range(20), fail_odd, job="secret", store=store, retry=ONCE, batch_size=5)
        assert report.failure_count == 10 and SECRET not in report.summary()
    with psycopg.connect(postgres_url) as conn:
        (config,) = conn.execute(f"SELECT config FROM {prefix}jobs WHERE name = 'secret'").fetchone()
        conn.execute("DELETE FROM batchguard_dead_letters WHERE job_id = 'secret' AND "
                     "entry->>'run_id' = %s", (report.run_id,))
    assert SECRET not in str(config)


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))  # the message and every chained cause


@pytest.mark.parametrize("form", FORMS)
def test_errors_about_an_unreachable_server_never_show_the_password(form: str) -> None:
    url = _forms("postgresql://postgres@127.0.0.1:1/nowhere")[form]
    with pytest.raises(BatchguardError) as info:
        PostgresDLQ(url, connect_timeout=1)
    assert "127.0.0.1" in str(info.value) and SECRET not in _everything_said(info.value)
    with pytest.raises(BatchguardError) as store_info:
        PostgresJobStore(url, connect_timeout=1)
    assert SECRET not in _everything_said(store_info.value)


@pytest.mark.parametrize("bad", [f"host=db password={SECRET} dangling", f"host=db password='{SECRET}",
                                 f"host=db password={SECRET} port=notanumber"])
def test_a_malformed_dsn_is_refused_without_showing_the_password(bad: str) -> None:
    for opener in (PostgresDLQ, PostgresJobStore):
        with pytest.raises(Exception) as info:  # noqa: PT011 - the message is what is checked
            opener(bad, connect_timeout=1)
        assert SECRET not in _everything_said(info.value), opener


def test_open_dlq_errors_and_reprs_hide_url_passwords() -> None:
    for url in (f"ftp://u:{SECRET}@h/x", f"nope://h/x?password={SECRET}", f"host=h password={SECRET}"):
        with pytest.raises(BatchguardError) as info:
            open_dlq(url)
        assert SECRET not in _everything_said(info.value)
