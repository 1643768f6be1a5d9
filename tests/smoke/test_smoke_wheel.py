"""The smoke subset: what a built wheel must do once pip has installed it (issue 11 item 4).

`make wheel-smoke` (.ci/wheel-smoke.sh) copies this directory out of the checkout, installs the
wheel into a fresh virtualenv with pytest as the only extra, and runs it there, so each test here
sees the installed package and nothing else: no conftest, no helper module and no test
dependency beyond pytest. The tests also run in the ordinary suite, against the editable build.

They cover what a broken wheel would break: the compiled engine loads from inside the package
(a manylinux build linked against the wrong glibc fails at import), the files beside the code
(stub, py.typed, metadata, console script) are there, and each native driver (inline, threaded,
async, bulk), the SQLite dead-letter queue, a resumable job and the command line work end to end
with the engine the wheel carries.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy, _native, job_status, open_dlq, run_batches

NO_DELAY = RetryPolicy(max_attempts=3, base_delay=0.0, jitter="none")
RECORDS = [{"id": i, "v": i} for i in range(50)]


class Flaky(ConnectionError):
    """Transient: the classifier retries it."""


def double(record: dict[str, int]) -> int:
    """Twice the value; record 7 fails for good (a ValueError is permanent: dead-lettered, no retry)."""
    if record["id"] == 7:
        raise ValueError("record 7 is bad")
    return record["v"] * 2


def expected_values() -> list[int]:
    return [r["v"] * 2 for r in RECORDS if r["id"] != 7]


def test_the_engine_is_the_compiled_module_inside_the_package() -> None:
    package_dir = Path(batchguard.__file__).resolve().parent
    native = Path(_native.__file__).resolve()
    assert native.parent == package_dir
    # The extension's own name: a version-specific build (cpython-3XY) or an abi3 one.
    assert native.name.startswith("_native.") and native.suffix == ".so", native.name
    assert (package_dir / "_native.pyi").is_file(), "the stub ships beside the extension"
    assert (package_dir / "py.typed").is_file(), "the package declares its types (PEP 561)"


def test_the_version_comes_from_the_installed_metadata() -> None:
    assert batchguard.__version__ == importlib.metadata.version("batchguard")
    requires = importlib.metadata.requires("batchguard") or []
    assert any(r.startswith("orjson") for r in requires), requires


@pytest.mark.parametrize("concurrency", [1, 4], ids=["inline", "threaded"])
def test_a_sync_run_isolates_failures_and_keeps_order(concurrency: int) -> None:
    calls: dict[int, int] = {}

    def fn(record: dict[str, int]) -> int:
        calls[record["id"]] = calls.get(record["id"], 0) + 1
        if record["id"] == 3 and calls[3] == 1:
            raise Flaky("reset once")
        return double(record)

    report = run_batches(RECORDS, fn, batch_size=8, concurrency=concurrency, retry=NO_DELAY, dlq=None)
    assert report.status == "partial_success"
    assert report.successful == expected_values()
    assert (report.success_count, report.failure_count, report.retry_count) == (49, 1, 1)
    [error] = report.errors
    assert (error.record_id, error.error_type, error.error_class) == (7, "ValueError", "permanent")
    assert calls[3] == 2 and calls[7] == 1


def test_an_async_fn_runs_on_the_native_event_loop_driver() -> None:
    async def fn(record: dict[str, int]) -> int:
        await asyncio.sleep(0)
        return double(record)

    report = run_batches(RECORDS, fn, concurrency=16, retry=NO_DELAY, dlq=None)
    assert report.successful == expected_values()
    assert report.failure_count == 1


def test_a_bulk_fn_is_bisected_down_to_the_bad_record() -> None:
    report = run_batches(RECORDS, lambda batch: [double(r) for r in batch], bulk=True, batch_size=16,
                         retry=NO_DELAY, dlq=None)
    assert report.successful == expected_values()
    assert [e.record_id for e in report.errors] == [7]


def test_both_engines_agree() -> None:
    native = run_batches(RECORDS, double, batch_size=8, retry=NO_DELAY, dlq=None)
    reference = run_batches(RECORDS, double, batch_size=8, retry=NO_DELAY, dlq=None, engine="python")
    assert native.successful == reference.successful
    assert [e.to_dict() for e in native.errors] == [e.to_dict() for e in reference.errors]


def test_a_job_dead_letters_to_sqlite_and_resumes_as_complete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bg.db'}"
    report = run_batches(RECORDS, double, batch_size=10, retry=NO_DELAY, dlq=url, job="smoke", store=url)
    assert report.dlq_count == 1
    with open_dlq(url) as dlq:
        [entry] = dlq.list()
    assert (entry.record_id, entry.error_type, entry.payload) == (7, "ValueError", {"id": 7, "v": 7})
    assert entry.traceback and "record 7 is bad" in entry.traceback
    status = job_status("smoke", store=url)
    assert (status.status, status.succeeded, status.failed) == ("completed", 49, 1)


def _console_script() -> str:
    """The `batchguard` command pip installed beside this interpreter."""
    script = Path(sysconfig.get_path("scripts")) / "batchguard"
    assert script.is_file(), f"pip installed no console script at {script}"
    return str(script)


def test_the_command_line_runs_a_file_and_lists_its_dead_letters(tmp_path: Path) -> None:
    (tmp_path / "smoke_fns.py").write_text(
        "def double(record):\n"
        "    if record['id'] == 7:\n"
        "        raise ValueError('record 7 is bad')\n"
        "    return record['v'] * 2\n",
        encoding="utf-8",
    )
    lines = [json.dumps(r) for r in RECORDS[:10]] + ["{not json"]
    (tmp_path / "input.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1"}
    dlq = "sqlite:///dlq.db"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_console_script(), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    run = cli("run", "input.jsonl", "--fn", "smoke_fns:double", "--dlq", dlq, "--base-delay", "0", "--json")
    assert run.returncode == 1, f"a run with dead letters exits 1: {run.stderr}"
    report: dict[str, Any] = json.loads(run.stdout)
    assert (report["status"], report["succeeded"], report["failed"]) == ("partial_success", 9, 2), report
    listed = cli("dlq", "list", "--dlq", dlq, "--json")
    assert listed.returncode == 0, listed.stderr
    types = sorted(entry["error_type"] for entry in json.loads(listed.stdout))
    assert types == ["InputParseError", "ValueError"]


def test_the_interpreter_runs_the_package_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "batchguard", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "dlq" in done.stdout
