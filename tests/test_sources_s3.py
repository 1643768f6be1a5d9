"""batchguard.read and ``batchguard run`` over a real S3-compatible server on 127.0.0.1.

The server is moto in server mode (tests/s3_server.py, the ``s3_endpoint`` fixture); objects
are put with boto3 and read with s3fs, as a user's would be. Each test has its own bucket.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")
boto3 = pytest.importorskip("boto3")

import batchguard  # noqa: E402 - after the skips: without s3fs there is nothing to test
from batchguard.dlq import SqliteDLQ  # noqa: E402
from batchguard.errors import InputError  # noqa: E402
from batchguard.sources import Row, UnparsedLine  # noqa: E402

TESTS = Path(__file__).parent


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"bg-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(Bucket=bucket, Key=key, Body=body)


def jsonl(numbers: range, *, bad_line: int | None = None) -> bytes:
    lines = [json.dumps({"n": n}) for n in numbers]
    if bad_line is not None:
        lines.insert(bad_line - 1, '{"n": oops')
    return ("\n".join(lines) + "\n").encode()


def test_jsonl_gz_is_read_with_file_and_line_ids_and_a_corrupt_line_unparsed(bucket: str) -> None:
    body = gzip.compress(jsonl(range(5), bad_line=3))
    put(bucket, "in/a.jsonl.gz", body)
    src = batchguard.read(f"s3://{bucket}/in/a.jsonl.gz")
    records = list(src)
    assert [r for r in records if isinstance(r, dict)] == [{"n": n} for n in range(5)]
    bad = [r for r in records if isinstance(r, UnparsedLine)]
    assert bad == ['{"n": oops'] and bad[0].line == 3 and "invalid JSON" in bad[0].error
    assert [src.id_of(r) for r in records] == [f"s3://{bucket}/in/a.jsonl.gz:{line}" for line in range(1, 7)]
    # Compressed and remote: no cheap exact length, so run_batches treats it as a generator.
    assert not hasattr(src, "__len__")
    assert list(src) == records, "iterating again reads again"
    assert src.files[0].size == len(body)
    assert src.files[0].version.strip('"'), "the ETag identifies the object's version"


def test_csv_rows_and_a_short_row(bucket: str) -> None:
    put(bucket, "t.csv", b"n,name\n1,a\n2\n3,c\n")
    src = batchguard.read(f"s3://{bucket}/t.csv")
    records = list(src)
    assert records[0] == {"n": "1", "name": "a"} and records[2] == {"n": "3", "name": "c"}
    assert isinstance(records[1], UnparsedLine)
    assert records[1].error == "invalid CSV row: 1 fields, the header has 2"
    assert [src.id_of(r) for r in records] == [f"s3://{bucket}/t.csv:{line}" for line in (2, 3, 4)]


def _parquet(rows: int, group: int) -> bytes:
    table = pa.table({"n": list(range(rows)), "text": [f"row {n} " * 20 for n in range(rows)]})
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=group, compression="snappy")
    return out.getvalue()


def test_parquet_is_streamed_row_group_by_row_group(bucket: str) -> None:
    data = bytearray(_parquet(1000, 100))
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    assert meta.num_row_groups == 10
    put(bucket, "whole.parquet", bytes(data))
    src = batchguard.read(f"s3://{bucket}/whole.parquet")
    assert len(src) == 1000, "a Parquet file's length comes from its footer"
    rows = list(src)
    assert [r["n"] for r in rows] == list(range(1000)) and all(isinstance(r, Row) for r in rows)
    assert src.id_of(rows[250]) == f"s3://{bucket}/whole.parquet#250"
    # Damage the last row group's column chunks, not the footer: a reader that loaded the whole
    # file first would fail before the first record; a streamed one yields the first nine groups.
    last = meta.row_group(9)
    for c in range(last.num_columns):
        column = last.column(c)
        start = column.dictionary_page_offset or column.data_page_offset
        data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    put(bucket, "damaged.parquet", bytes(data))
    damaged = iter(batchguard.read(f"s3://{bucket}/damaged.parquet"))
    first = [next(damaged)["n"] for _ in range(900)]
    assert first == list(range(900))
    with pytest.raises(InputError, match=r"row group 9 \(from row 900\)"):
        next(damaged)


def test_a_glob_reads_its_objects_in_sorted_order_whatever_their_compression(bucket: str) -> None:
    put(bucket, "d/part-2.jsonl.zst", zstandard.ZstdCompressor().compress(jsonl(range(20, 30))))
    put(bucket, "d/part-0.jsonl.gz", gzip.compress(jsonl(range(10))))
    put(bucket, "d/part-1.jsonl.bz2", bz2.compress(jsonl(range(10, 20))))
    put(bucket, "d/other.txt", b"not matched\n")
    put(bucket, "e/part-9.jsonl", jsonl(range(99, 100)))
    src = batchguard.read(f"s3://{bucket}/d/part-*.jsonl.*")
    assert [f.shown for f in src.files] == [f"s3://{bucket}/d/part-{k}.jsonl.{ext}"
                                           for k, ext in enumerate(("gz", "bz2", "zst"))]
    assert [r["n"] for r in src] == list(range(30))
    everything = batchguard.read(f"s3://{bucket}/**/*.jsonl*")
    assert [r["n"] for r in everything] == [*range(30), 99]
    with pytest.raises(InputError, match="no file matches"):
        batchguard.read(f"s3://{bucket}/d/*.parquet")


def test_credentials_in_storage_options_never_show(bucket: str) -> None:
    secret = "Sup3rSecretValue/xyz"
    put(bucket, "a.jsonl", jsonl(range(2)))
    src = batchguard.read(f"s3://{bucket}/a.jsonl", key="testing-key-id", secret=secret)
    assert [r["n"] for r in src] == [0, 1]
    assert secret not in repr(src) and secret not in repr(src.files) and secret not in json.dumps(src.manifest())
    with pytest.raises(InputError) as raised:
        batchguard.read(f"s3://{bucket}-missing/a.jsonl", key="testing-key-id", secret=secret)
    assert secret not in str(raised.value)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchguard", *args], cwd=TESTS, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def test_the_cli_dead_letters_a_corrupt_line_by_its_file_and_line(bucket: str, tmp_path: Path) -> None:
    put(bucket, "in/p0.jsonl.gz", gzip.compress(jsonl(range(1, 6))))
    put(bucket, "in/p1.jsonl.gz", gzip.compress(jsonl(range(6, 11), bad_line=2)))
    db = tmp_path / "dlq.db"
    done = cli("run", f"s3://{bucket}/in/*.jsonl.gz", "--fn", "sources_fns:write", "--dlq", f"sqlite:///{db}",
               "-q", "--max-attempts", "1", env={"SOURCES_SINK": str(tmp_path / "sink.db")})
    assert done.returncode == 1, done.stderr + done.stdout  # dead letters: incomplete
    with SqliteDLQ(db) as dlq:
        entries = {e.record_id: e for e in dlq.iter()}
    # p1's lines: n=6, the corrupt line, n=7 (rejected: a multiple of 7), ...
    assert set(entries) == {f"s3://{bucket}/in/p1.jsonl.gz:2", f"s3://{bucket}/in/p1.jsonl.gz:3"}
    parse = entries[f"s3://{bucket}/in/p1.jsonl.gz:2"]
    assert parse.error_type == "InputParseError" and parse.payload == '{"n": oops'
    assert entries[f"s3://{bucket}/in/p1.jsonl.gz:3"].payload == {"n": 7}


def _sink(path: Path) -> tuple[set[int], Counter[int]]:
    if not path.exists():
        return set(), Counter()
    with sqlite3.connect(path, timeout=30) as conn:
        try:
            done = {n for (n,) in conn.execute("SELECT n FROM done")}
            calls = Counter(n for (n,) in conn.execute("SELECT n FROM calls"))
        except sqlite3.OperationalError:  # killed before its first record
            return set(), Counter()
    return done, calls


def _kill_after(args: list[str], env: dict[str, str], sink: Path, calls: int) -> None:
    errors = sink.with_suffix(".stderr")
    with errors.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "batchguard", *args], cwd=TESTS,
                                 env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 60
    while sum(_sink(sink)[1].values()) < calls:
        assert child.poll() is None, f"the run ended before the kill: {errors.read_text()!r}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.slow
def test_a_job_over_s3_killed_twice_and_resumed_loses_and_repeats_nothing(bucket: str, tmp_path: Path) -> None:
    files, per_file = 3, 120
    for k in range(files):
        numbers = range(k * per_file, (k + 1) * per_file)
        put(bucket, f"data/part-{k}.jsonl.gz", gzip.compress(jsonl(numbers, bad_line=50 if k == 1 else None)))
    sink, store = tmp_path / "sink.db", tmp_path / "store.db"
    env = {"SOURCES_SINK": str(sink), "SOURCES_SLOW": "0.002"}
    run = ["run", f"s3://{bucket}/data/part-*.jsonl.gz", "--fn", "sources_fns:write", "--job", "J",
           "--store", f"sqlite:///{store}", "--batch-size", "20", "--max-attempts", "1", "-q"]
    _kill_after(run, env, sink, calls=100)
    _kill_after(run, env, sink, calls=220)  # the rerun resumes; killed again
    killed = batchguard.job_status("J", store=f"sqlite:///{store}")
    assert 0 < killed.batches_done < (files * per_file + 1) // 20, "killed mid-run, with batches saved"
    resumed = cli("jobs", "resume", "J", "--store", f"sqlite:///{store}", env=env)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # finished, with dead letters
    total = files * per_file
    done, calls = _sink(sink)
    with SqliteDLQ(store) as dlq:
        entries = list(dlq.iter(job_id="J"))
    ids = Counter(e.record_id for e in entries)
    assert [i for i, c in ids.items() if c > 1] == [], "a record dead-lettered twice"
    failed = {e.payload["n"] for e in entries if isinstance(e.payload, dict)}
    assert failed == {n for n in range(total) if n % 7 == 0}
    assert done == {n for n in range(total) if n % 7}, "every other record written"
    assert not done & failed
    parse = [e for e in entries if e.error_type == "InputParseError"]
    assert [e.record_id for e in parse] == [f"s3://{bucket}/data/part-1.jsonl.gz:50"]
    # Only the batches in flight at a kill ran twice: at most one batch of 20 per kill.
    assert sum(calls.values()) - total <= 2 * 20
    status = batchguard.job_status("J", store=f"sqlite:///{store}")
    assert status.status == "completed" and status.failed == len(entries)


def test_a_job_refuses_to_resume_over_a_rewritten_object(bucket: str, tmp_path: Path) -> None:
    put(bucket, "j/a.jsonl", jsonl(range(1, 4)))
    put(bucket, "j/b.jsonl", jsonl(range(4, 7)))
    store = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["run", f"s3://{bucket}/j/*.jsonl", "--fn", "sources_fns:keep", "--job", "J", "--store", store,
            "--batch-size", "3", "-q"]
    assert cli(*args).returncode == 0
    # Same first batch, same number of records: only b's ETag (its content) tells them apart.
    put(bucket, "j/b.jsonl", jsonl(range(7, 10)))  # the same size, too
    refused = cli(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"the input files of job 'J' changed since it started: s3://{bucket}/j/b.jsonl changed (version" \
        in refused.stderr.replace("\n", " ")
    assert cli(*args, "--force").returncode == 0
