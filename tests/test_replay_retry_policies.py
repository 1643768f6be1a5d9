"""``replay(..., retry=...)`` takes what ``run_batches`` takes: a RetryPolicy, a RetryPolicies,
or a mapping from an error to its policy (issue 10 item 2). It worked at run time, but
``replay`` was typed ``retry: RetryPolicy | None``, so a user's type checker rejected the
other two forms."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchguard import MemoryDLQ, RetryPolicies, RetryPolicy, replay, run_batches


class _FailsTwice:
    """Raises TimeoutError on the first two calls for each record, then returns it."""

    def __init__(self) -> None:
        self.calls: dict[Any, int] = {}

    def __call__(self, record: Any) -> Any:
        self.calls[record] = self.calls.get(record, 0) + 1
        if self.calls[record] <= 2:
            raise TimeoutError(f"slow {record}")
        return record


def _dead_letters() -> MemoryDLQ:
    def fail(record: str) -> str:
        raise TimeoutError(record)

    dlq = MemoryDLQ()
    run_batches(["a", "b"], fail, dlq=dlq, retry=RetryPolicy(max_attempts=1))
    assert dlq.count() == 2
    return dlq


@pytest.mark.parametrize("form", ["RetryPolicies", "mapping"])
def test_replay_retries_by_error_with_a_policy_table(form: str) -> None:
    dlq = _dead_letters()
    fn = _FailsTwice()
    three = RetryPolicy(max_attempts=3, base_delay=0.0, jitter="none")
    retry: RetryPolicies | dict[type[BaseException], RetryPolicy] = (
        RetryPolicies(default=RetryPolicy(max_attempts=1), by_error={TimeoutError: three})
        if form == "RetryPolicies" else {TimeoutError: three})
    report = replay(dlq, fn, retry=retry)
    # Each record got TimeoutError's three attempts, not the default policy's.
    assert fn.calls == {"a": 3, "b": 3}
    assert (report.replayed, report.kept, dlq.count()) == (2, 0, 0)


@pytest.mark.slow
def test_a_type_checker_accepts_every_retry_form_replay_takes(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent("""\
        from batchguard import ErrorClass, MemoryDLQ, RetryPolicies, RetryPolicy, replay

        def echo(record: object) -> object:
            return record

        queue = MemoryDLQ()
        replay(queue, echo, retry=RetryPolicy(max_attempts=2))
        replay(queue, echo, retry=RetryPolicies(by_error={TimeoutError: RetryPolicy(max_attempts=5)}))
        replay(queue, echo, retry={TimeoutError: RetryPolicy(max_attempts=5)})
        replay(queue, echo, retry={ErrorClass.TRANSIENT: RetryPolicy(max_attempts=5)})
        replay(queue, echo, retry=None)
        replay(queue, echo, retry=5)  # wrong: the one line mypy must reject
    """), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".cache"),
         "--hide-error-context", "--no-error-summary", "--show-error-codes", "user.py"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("user.py:12:"), done.stdout
    assert "[arg-type]" in errors[0]
