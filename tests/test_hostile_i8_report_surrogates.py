"""A report whose error messages hold lone surrogates (a message built from a file name decoded
with ``surrogateescape``, say) prints: ``print(report)``, ``summary()`` and ``to_json()`` show
them as U+FFFD, as every DLQ stores them (hostile tester, issue 8).

Before the fix a run without a DLQ (or with a MemoryDLQ) kept the raw message in its report
model, so ``print(report)`` raised UnicodeEncodeError ("surrogates not allowed") on any UTF-8
stream, and ``json.dumps(report.to_json(), ensure_ascii=False).encode()`` did too, while the
same run with a durable DLQ printed fine.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import pytest

import batchguard
from batchguard import RetryPolicy


def _fail(record: Any) -> Any:
    if record == 1:
        raise KeyError("caf\udce9")
    raise ValueError(f"cannot open /data/caf\udce9.csv (record {record})")


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("dlq", [None, "memory://"])
def test_a_report_with_surrogates_in_its_errors_prints(engine: str, dlq: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = batchguard.run_batches(["caf\udce9", 1, 2], _fail, engine=engine, dlq=dlq,
                                        id_of=lambda r: r, retry=RetryPolicy(max_attempts=1))
    assert report.failure_count == 3
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # what print() writes to
    print(report, file=stream)
    stream.flush()
    text = report.summary()
    text.encode("utf-8")
    assert "caf\ufffd.csv" in text
    json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
