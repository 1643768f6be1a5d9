"""How a ``batchguard run --job`` (or ``jobs resume``) ends: the job's totals over all its runs,
the job's open dead letters in the next steps, and an exit code for the job as a whole.

A run's report counts only the records that run took on: a resume whose own records all
succeeded would otherwise read "every record succeeded" (and exit 0) while the job still has
dead letters from its earlier runs.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

import click

from .._report.model import CliContext, build
from .._report.steps import NextStep
from .._urls import redact
from ..errors import BatchguardError
from ..jobs import JobStatus, job_status
from ..results import BatchReport
from .jobs_status import job_dlq
from .options import DEFAULT_URL, EXIT_INCOMPLETE, EXIT_OK, url_flag
from .report import print_model

__all__ = ["JobEnding", "job_ending"]


@dataclass(frozen=True)
class JobEnding:
    """The job after a run: its state, how many of its dead letters are open, and what to do."""

    state: JobStatus
    open_entries: int
    earlier_steps: tuple[NextStep, ...]
    """Review and retry steps for open dead letters the run's report does not show (this run
    dead-lettered none of them)."""

    @property
    def exit_code(self) -> int:
        """0 only for a completed job with no open dead letter (resolved ones were skipped on
        purpose), else 1."""
        return EXIT_OK if self.state.status == "completed" and self.open_entries == 0 else EXIT_INCOMPLETE

    def summary(self) -> str:
        """The job's line after the report."""
        state = self.state
        of = f"/{state.batches_total}" if state.batches_total else ""
        line = (f"Job {state.name!r}: {state.status}, {state.batches_done}{of} batches done, "
                f"{state.succeeded:,} succeeded, {state.failed:,} dead-lettered in all runs.")
        if self.earlier_steps:
            line += (f"\nNot every record of the job succeeded: {self.open_entries:,} of its dead letters are "
                     "open, from earlier runs (this run's records all succeeded); see NEXT STEPS.")
        return line

    def nothing_to_do(self) -> str:
        """What a run of a finished job says: it did nothing, and where the job stands."""
        state = self.state
        text = (f"Job {state.name!r} is already {state.status} ({state.batches_done} batches, "
                f"{state.succeeded:,} succeeded, {state.failed:,} dead-lettered, finished "
                f"{state.finished_at}): nothing to do; --force runs it again from scratch.")
        for step in self.earlier_steps:
            text += f"\n  {step.action}: {step.command}"
        return text

    def add_to(self, data: dict[str, Any]) -> None:
        """The job's state (``"job"``) and its steps into a report's JSON."""
        data["job"] = self.state.to_dict()
        data["job"]["open_dead_letters"] = self.open_entries
        data["next_steps"] = [*data.get("next_steps", ()),
                              *({"action": s.action, "command": s.command} for s in self.earlier_steps)]

    def print_report(self, report: BatchReport, *, dlq_url: str | None, store_url: str,
                     fn_spec: str | None) -> None:
        """The run's report (as ``cli.report.print_report`` prints it) with the job's steps."""
        model = build(report, cli=CliContext(dlq_url=None if dlq_url is None else redact(dlq_url),
                                             store_url=redact(store_url), default_url=DEFAULT_URL,
                                             fn_spec=fn_spec))
        print_model(dataclasses.replace(model, next_steps=model.next_steps + self.earlier_steps))
        click.echo(self.summary())


def job_ending(job: str, report: BatchReport, *, store_url: str, dlq_url: str | None,
               fn_spec: str | None) -> JobEnding:
    """Where ``job`` stands after ``report``'s run: its state and open dead letters (counted in
    its DLQ: ``dlq_url``, else the one it was started with)."""
    state = job_status(job, store=store_url)
    try:
        with job_dlq(state, store_url, dlq_url) as dlq:
            open_entries = state.failed if dlq.queue is None else dlq.queue.count(job_id=job, status="open")
            dlq_flag = "" if dlq.url is None or dlq.url == redact(store_url) else url_flag("--dlq", dlq.url)
    except (click.ClickException, BatchguardError):
        # The run is over and its report is due: count the store's dead-lettered records instead.
        open_entries = state.failed
        dlq_flag = "" if dlq_url is None else url_flag("--dlq", dlq_url)
    steps: tuple[NextStep, ...] = ()
    if open_entries and report.failure_count == 0:
        name = shlex.quote(job)
        fn = " --fn MODULE:CALLABLE" if fn_spec is None else f" --fn {shlex.quote(fn_spec)}"
        steps = (NextStep(f"review the job's {open_entries:,} open dead letters (from earlier runs)",
                          f"batchguard dlq list --job {name}{dlq_flag}"),
                 NextStep("retry them once the cause is fixed",
                          f"batchguard jobs retry-failed {name}{fn}{url_flag('--store', store_url)}{dlq_flag}"))
    return JobEnding(state, open_entries, steps)
