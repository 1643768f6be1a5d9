"""A pickled dead letter is loaded only when the reader opts in (issue 7, defect 18).

Anyone who can write to a shared DLQ can plant an entry marked ``payload_encoding="pickle"``
whose pickle runs code when loaded. ``DeadLetter.record()``, ``replay`` and ``dlq retry`` must
not load it without ``allow_pickle=True`` / ``--allow-pickle``; such an entry is not run and
stays in the queue, and the user is told why and how to opt in.
"""

from __future__ import annotations

import base64
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchguard import PickleNotAllowedError, RetryPolicy, replay, run_batches
from batchguard.cli import main
from batchguard.dlq import DeadLetter, JsonlDLQ, SqliteDLQ
from batchguard.errors import ConfigTypeError

ONCE = RetryPolicy(max_attempts=1)
TESTS = Path(__file__).parent


class Planted:
    """Unpickling this creates the file ``path``: any code could run instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def planted_entry(marker: Path, index: int = 99) -> DeadLetter:
    payload = base64.b64encode(pickle.dumps(Planted(marker))).decode("ascii")
    return DeadLetter(
        id=f"planted-{index}", run_id="attacker", job_id=None, record_id=index, record_index=index,
        batch_index=0, stage="process", payload=payload, payload_encoding="pickle",
        error_class="permanent", error_type="ValueError", error_message="looks harmless",
        traceback=None)


@dataclasses.dataclass
class Point:
    x: int


def fail_all(record: Any) -> Any:
    raise TypeError(f"bad {record!r}")


def test_record_refuses_a_pickle_without_opt_in_and_never_loads_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    entry = planted_entry(marker)
    with pytest.raises(PickleNotAllowedError, match=r"(?s)pickle.*runs code.*allow_pickle=True") as info:
        entry.record()
    assert isinstance(info.value, ValueError)
    for not_true in (1, "yes"):
        with pytest.raises(PickleNotAllowedError):
            entry.record(allow_pickle=not_true)  # type: ignore[arg-type]
    assert not marker.exists()
    entry.record(allow_pickle=True)  # opted in: the pickle is loaded (here: creates a file)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
def test_replay_leaves_a_planted_pickle_in_the_queue_and_replays_the_rest(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    dlq = SqliteDLQ(tmp_path / "dlq.db") if kind == "sqlite" else JsonlDLQ(tmp_path / "dlq.jsonl")
    with dlq:
        run_batches([{"n": 1}, {"n": 2}], fail_all, dlq=dlq, retry=ONCE)
        dlq.send([planted_entry(marker)])
        seen: list[Any] = []
        with pytest.raises(PickleNotAllowedError,
                           match=r"(?s)1 dead letters.*stay in the queue.*allow_pickle=True") as info:
            replay(dlq, seen.append, retry=ONCE)
        assert not marker.exists()
        assert seen == [{"n": 1}, {"n": 2}]
        report = info.value.report
        assert (report.removed, report.kept, report.pickle_refused) == (2, 0, 1)
        assert [e.id for e in dlq.list()] == ["planted-99"]


def test_replay_loads_pickles_when_allowed(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        run_batches([Point(1), Point(2)], fail_all, dlq=dlq, retry=ONCE, pickle_payloads=True)
        seen: list[Any] = []
        report = replay(dlq, seen.append, retry=ONCE, allow_pickle=True)
        assert (report.removed, report.pickle_refused, seen) == (2, 0, [Point(1), Point(2)])


def test_replay_allow_pickle_must_be_a_bool(tmp_path: Path) -> None:
    with SqliteDLQ(tmp_path / "dlq.db") as dlq, pytest.raises(ConfigTypeError, match="allow_pickle"):
        replay(dlq, print, allow_pickle="yes")  # type: ignore[arg-type]


def test_cli_dlq_retry_needs_allow_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    marker = tmp_path / "code-ran"
    url = f"sqlite:///{tmp_path / 'dlq.db'}"
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        dlq.send([planted_entry(marker)])
        run_batches([{"id": 2}], fail_all, dlq=dlq, retry=ONCE)

    refused = CliRunner().invoke(main, ["dlq", "retry", "--fn", "cli_fns:echo", "--dlq", url, "-q"],
                                 catch_exceptions=False)
    assert refused.exit_code == 1
    assert "--allow-pickle" in refused.stderr and "runs code" in refused.stderr
    assert not marker.exists()
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        assert [e.id for e in dlq.list()] == ["planted-99"]  # the json entry was replayed

    allowed = CliRunner().invoke(main, ["dlq", "retry", "--fn", "cli_fns:echo", "--dlq", url, "-q",
                                        "--allow-pickle"], catch_exceptions=False)
    assert marker.exists() and allowed.exit_code == 0, allowed.output


def test_a_pickle_run_reads_its_own_failed_records_back_from_a_durable_dlq(tmp_path: Path) -> None:
    # pickle_payloads=True is the writer's opt-in: the run's own report may load what it wrote.
    with SqliteDLQ(tmp_path / "dlq.db") as dlq:
        report = run_batches([Point(1), Point(2)], fail_all, dlq=dlq, retry=ONCE, pickle_payloads=True)
        assert list(report.failed) == [Point(1), Point(2)]
