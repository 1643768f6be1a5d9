"""Issue 9, small defects a hostile tester found in the operator's workflow (F2).

* ``dlq show`` / ``skip`` / ``remove`` / ``retry`` with an unknown id told the user to run
  ``batchguard dlq list --status all`` without the ``--dlq`` they had given, so the command they
  copied listed the default queue, not theirs: it now carries the ``--dlq``, shell-quoted.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from batchguard import RetryPolicy, run_batches
from batchguard.cli.run import _interrupted
from test_cli import invoke


def always_fails(record: int) -> int:
    raise ValueError(f"record {record} is invalid")


@pytest.fixture
def spaced_queue(workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'my queue.db'}"
    run_batches(range(3), always_fails, dlq=url, retry=RetryPolicy(max_attempts=1))
    return url


@pytest.mark.parametrize("command", [
    ["show", "ffffffff"], ["show", "fff"], ["skip", "ffffffff", "--reason", "x"], ["remove", "ffffffff"],
    ["retry", "ffffffff", "--fn", "cli_fns:echo"]])
def test_unknown_id_message_names_the_dlq_given(spaced_queue: str, command: list[str]) -> None:
    result = invoke("dlq", *command, "--dlq", spaced_queue)
    assert result.exit_code == 2, result.output
    suggested = f"batchguard dlq list --status all --dlq {shlex.quote(spaced_queue)}"
    assert suggested in result.output, result.output
    # The suggested command, run as printed, lists the entries of that queue.
    listed = invoke(*shlex.split(suggested)[1:])
    assert listed.exit_code == 0 and "record 0 is invalid" in listed.output, listed.output


@pytest.mark.parametrize(("dlq", "postgres_hint", "redis_hint"), [
    ("redis://:s3cret@127.0.0.1:6379/0", False, True),
    ("postgresql://app:s3cret@127.0.0.1:5432/jobs", True, False),
    ("host=127.0.0.1 password=s3cret dbname=jobs", True, False),
])
def test_ctrl_c_password_hint_is_the_one_of_the_url_scheme(
        workdir: Path, dlq: str, postgres_hint: bool, redis_hint: bool) -> None:
    # After Ctrl-C of a job whose --dlq hides a password, the resume command shows *** and a
    # hint says how to supply it: PGPASSWORD/~/.pgpass are libpq's; redis-py reads neither.
    message, command = _interrupted("nightly", f"sqlite:///{workdir / 'jobs.db'}", dlq)
    assert command is not None and "***" in command and "s3cret" not in message
    assert ("PGPASSWORD" in message) is postgres_hint, message
    assert ("Redis one can only be given in the URL" in message) is redis_hint, message
