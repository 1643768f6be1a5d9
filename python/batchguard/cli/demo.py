"""``batchguard demo``: a live run over generated data, then where to look next."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from .. import _demo
from .._files import private_dir
from .dlq import open_queue
from .options import EXIT_INTERRUPTED, EXIT_OK
from .run import execute_run, open_source

__all__ = ["demo"]


@click.command(short_help="A live run over generated data: start here.")
@click.option("--records", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to put the dataset and the database [default: a new temporary directory].")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def demo(records: int, directory: str | None, quiet: bool) -> None:
    """Process a generated dataset with failing, flaky and corrupt records, and show the report."""
    where = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="batchguard-demo-"))
    private_dir(where)  # it will hold records: 0700 when batchguard creates it
    data = where / "demo.jsonl"
    database = where / "demo.db"
    for leftover in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        leftover.unlink(missing_ok=True)
    corrupt = _demo.write_dataset(data, records)
    url = f"sqlite:///{database.resolve()}"
    click.echo(f"batchguard demo: {records:,} records in {data}\n"
               f"  about 1 in {_demo.BAD_EMAIL_EVERY} has a bad email and 1 in {_demo.NO_AMOUNT_EVERY} "
               f"no amount (they fail for good), 1 in {_demo.FLAKY_EVERY} fails once with a "
               f"ConnectionError (retried), {corrupt} lines are corrupt JSON.\n")
    code = execute_run(source=open_source(str(data), "jsonl"), fn=_demo.process,
                       fn_spec="batchguard._demo:process", dlq_url=None, job="demo", store_url=url,
                       batch_size=1000, concurrency=8, max_attempts=3, base_delay=0.01, force=False,
                       quiet=quiet, title="demo")
    if code == EXIT_INTERRUPTED:
        sys.exit(code)
    with open_queue(url) as queue:
        first = queue.list(limit=1)
    click.echo("\nExplore what happened:\n"
               f"  batchguard dlq list --dlq {url}\n"
               f"  batchguard dlq show {first[0].id if first else 'ID'} --dlq {url}\n"
               f"  batchguard jobs status demo --store {url}\n"
               f"  batchguard dlq retry --fn batchguard._demo:process_fixed --dlq {url}")
    sys.exit(EXIT_OK)
