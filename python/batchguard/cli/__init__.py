"""The ``batchguard`` command: run a callback over a file, manage dead letters and jobs, demo.

Exit codes: 0 the run completed (every record succeeded); 1 it ended partial_success, failed
or aborted; 2 it could not start (bad usage, unreadable input, a ``--fn`` that does not import,
a bad or unreachable DLQ / job store, a job name reused with different input); 130 interrupted.

One module per command group (``run``, ``dlq``, ``jobs``, ``rollback``, ``demo``); what they share lives in
``options`` (exit codes, options, URL helpers), ``console`` (terminal, tables), ``callables``
(``--fn``), ``progress`` (the live display) and ``report`` (the final report).
"""

from __future__ import annotations

import click

from .. import __version__
from .demo import demo
from .dlq import dlq
from .jobs import jobs
from .rollback import rollback
from .run import run

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchguard")
def main() -> None:
    """Fault-tolerant batch processing: run a callback over records, isolate and retry failures,
    keep dead letters, resume jobs.

    \b
    Start here:   batchguard demo
    Run a file:   batchguard run records.jsonl --fn mymodule:process --job nightly
    """


main.add_command(run)
main.add_command(dlq)
main.add_command(jobs)
main.add_command(rollback)
main.add_command(demo)
