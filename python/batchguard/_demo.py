"""The dataset and callbacks of ``batchguard demo``.

``process`` rejects some records for good (a bad email: ValueError; no amount: KeyError), and
fails some others once with a ConnectionError, which the retry policy absorbs. ``process_fixed``
is the "fixed" version an operator would replay the dead letters with. ``validate`` is the
check of the phases (``--validate batchguard._demo:validate --mode dry-run``): it blocks exactly
the records ``process`` rejects for good, and warns about a zero amount (every 1000th record).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._files import FILE_MODE
from .validation.issues import ValidationIssue

__all__ = ["CORRUPT_EVERY", "FLAKY_EVERY", "process", "process_fixed", "validate", "validate_fixed",
           "write_dataset"]

BAD_EMAIL_EVERY = 157
NO_AMOUNT_EVERY = 211
FLAKY_EVERY = 89
CORRUPT_EVERY = 6_997
WORK_S = 0.000_5
"""Time each record "waits on I/O": the demo shows a live run, so it must not finish instantly."""

_seen_lock = threading.Lock()
_seen_flaky: set[Any] = set()


def write_dataset(path: Path, records: int) -> int:
    """Write ``records`` JSON lines to ``path``, a few of them corrupt; returns the corrupt count."""
    corrupt = 0
    # The records are personal-looking data (emails, amounts): private, like every file that
    # holds records.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with open(fd, "w", encoding="utf-8") as out:
        for i in range(records):
            if i and i % CORRUPT_EVERY == 0:
                out.write(f'{{"id": {i}, "email": "user{i}@example.com", "amount": \n')
                corrupt += 1
                continue
            record: dict[str, Any] = {"id": i, "email": f"user{i}@example.com", "amount": (i * 37) % 1000}
            if i % BAD_EMAIL_EVERY == 3:
                record["email"] = f"user{i} at example.com"
            if i % NO_AMOUNT_EVERY == 5:
                del record["amount"]
            out.write(json.dumps(record))
            out.write("\n")
    return corrupt


def process(record: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's callback: validates a record, failing the way real services do."""
    time.sleep(WORK_S)
    rid = record["id"]
    if rid % FLAKY_EVERY == 11:
        with _seen_lock:
            first = rid not in _seen_flaky
            _seen_flaky.add(rid)
        if first:
            raise ConnectionError(f"connection reset by peer while saving record {rid} (simulated)")
    email = record["email"]
    if "@" not in email:
        raise ValueError(f"invalid email address {email!r}")
    return {"id": rid, "email": email.lower(), "amount": record["amount"]}


def process_fixed(record: Mapping[str, Any]) -> dict[str, Any]:
    """``process`` after the fix: repairs " at " emails and defaults a missing amount to 0."""
    if not isinstance(record, Mapping):
        raise TypeError(f"expected a JSON object, got {type(record).__name__}: {str(record)[:60]!r}")
    email = str(record["email"]).replace(" at ", "@")
    return {"id": record["id"], "email": email.lower(), "amount": record.get("amount", 0)}


def validate(record: Any) -> list[ValidationIssue]:
    """The demo's validation rules: a bad email or no amount blocks the record (``process``
    would reject it for good); a zero amount is a warning (it runs, charging nothing)."""
    if not isinstance(record, Mapping):
        return [ValidationIssue("<record>", f"not a JSON object: {type(record).__name__}",
                                "fix the input line so it holds one JSON object")]
    issues = []
    email = record.get("email")
    if not isinstance(email, str) or "@" not in email:
        issues.append(ValidationIssue("email", f"invalid email address {email!r}",
                                      "correct the address in the source system (it needs an @, "
                                      "e.g. ' at ' written out)"))
    if "amount" not in record:
        issues.append(ValidationIssue("amount", "missing required field \"amount\"",
                                      "set the amount in the source system (0 if nothing is due)"))
    elif record["amount"] == 0:
        issues.append(ValidationIssue("amount", "amount is 0", None, severity="warning",
                                      impact="the record is saved with nothing to charge"))
    return issues


def validate_fixed(record: Any) -> list[ValidationIssue]:
    """The demo's rules for ``process_fixed``, which repairs " at " emails and a missing amount:
    the check a replay of the blocked records runs again (``dlq retry --validate``) once the fix
    is deployed, so only those the fix really repairs reach it."""
    if isinstance(record, Mapping):
        email = record.get("email")
        record = {**record, "amount": record.get("amount", 0),
                  "email": email.replace(" at ", "@") if isinstance(email, str) else email}
    return validate(record)
