"""A classifier callable that raises is logged once per (its error, the exception's type) and
run, not once per failure (hostile tester, issue 7: a broken classifier over 300 failures
logged 300 identical ERROR lines per run)."""

from __future__ import annotations

import logging

import pytest

import batchguard
from batchguard import Classifier


def _broken(exc: BaseException) -> None:
    raise RuntimeError("classifier bug")


def _fn(record: int) -> int:
    if record % 2:
        raise ValueError("bad")
    raise KeyError("bad")


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_classifier_errors_are_logged_once_per_kind(engine: str, concurrency: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(300), _fn, engine=engine, concurrency=concurrency,
                                        classifier=Classifier.default().with_callable(_broken))
    lines = [r.getMessage() for r in caplog.records if "classifier raised" in r.getMessage()]
    assert len(lines) == 2, lines[:4]
    assert report.failure_count == 300
    assert {e.error_class for e in report.errors} == {"permanent"}
