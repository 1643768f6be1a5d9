"""batchguard.read over gs:// against a real GCS-compatible server on 127.0.0.1 (issue 11 item 2:
gs:// is one of the locations a source may be at).

The server is gcp-storage-emulator (tests/gcs_server.py, the ``gcs_endpoint`` fixture); objects
are written with gcsfs and read through batchguard.read, as a user's would be. Each test has its
own bucket.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import batchguard  # noqa: E402 - after the skips
from batchguard.errors import InputError  # noqa: E402
from batchguard.sources import Row, UnparsedLine  # noqa: E402


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """Endpoint URL of gcp-storage-emulator in its own process, gcsfs pointed at it."""
    import gcs_server

    yield from gcs_server.gcs_server()


def _fs() -> Any:
    import gcsfs.core

    return gcsfs.core.GCSFileSystem(token="anon")  # the emulator takes anonymous calls


@pytest.fixture
def bucket(gcs_endpoint: str) -> str:
    name = f"bg-{uuid.uuid4().hex[:12]}"
    _fs().mkdir(name)
    return name


def put(bucket: str, key: str, body: bytes) -> None:
    _fs().pipe(f"{bucket}/{key}", body)


def jsonl(numbers: range, *, bad_line: int | None = None) -> bytes:
    lines = [json.dumps({"n": n}) for n in numbers]
    if bad_line is not None:
        lines.insert(bad_line - 1, '{"n": oops')
    return ("\n".join(lines) + "\n").encode()


def test_jsonl_gz_is_read_with_file_and_line_ids_and_a_corrupt_line_unparsed(bucket: str) -> None:
    body = gzip.compress(jsonl(range(5), bad_line=3))
    put(bucket, "in/a.jsonl.gz", body)
    src = batchguard.read(f"gs://{bucket}/in/a.jsonl.gz", token="anon")
    records = list(src)
    assert [r for r in records if isinstance(r, dict)] == [{"n": n} for n in range(5)]
    bad = [r for r in records if isinstance(r, UnparsedLine)]
    assert bad == ['{"n": oops'] and bad[0].line == 3 and "invalid JSON" in bad[0].error
    assert [src.id_of(r) for r in records] == [f"gs://{bucket}/in/a.jsonl.gz:{line}" for line in range(1, 7)]
    assert not hasattr(src, "__len__"), "compressed and remote: no cheap exact length"
    assert list(src) == records, "iterating again reads again"
    assert src.files[0].size == len(body)
    assert src.files[0].version, "the object's generation or etag identifies its version"


def test_a_new_version_of_an_object_has_a_new_version(bucket: str) -> None:
    """A job's fingerprint holds each file's version: rewriting the object changes it."""
    put(bucket, "v.jsonl", jsonl(range(3)))
    before = batchguard.read(f"gs://{bucket}/v.jsonl", token="anon").files[0]
    put(bucket, "v.jsonl", jsonl(range(3, 6)))
    after = batchguard.read(f"gs://{bucket}/v.jsonl", token="anon").files[0]
    assert before.version != after.version


def test_csv_rows_and_a_short_row(bucket: str) -> None:
    put(bucket, "t.csv", b"n,name\n1,a\n2\n3,c\n")
    src = batchguard.read(f"gs://{bucket}/t.csv", token="anon")
    records = list(src)
    assert records[0] == {"n": "1", "name": "a"} and records[2] == {"n": "3", "name": "c"}
    assert isinstance(records[1], UnparsedLine)
    assert records[1].error == "invalid CSV row: 1 fields, the header has 2"
    assert [src.id_of(r) for r in records] == [f"gs://{bucket}/t.csv:{line}" for line in (2, 3, 4)]


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
    src = batchguard.read(f"gs://{bucket}/whole.parquet", token="anon")
    assert len(src) == 1000, "a Parquet file's length comes from its footer"
    rows = list(src)
    assert [r["n"] for r in rows] == list(range(1000)) and all(isinstance(r, Row) for r in rows)
    assert src.id_of(rows[250]) == f"gs://{bucket}/whole.parquet#250"
    # Damage the last row group's column chunks, not the footer: a reader that loaded the whole
    # object first would fail before the first record; a streamed one yields the first nine groups.
    last = meta.row_group(9)
    for c in range(last.num_columns):
        column = last.column(c)
        start = column.dictionary_page_offset or column.data_page_offset
        data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    put(bucket, "damaged.parquet", bytes(data))
    damaged = iter(batchguard.read(f"gs://{bucket}/damaged.parquet", token="anon"))
    assert [next(damaged)["n"] for _ in range(900)] == list(range(900))
    with pytest.raises(InputError, match=r"row group 9 \(from row 900\)"):
        next(damaged)


def test_a_glob_reads_its_objects_in_sorted_order_whatever_their_compression(bucket: str) -> None:
    put(bucket, "d/part-1.jsonl.bz2", bz2.compress(jsonl(range(10, 20))))
    put(bucket, "d/part-0.jsonl.gz", gzip.compress(jsonl(range(10))))
    put(bucket, "d/part-2.jsonl", jsonl(range(20, 30)))
    put(bucket, "d/other.txt", b"not matched\n")
    put(bucket, "e/part-9.jsonl", jsonl(range(99, 100)))
    src = batchguard.read(f"gs://{bucket}/d/part-*.jsonl*", token="anon")
    assert [f.shown for f in src.files] == [f"gs://{bucket}/d/part-0.jsonl.gz", f"gs://{bucket}/d/part-1.jsonl.bz2",
                                           f"gs://{bucket}/d/part-2.jsonl"]
    assert [r["n"] for r in src] == list(range(30))
    everything = batchguard.read(f"gs://{bucket}/**/*.jsonl*", token="anon")
    assert [r["n"] for r in everything] == [*range(30), 99]
    with pytest.raises(InputError, match="no file matches"):
        batchguard.read(f"gs://{bucket}/d/*.parquet", token="anon")


def test_a_run_over_a_gs_glob_names_its_dead_letters_by_object_and_line(bucket: str) -> None:
    put(bucket, "in/p0.jsonl.gz", gzip.compress(jsonl(range(1, 6))))
    put(bucket, "in/p1.jsonl.gz", gzip.compress(jsonl(range(6, 11), bad_line=2)))
    src = batchguard.read(f"gs://{bucket}/in/*.jsonl.gz", token="anon")

    def fn(record: Any) -> int:
        if isinstance(record, UnparsedLine):
            raise ValueError(record.error)
        if record["n"] % 7 == 0:
            raise ValueError("a multiple of 7")
        return int(record["n"])

    report = batchguard.run_batches(src, fn, id_of=src.id_of, batch_size=4,
                                    retry=batchguard.RetryPolicy(max_attempts=1))
    assert report.successful == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert sorted(entry.record_id for entry in report.dead_letters) == [
        f"gs://{bucket}/in/p1.jsonl.gz:2", f"gs://{bucket}/in/p1.jsonl.gz:3"]
