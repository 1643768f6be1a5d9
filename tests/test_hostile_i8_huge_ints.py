"""An int too long for Python to write as text (past ``sys.get_int_max_str_digits()``, 4300
digits by default) is a record, or a record id, like any other: it is dead-lettered, and the
report renders, instead of the run dying with "Exceeds the limit (4300 digits) for integer
string conversion" from the DLQ encoder (hostile tester, issue 8: the codec promises that "an
entry must always be storable, whatever the failed record holds").

Before the fix: every durable backend raised that ValueError out of run_batches at the first
dead letter (the payload was judged plain JSON, then json.dumps could not write it), and with
``id_of`` returning such an int even the in-memory report's ``summary()`` raised it.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import batchguard
from batchguard.dlq.codec import dumps, encode_payload, encode_record_id

# Twice the default limit; a process that lifted the limit (0) cannot show the problem.
HUGE = 10 ** (2 * max(sys.get_int_max_str_digits(), 4300))


def _fail(record: Any) -> Any:
    raise ValueError("bad record")


def test_codec_never_raises_on_a_huge_int() -> None:
    payload, encoding = encode_payload(HUGE, pickle_payloads=False)
    assert encoding == "repr" and isinstance(payload, str)
    payload, encoding = encode_payload({"n": [HUGE]}, pickle_payloads=False)
    assert encoding == "repr" and isinstance(payload, str)
    assert isinstance(encode_record_id(HUGE), str)
    assert isinstance(encode_record_id(-HUGE), str)
    # An int the limit allows keeps its digits, as before.
    assert encode_record_id(2**70) == str(2**70)
    assert encode_payload(2**70, pickle_payloads=False) == (2**70, "json")


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("backend", ["none", "memory", "sqlite", "jsonl"])
@pytest.mark.parametrize("by_id", [False, True])
def test_a_huge_int_record_is_dead_lettered(tmp_path: Path, engine: str, backend: str,
                                            by_id: bool) -> None:
    dlq = {"none": None, "memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/d.db",
           "jsonl": f"jsonl:///{tmp_path}/d.jsonl"}[backend]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = batchguard.run_batches([1, HUGE, [HUGE], 4], _fail, dlq=dlq, engine=engine,
                                        id_of=(lambda r: r) if by_id else None,
                                        retry=batchguard.RetryPolicy(max_attempts=1))
        assert report.failure_count == 4 and report.pending_count == 0
        assert report.success_count + report.failure_count + report.pending_count == report.total
        entries = {e.record_index: e for e in report.dead_letters}
        assert entries[0].payload == 1 and entries[3].payload == 4
        assert entries[1].payload_encoding == "repr" and entries[2].payload_encoding == "repr"
        for entry in entries.values():
            dumps(entry)  # storable
        text = report.summary()
        json.dumps(report.to_json(), allow_nan=False)
        json.dumps(report.to_dict(), allow_nan=False)
    # every record failed: the report says so (issue 9), and it rendered without raising
    assert text.startswith("BATCH FAILED (no record succeeded)")
