"""Resumable jobs: a job store keeps each job's state and a checkpoint per finished batch.

``run_batches(records, fn, job="nightly", store="sqlite:///jobs.db")`` runs a *job*. The store
records the job (status, totals, an input fingerprint, the configuration) and commits every
batch once all its records are final. Running the same job again resumes it: finished batches
are read past, not run. A completed job does not run again unless ``force=True``.

Crash safety. A batch is marked done only after its dead letters are durable:

* when the store and the DLQ live in the same SQLite file, or the same PostgreSQL database, the
  batch's DLQ entries and its checkpoint are committed in **one transaction**;
* otherwise the entries are sent first and the checkpoint committed second, so a crash between
  the two leaves the batch not done (it reruns), never done with entries missing.

DLQ entry ids are derived from (job, stage, record index), and ``send`` upserts, so a batch that
reruns replaces its entries instead of duplicating them; when a rerun batch completes, the
entries of its records that now succeeded are removed. Processing is therefore
**at-least-once for the batches in flight at a crash** (their records may be given to ``fn``
again) and exactly-once for everything recorded: each record ends succeeded or with exactly
one DLQ entry.

>>> import os, tempfile
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "jobs.db")
>>> from batchguard import run_batches
>>> run_batches(range(10), lambda x: x, batch_size=4, job="doc", store=url).status
'complete'
>>> s = job_status("doc", store=url)
>>> s.status, s.succeeded, s.batches_done, s.percent_complete
('completed', 10, 3, 100.0)
>>> run_batches(range(10), lambda x: x, batch_size=4, job="doc", store=url).skipped_batches
3
"""

from ..errors import JobNotFoundError, JobStoreUnavailableError
from .fingerprint import FINGERPRINT_VERSION, fingerprint_records
from .ledger import BatchRow, BatchSpan, BatchTable, RecordStatus, batch_rows, find_record, job_batches, record_status
from .postgres import PostgresJobStore
from .run import run_job
from .sqlite import SqliteJobStore
from .status import JobState, JobStatus
from .store import DEFAULT_STORE_URL, JobStore, job_status, list_jobs, open_job_store, replay_store

__all__ = [
    "DEFAULT_STORE_URL",
    "FINGERPRINT_VERSION",
    "BatchRow",
    "BatchSpan",
    "BatchTable",
    "JobNotFoundError",
    "JobState",
    "JobStatus",
    "JobStore",
    "JobStoreUnavailableError",
    "PostgresJobStore",
    "RecordStatus",
    "SqliteJobStore",
    "batch_rows",
    "find_record",
    "fingerprint_records",
    "job_batches",
    "job_status",
    "list_jobs",
    "open_job_store",
    "record_status",
    "replay_store",
    "run_job",
]
