"""What a batch task shows of itself (issue 11 item 3): a task is shipped to workers, where Dask
and a user's logging may print it, so its repr leaves out the DLQ URL (a password in it) and the
source's storage options (credentials), as the run's own output does."""

from __future__ import annotations

import batchguard
from batchguard._run.plan import make_plan
from batchguard.executors import BatchTask
from batchguard.executors.splits import ParquetSplit
from batchguard.sources.files import SourceFile


def double(x: int) -> int:
    return x * 2


def test_a_task_never_shows_its_dlq_password_nor_its_storage_credentials() -> None:
    file = SourceFile(url="s3://AKIDEXAMPLE:wJalrXUtnFEMI-s3cret@bucket/a.parquet", shown="s3://bucket/a.parquet",
                      size=1, version="v", compression=None, remote=True)
    split = ParquetSplit(files=(file,),
                         options={"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI-s3cret"}, pieces=((0, 0, 3),))
    task = BatchTask(run_id="r", job_id=None, batch_index=0, first_index=0, records=[], split=split,
                     fn=double, config=make_plan([1], double).config, classifier=batchguard.Classifier.default(),
                     stage="process", id_of=None, pickle_payloads=False, bulk=False,
                     dlq_url="postgresql://batchguard:pg-s3cret@db.internal/ops")
    for shown in (repr(task), str(task), repr(split)):
        assert "s3cret" not in shown and "AKIDEXAMPLE" not in shown
    assert "batch_index=0" in repr(task)  # what identifies the task is still there
