"""``batchguard rollback JOB_OR_RUN --fn MODULE:UNDO``: undo what a finished job (or one run
of it) succeeded on, as kept with ``--keep-outcomes`` (``keep_outcomes=True``); see
:mod:`batchguard.jobs.rollback`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import click

from ..errors import BatchguardError
from ..jobs.rollback import rollback as rollback_job
from .callables import load_callable
from .options import EXIT_INCOMPLETE, cannot_start, retry_policy, store_option

__all__ = ["rollback"]


@click.command()
@click.argument("name", metavar="JOB_OR_RUN")
@click.option("--fn", "fn_spec", required=True, metavar="MODULE:UNDO",
              help="undo(record, value): reverses what the job's fn did for a record that returned value.")
@store_option
@click.option("--batch", type=click.IntRange(min=0), default=None, metavar="N",
              help="Roll back this batch only (default: every batch, newest first).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Tries per undo (RECOVERABLE and TRANSIENT errors are retried).")
@click.option("--base-delay", type=float, default=1.0, show_default=True,
              help="Seconds before the first retry of an undo (doubling).")
@click.option("--allow-pickle", is_flag=True,
              help="Load records and values the run stored as pickle (pickle_payloads=True); "
                   "only if you trust every writer of the store.")
def rollback(name: str, fn_spec: str, store_url: str, batch: int | None, max_attempts: int,
             base_delay: float, allow_pickle: bool) -> None:
    """Undo what a job (or the run JOB_OR_RUN) succeeded on, newest batch first.

    The job must have kept its succeeded records: `batchguard run ... --job NAME --keep-outcomes`
    (run_batches(..., job=, keep_outcomes=True)). Each undone record is forgotten; each batch
    wholly undone runs again on `batchguard jobs resume NAME`. An undo that still fails after its
    retries keeps its record (exit 1): running rollback again retries what is left.

    \b
    batchguard rollback nightly --fn mymodule:undo
    batchguard rollback nightly --fn mymodule:undo --batch 3
    """
    undo = cast(Callable[[Any, Any], Any], load_callable(fn_spec))  # called as undo(record, value)
    policy = retry_policy(max_attempts, base_delay)
    try:
        report = rollback_job(name, undo, store=store_url, batch=batch, allow_pickle=allow_pickle, retry=policy)
    except BatchguardError as exc:
        cannot_start(exc)
    click.echo(report.summary())
    if not report.ok:
        raise click.exceptions.Exit(EXIT_INCOMPLETE)
