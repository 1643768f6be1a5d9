"""What a job keeps of its succeeded records, so they can be rolled back later.

With ``run_batches(..., job=..., keep_outcomes=True)`` each batch's checkpoint also stores, for
every record of the batch that succeeded, its position, id, the record and what ``fn``
returned (table ``job_outcomes``, ``{prefix}job_outcomes`` on PostgreSQL), in the checkpoint's
transaction. ``batchguard rollback JOB_OR_RUN --fn MODULE:UNDO`` (:mod:`batchguard.jobs.rollback`)
reads them back and undoes each one.

The record and the value are stored as a DLQ payload is (:func:`~batchguard.dlq.codec.encode_payload`):
JSON when they are plain data, pickle only when the run opted in (``pickle_payloads=True``) and
read back only when the reader opts in too (``allow_pickle``), else their ``repr``, which cannot
be undone (the rollback says so for that record).
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..dlq.codec import Fallbacks, encode_payload, encode_record_id
from ..errors import PickleNotAllowedError

__all__ = ["OUTCOME_COLUMNS", "KeptOutcome", "encode_outcome", "outcomes_table_sql"]

OUTCOME_COLUMNS: Final = ("job, record_index, batch_index, run_id, record_id, record, record_encoding, "
                          "value, value_encoding")


def outcomes_table_sql(table: str, *, postgres: bool) -> str:
    """The CREATE TABLE of the outcomes table (idempotent)."""
    integer = "bigint" if postgres else "INTEGER"
    text = "text" if postgres else "TEXT"
    tail = "" if postgres else " WITHOUT ROWID"
    return (f"CREATE TABLE IF NOT EXISTS {table} (job {text} NOT NULL, record_index {integer} NOT NULL, "
            f"batch_index {integer} NOT NULL, run_id {text} NOT NULL, record_id {text}, "
            f"record {text} NOT NULL, record_encoding {text} NOT NULL, value {text} NOT NULL, "
            f"value_encoding {text} NOT NULL, PRIMARY KEY (job, record_index)){tail}")


def encode_outcome(job: str, run_id: str, batch: int, position: int, record: Any, value: Any, *,
                   record_id: Any, pickle_payloads: bool, fallbacks: Fallbacks) -> tuple[Any, ...]:
    """One row of the outcomes table (see :data:`OUTCOME_COLUMNS`)."""
    stored_record, record_encoding = encode_payload(record, pickle_payloads=pickle_payloads, fallbacks=fallbacks)
    stored_value, value_encoding = encode_payload(value, pickle_payloads=pickle_payloads, fallbacks=fallbacks)
    rid = encode_record_id(record_id, fallbacks)
    return (job, position, batch, run_id, json.dumps(rid), json.dumps(stored_record), record_encoding,
            json.dumps(stored_value), value_encoding)


def _decoded(stored: str, encoding: str, what: str, position: int, *, allow_pickle: bool) -> Any:
    payload = json.loads(stored)
    if encoding == "json":
        return payload
    if encoding == "pickle":
        if not allow_pickle:
            raise PickleNotAllowedError(
                f"the {what} of record {position} is stored as pickle, which is not loaded without "
                "an explicit opt-in (loading a pickle runs code; anyone who can write to the store "
                "could have put it there): pass allow_pickle=True (--allow-pickle) if you trust them")
        return pickle.loads(base64.b64decode(payload))  # noqa: S301 - the reader opted in
    # The store does not say whether pickle was tried: the advice must hold either way.
    raise ValueError(f"the {what} of record {position} was stored as its repr ({payload!r}), which "
                     "cannot be turned back into it: it is not JSON, and pickle (tried only with "
                     "pickle_payloads=True) could not store it either; have fn return what undo "
                     "needs as plain data (an id, a dict), or a picklable object with pickle_payloads=True")


@dataclass(frozen=True, slots=True)
class KeptOutcome:
    """A succeeded record as the store keeps it (its record and value still encoded)."""

    job: str
    position: int
    batch: int
    run_id: str
    record_id: Any
    stored_record: str
    record_encoding: str
    stored_value: str
    value_encoding: str

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> KeptOutcome:
        job, position, batch, run_id, record_id, record, record_encoding, value, value_encoding = row
        return cls(str(job), int(position), int(batch), str(run_id),
                   None if record_id is None else json.loads(record_id), str(record), str(record_encoding),
                   str(value), str(value_encoding))

    def record(self, *, allow_pickle: bool = False) -> Any:
        """The record (PickleNotAllowedError, ValueError when it cannot be decoded)."""
        return _decoded(self.stored_record, self.record_encoding, "record", self.position,
                        allow_pickle=allow_pickle)

    def value(self, *, allow_pickle: bool = False) -> Any:
        """What ``fn`` returned for it."""
        return _decoded(self.stored_value, self.value_encoding, "value", self.position,
                        allow_pickle=allow_pickle)
