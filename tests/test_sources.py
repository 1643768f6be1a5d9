"""batchguard.read on local files and over HTTP (a real http.server on 127.0.0.1): formats,
compression, globs, record ids, lengths, re-reading, and a job refusing changed input files."""

from __future__ import annotations

import bz2
import functools
import gzip
import http.server
import io
import json
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import batchguard
from batchguard.cli import main
from batchguard.dlq import MemoryDLQ
from batchguard.errors import InputError
from batchguard.sources import Items, Row, SizedSource, UnparsedLine, guard_parse_errors

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")


def lines(*values: object) -> bytes:
    return "".join(v if isinstance(v, str) else json.dumps(v) + "\n" for v in values).encode()


# Each case also checks that closing a decompressed file closes the file under it (GzipFile and
# BZ2File leave a file object they are given open: a ResourceWarning, an error in this suite).
@pytest.mark.parametrize(("name", "pack"), [
    ("a.jsonl", lambda b: b), ("a.jsonl.gz", gzip.compress), ("a.jsonl.bz2", bz2.compress),
    ("a.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_compression_is_picked_from_the_extension(tmp_path: Path, name: str, pack: object) -> None:
    path = tmp_path / name
    path.write_bytes(pack(lines({"n": 1}, "{bad\n", "\n", [1, 2], 5)))  # type: ignore[operator]
    src = batchguard.read(path)
    records = list(src)
    assert records == [{"n": 1}, "{bad", [1, 2], 5]
    assert isinstance(records[0], Row) and isinstance(records[1], UnparsedLine) and isinstance(records[2], Items)
    assert [src.id_of(r) for r in records[:3]] == [f"{path}:1", f"{path}:2", f"{path}:4"]
    with pytest.raises(LookupError, match="carries no origin"):
        src.id_of(records[3])  # a bare number has nowhere to keep it: a run falls back to the index
    # Length: exact and cheap only for the uncompressed local file.
    assert isinstance(src, SizedSource) == (name == "a.jsonl")
    if isinstance(src, SizedSource):
        assert len(src) == 4


def test_csv_json_array_and_parquet_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.csv").write_text('n,text\n1,"two\nlines"\n2,b\n')
    (tmp_path / "t.json").write_text('[{"n": 1}, {"n": 2}]')
    pq.write_table(pa.table({"n": list(range(5))}), tmp_path / "t.parquet", row_group_size=2)
    monkeypatch.chdir(tmp_path)
    csv_src = batchguard.read("t.csv")  # shown by its absolute path, wherever a job resumes from
    assert [csv_src.id_of(r) for r in csv_src] == [f"{tmp_path}/t.csv:2", f"{tmp_path}/t.csv:4"]
    array = batchguard.read(tmp_path / "t.json")
    assert len(array) == 2 and [array.id_of(r) for r in array] == [f"{tmp_path}/t.json#0", f"{tmp_path}/t.json#1"]
    table = batchguard.read(tmp_path / "t.parquet")
    assert len(table) == 5 and [table.id_of(r) for r in table][-1] == f"{tmp_path}/t.parquet#4"


def test_a_glob_is_read_in_sorted_order_across_formats(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("n\n3\n")
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines({"n": 1}, {"n": 2})))
    (tmp_path / "c.parquet").write_bytes(b"")  # not matched by the glob below
    pq.write_table(pa.table({"n": [4]}), tmp_path / "d.parquet")
    src = batchguard.read(str(tmp_path / "[abd]*"))
    assert [r["n"] for r in src] == [1, 2, "3", 4] and src.format is None
    assert [Path(f.url).name for f in src.files] == ["a.jsonl.gz", "b.csv", "d.parquet"]
    with pytest.raises(InputError, match="no file matches"):
        batchguard.read(str(tmp_path / "*.ndjson"))


def test_a_source_is_read_again_each_time_and_lazily(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(lines({"n": 1}, {"n": 2}))
    src = batchguard.read(path)
    first = iter(src)
    assert next(first) == {"n": 1}
    path.write_bytes(lines({"n": 1}, {"n": 2}, {"n": 3}))
    assert [r["n"] for r in src] == [1, 2, 3], "a new iteration opens the file again"


def test_run_batches_names_dead_letters_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(lines({"n": 1}, {"n": 2}, "{bad\n", {"n": 4})))
    src = batchguard.read(path)
    dlq = MemoryDLQ()

    def fn(record: dict[str, int]) -> int:
        if record["n"] == 2:
            raise ValueError("no 2")
        return record["n"]

    report = batchguard.run_batches(src, guard_parse_errors(fn), id_of=src.id_of, dlq=dlq, batch_size=2,
                                    retry=batchguard.RetryPolicy(max_attempts=1))
    assert report.total == 4 and report.success_count == 2
    assert sorted(e.record_id for e in dlq.list()) == [f"{path}:2", f"{path}:3"]


def test_records_pickle_with_their_origin(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(lines({"n": 1}, [2], "{x\n"))
    records = list(batchguard.read(path))
    back = pickle.loads(pickle.dumps(records))  # noqa: S301 - our own bytes
    assert back == records and [batchguard.Source.id_of(r) for r in back] == [f"{path}:{n}" for n in (1, 2, 3)]


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """http.server's file handler, silent, answering ``Range: bytes=a-b`` as object stores and
    web servers do (Parquet reads its footer, then the column chunks it needs)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not wanted.startswith("bytes=") or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start = int(first) if first else len(data) - int(last)
        end = min(int(last) if first and last else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start:end + 1])


def test_http_urls_are_read_and_shown_redacted(http_root: tuple[str, Path]) -> None:
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    base, root = http_root
    (root / "a.jsonl.gz").write_bytes(gzip.compress(lines({"n": 1}, "{bad\n")))
    pq.write_table(pa.table({"n": list(range(300))}), root / "t.parquet", row_group_size=100)
    src = batchguard.read(f"{base}/a.jsonl.gz?token=s3cr3t-t0ken")
    records = list(src)
    assert records == [{"n": 1}, "{bad"]
    assert src.id_of(records[1]) == f"{base}/a.jsonl.gz?token=***:2"
    assert "s3cr3t" not in repr(src) and "s3cr3t" not in json.dumps(src.manifest())
    table = batchguard.read(f"{base}/t.parquet")
    assert len(table) == 300 and [r["n"] for r in table] == list(range(300))
    with pytest.raises(InputError, match="no such file"):
        batchguard.read(f"{base}/missing.jsonl?token=s3cr3t-t0ken")


def test_a_job_refuses_to_resume_over_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p1.jsonl").write_bytes(lines(*({"n": n} for n in range(5))))
    (tmp_path / "p2.jsonl").write_bytes(lines(*({"n": n} for n in range(5, 10))))
    args = ["run", "p*.jsonl", "--fn", "json:dumps", "--job", "J", "-q", "--batch-size", "5"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    # The first batch is the same; a later file grew (same length, so only the files tell).
    (tmp_path / "p2.jsonl").write_bytes(lines(*({"n": n} for n in range(5, 9)), {"n": 99}))
    os.utime(tmp_path / "p2.jsonl", ns=(1, 1))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2, again.output
    assert f"the input files of job 'J' changed since it started: {tmp_path}/p2.jsonl changed (" in again.output
    assert "version" in again.output and "--force" in again.output
    unchanged = CliRunner().invoke(main, ["run", "p1.jsonl", "--fn", "json:dumps", "--job", "K", "-q"])
    assert unchanged.exit_code == 0 and CliRunner().invoke(main, ["run", "p1.jsonl", "--fn", "json:dumps",
                                                                  "--job", "K", "-q"]).exit_code == 0


def test_a_local_parquet_file_is_streamed(tmp_path: Path) -> None:
    out = io.BytesIO()
    pq.write_table(pa.table({"n": list(range(40))}), out, row_group_size=10)
    data = bytearray(out.getvalue())
    last = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(3).column(0)
    start = last.dictionary_page_offset or last.data_page_offset
    data[start:start + last.total_compressed_size] = b"\xff" * last.total_compressed_size
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    rows = iter(batchguard.read(tmp_path / "t.parquet"))
    assert [next(rows)["n"] for _ in range(30)] == list(range(30))
    with pytest.raises(InputError, match=r"row group 3 \(from row 30\)"):
        next(rows)


def test_jobs_status_finds_a_record_by_its_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_bytes(lines({"n": 1}, "{bad\n", {"n": 3}))
    run = CliRunner().invoke(main, ["run", "in.jsonl", "--fn", "json:dumps", "--job", "J", "-q"])
    assert run.exit_code == 1, run.output  # the bad line is dead-lettered
    where = CliRunner().invoke(main, ["jobs", "status", "J", "--record", f"{tmp_path}/in.jsonl:2"])
    assert where.exit_code == 0, where.output
    assert "DEAD-LETTERED" in where.output and "record #1 in the input" in where.output, where.output
