"""Ready ``on_progress`` displays: a tqdm bar, or the per-batch rich dashboard the CLI shows.

>>> import batchguard, batchguard.progress
>>> report = batchguard.run_batches(range(1000), str, on_progress=batchguard.progress.tqdm(disable=True))

Each closes itself on the run's last snapshot (``BatchProgress.final``). A run that raises sends
no last snapshot: use the display as a context manager to close it however the run ends::

    with batchguard.progress.rich() as show:
        batchguard.run_batches(records, fn, on_progress=show)

A generator has no length: pass ``total=`` to ``run_batches`` for a percentage and an ETA.
"""

from __future__ import annotations

import atexit
import contextlib
from types import TracebackType
from typing import Any, Self

from rich.console import Console

from ._urls import require_module
from .cli.progress import ProgressView
from .results import BatchProgress

__all__ = ["RichProgress", "TqdmProgress", "rich", "tqdm"]


class _Closing:
    """Closes on the final snapshot, or on leaving its ``with`` block."""

    closed = False
    progress_every_batch = False
    """A snapshot at most every 0.1 s, not one per batch end: the display draws at its own pace
    (finished batches still come, in each snapshot's ``finished``)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class TqdmProgress(_Closing):
    """A tqdm bar of records: ``n`` the records final so far, ``total`` the run's (None for a
    generator without ``total=``), the failures, retries in wait and the batch in the postfix.
    The bar is created at the first snapshot, with the keyword arguments given to
    :func:`tqdm`."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self._module = require_module("tqdm", needed_by="batchguard.progress.tqdm()", extra="tqdm")
        self._kwargs = {"unit": "rec", "dynamic_ncols": True, **tqdm_kwargs}
        self.bar: Any = None

    def __call__(self, progress: BatchProgress) -> None:
        if self.closed:
            return
        if self.bar is None:
            self.bar = self._module.tqdm(total=progress.total, **self._kwargs)
        bar = self.bar
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total  # total= was wrong: the run corrected it
        bar.n = progress.records_processed
        postfix: dict[str, object] = {"failed": progress.failed, "retrying": progress.retrying}
        if progress.breaker_state != "closed":
            postfix["breaker"] = progress.breaker_state
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()
        if progress.final:
            self.close()

    def close(self) -> None:
        """Close the bar (done at the run's last snapshot; again is a no-op)."""
        if not self.closed:
            self.closed = True
            if self.bar is not None:
                self.bar.close()


class RichProgress(_Closing):
    """The CLI's live dashboard (a row per batch, the status counts, rate, ETA, the breaker)
    as an ``on_progress`` display: drawn by rich on its own thread from the latest snapshot;
    plain lines when ``console`` is not a terminal. It starts at the first snapshot."""

    def __init__(self, *, title: str = "batchguard", console: Console | None = None,
                 concurrency: int | None = None, mode: str | None = None) -> None:
        self.view = ProgressView(title=title, concurrency=concurrency, mode=mode,
                                 console=console or Console(stderr=True))
        self._stack = contextlib.ExitStack()
        self._started = False

    def __call__(self, progress: BatchProgress) -> None:
        if self.closed:
            return
        if not self._started:
            self._started = True
            self._stack.enter_context(self.view.running())
            # A run that raises (Ctrl-C) sends no final snapshot: without a `with` block the
            # display would run on, and be stopped by a finalizer while the interpreter tears
            # down ("Exception ignored ... sys.meta_path is None"). Stop it at exit instead.
            atexit.register(self.close)
        self.view(progress)
        if progress.final:
            self.close()

    def close(self) -> None:
        """Stop the display, leaving its last picture (done at the run's last snapshot)."""
        if not self.closed:
            self.closed = True
            atexit.unregister(self.close)
            self._stack.close()


def tqdm(**tqdm_kwargs: Any) -> TqdmProgress:
    """``on_progress=batchguard.progress.tqdm(desc="import", leave=False)``: a tqdm bar
    (``pip install "batchguard[tqdm]"``); the keyword arguments go to ``tqdm.tqdm``."""
    return TqdmProgress(**tqdm_kwargs)


def rich(*, title: str = "batchguard", console: Console | None = None,
         concurrency: int | None = None, mode: str | None = None) -> RichProgress:
    """``on_progress=batchguard.progress.rich()``: the per-batch live dashboard, on stderr
    (or ``console``); ``concurrency`` and ``mode`` are shown in its header."""
    return RichProgress(title=title, console=console, concurrency=concurrency, mode=mode)
