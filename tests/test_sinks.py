"""Results sinks (``batchguard.sinks``, ``results=`` a writer or URL, ``batchguard run --output``)
(issue 11 item 1): local files and a real S3-compatible server, compression by extension, 0600
files, closed at the run's end even on Ctrl-C, written before a job's checkpoint and appended to
on resume.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchguard
from batchguard import sinks
from batchguard.cli import main
from batchguard.errors import ConfigError
from helpers_contract import ENGINES

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def read_back(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    elif path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    elif path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    return lines_of(raw)


def half(x: int) -> dict[str, Any]:
    if x % 5 == 4:
        raise ValueError(f"no half of {x}")
    return {"x": x, "half": x / 2}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["out.jsonl", "out.ndjson.gz", "out.jsonl.bz2", "out.jsonl.zst"])
def test_a_url_string_writes_json_lines_compressed_by_its_extension(tmp_path: Path, engine: str,
                                                                    name: str) -> None:
    out = tmp_path / name
    report = batchguard.run_batches(range(12), half, batch_size=5, concurrency=3, engine=engine,
                                    retry=batchguard.RetryPolicy(max_attempts=1), results=str(out))
    assert report.successful == [] and report.success_count == 10
    rows = read_back(out)
    assert sorted(row["index"] for row in rows) == [i for i in range(12) if i % 5 != 4]
    assert all(row["value"] == {"x": row["index"], "half": row["index"] / 2} for row in rows)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_a_sink_file_is_created_private_whatever_the_umask_allows(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        batchguard.run_batches(range(3), str, results=sinks.jsonl(tmp_path / "out.jsonl"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode) == 0o600


@pytest.mark.parametrize("engine", ENGINES)
def test_parquet_takes_its_schema_from_the_first_batch(tmp_path: Path, engine: str) -> None:
    out = tmp_path / "out.parquet"
    batchguard.run_batches(range(7), lambda x: {"n": x, "tag": f"t{x}"}, batch_size=3, engine=engine,
                           results=sinks.parquet(out))
    table = pq.read_table(out)
    assert table.column("index").to_pylist() == list(range(7))
    assert table.column("value").to_pylist() == [{"n": x, "tag": f"t{x}"} for x in range(7)]
    assert table.schema.field("index").type == pa.int64()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_a_parquet_value_that_does_not_fit_the_first_batchs_schema_fails_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(TypeError, match="do not fit the schema of the first batch"):
        batchguard.run_batches(range(4), lambda x: {"n": x} if x < 2 else "text", batch_size=2,
                               results=sinks.parquet(out))


def test_a_run_without_any_success_writes_an_empty_parquet_file(tmp_path: Path) -> None:
    out = tmp_path / "none.parquet"
    batchguard.run_batches(range(3), lambda x: 1 / 0, retry=batchguard.RetryPolicy(max_attempts=1),
                           results=str(out))
    assert pq.read_table(out).num_rows == 0


def test_a_value_json_cannot_hold_fails_the_run_naming_its_record(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="the value of record 0 cannot be written as JSON"):
        batchguard.run_batches(range(2), lambda x: {x}, results=str(tmp_path / "out.jsonl"))


@pytest.mark.parametrize("bad", ["out.csv", "out", "out.json", "out.parquet.gz"])
def test_a_url_whose_format_is_unknown_is_refused_before_any_record_runs(tmp_path: Path, bad: str) -> None:
    calls: list[int] = []
    with pytest.raises(ConfigError, match="results sink"):
        batchguard.run_batches(range(3), calls.append, results=str(tmp_path / bad))
    assert calls == []


def test_an_unwritable_path_fails_before_any_record_runs(tmp_path: Path) -> None:
    calls: list[int] = []
    with pytest.raises(ConfigError, match="cannot be opened for writing"):
        batchguard.run_batches(range(3), calls.append, results=str(tmp_path / "no" / "such" / "out.jsonl"))
    assert calls == []


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_closes_the_sink_with_every_finished_batch_readable(tmp_path: Path, engine: str) -> None:
    out = tmp_path / "out.jsonl.gz"

    def stop_at_7(x: int) -> int:
        if x == 7:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(20), stop_at_7, batch_size=3, engine=engine, results=str(out))
    rows = read_back(out)  # a gzip stream with its trailer: closed, not cut off
    assert [row["index"] for row in rows][:6] == [0, 1, 2, 3, 4, 5]
    assert 7 not in {row["index"] for row in rows}


class FailingOnBatch:
    """A writer whose write raises for the batch holding ``index``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.written: list[int] = []

    def open(self, *, append: bool) -> None:
        pass

    def write(self, indices: Any, values: Any) -> None:
        if self.index in indices:
            raise OSError("disk full")
        self.written.extend(indices)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_checkpoints_a_batch_only_after_its_sink_write_returned(tmp_path: Path, engine: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    failing = FailingOnBatch(7)
    with pytest.raises(OSError, match="disk full"):
        batchguard.run_batches(range(12), lambda x: x, batch_size=3, engine=engine, job="j", store=store,
                               results=failing)
    assert failing.written == [0, 1, 2, 3, 4, 5]
    state = batchguard.job_status("j", store=store)
    assert state.batches_done == 2, "batch 2, whose write failed, is not checkpointed"
    out = tmp_path / "out.jsonl"
    report = batchguard.run_batches(range(12), lambda x: x, batch_size=3, engine=engine, job="j", store=store,
                                    results=str(out))
    assert report.skipped_batches == 2
    assert [row["index"] for row in read_back(out)] == list(range(6, 12))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_resumed_job_appends_to_its_file_sink(tmp_path: Path, engine: str) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "out.jsonl"

    def stop_at(limit: int) -> Any:
        def fn(x: int) -> int:
            if x == limit:
                raise KeyboardInterrupt
            return x
        return fn

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(10), stop_at(5), batch_size=2, engine=engine, job="j", store=store,
                               results=str(out))
    batchguard.run_batches(range(10), stop_at(-1), batch_size=2, engine=engine, job="j", store=store,
                           results=str(out))
    indices = [row["index"] for row in read_back(out)]
    assert sorted(indices) == list(range(10)), "every value once: the first run's kept, the rest appended"


def test_batchguard_run_output_writes_the_results_and_keeps_none(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"id": i}) for i in range(6)) + "\n")
    ran = CliRunner().invoke(main, ["run", "in.jsonl", "--fn", "cli_fns:fail_odd", "--max-attempts", "1",
                                    "-q", "--output", "out.jsonl.gz"], catch_exceptions=False)
    assert "results: 3 values written to out.jsonl.gz" in ran.output
    rows = read_back(tmp_path / "out.jsonl.gz")
    assert [(row["index"], row["value"]) for row in rows] == [(i, {"id": i}) for i in (0, 2, 4)]


def test_a_callable_that_is_also_no_writer_is_wrapped(tmp_path: Path) -> None:
    got: list[tuple[list[int], list[int]]] = []
    batchguard.run_batches(range(4), lambda x: x + 1, batch_size=2,
                           results=lambda indices, values: got.append((list(indices), list(values))))
    assert got == [([0, 1], [1, 2]), ([2, 3], [3, 4])]


def test_jsonl_and_parquet_sinks_write_to_s3(s3_endpoint: str) -> None:
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    bucket = f"bg-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    batchguard.run_batches(range(5), lambda x: {"x": x}, batch_size=2, results=f"s3://{bucket}/out/r.jsonl.gz")
    batchguard.run_batches(range(5), lambda x: {"x": x}, batch_size=2,
                           results=sinks.parquet(f"s3://{bucket}/out/r.parquet"))
    fs = s3fs.S3FileSystem()
    with fs.open(f"{bucket}/out/r.jsonl.gz", "rb") as f:
        assert lines_of(gzip.decompress(f.read())) == [{"index": x, "value": {"x": x}} for x in range(5)]
    with fs.open(f"{bucket}/out/r.parquet", "rb") as f:
        assert pq.read_table(f).column("value").to_pylist() == [{"x": x} for x in range(5)]
    with pytest.raises(ConfigError, match="cannot append to a remote object"):
        sinks.jsonl(f"s3://{bucket}/out/r.jsonl").open(append=True)


def test_jobs_resume_appends_to_the_jobs_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"id": i}) for i in range(8)) + "\n")
    monkeypatch.setenv("BG_FATAL_AT", "3")
    first = CliRunner().invoke(main, ["run", "in.jsonl", "--fn", "cli_fns:fatal_when_asked", "--job", "j",
                                      "--batch-size", "2", "-q", "--output", "out.jsonl"])
    assert first.exit_code != 0
    assert [row["index"] for row in read_back(tmp_path / "out.jsonl")] == [0, 1, 2]
    monkeypatch.delenv("BG_FATAL_AT")
    resumed = CliRunner().invoke(main, ["jobs", "resume", "j", "-q"], catch_exceptions=False)
    assert "results: 4 values written to" in resumed.output
    assert [row["index"] for row in read_back(tmp_path / "out.jsonl")] == [0, 1, 2, 4, 5, 6, 7]
