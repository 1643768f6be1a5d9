"""``executor=``: what a run accepts as its executor."""

from __future__ import annotations

from ..errors import ConfigError, ConfigTypeError
from .dask import DaskExecutor, is_dask_client
from .protocol import Executor

__all__ = ["as_executor", "check_executor"]


def as_executor(value: object) -> Executor:
    """A ``dask.distributed.Client`` wrapped in a :class:`DaskExecutor`, or ``value`` itself when
    it already is an :class:`Executor`; ConfigTypeError for anything else."""
    if is_dask_client(value):
        return DaskExecutor(value)
    if isinstance(value, Executor):
        return value
    raise ConfigTypeError(f"executor must be a dask.distributed.Client or a batchguard.executors.Executor, "
                          f"got {type(value).__name__}")


def check_executor(value: object, *, is_async: bool, mode: str, engine: str, key_of: object,
                   hooks: object, metrics: object, alerts: object, compensation: object) -> Executor | None:
    """``executor=`` checked against the rest of the run (``make_plan`` calls it): None runs the
    batches here. Each combination a run on an executor cannot honour is refused, naming why."""
    if value is None:
        return None
    executor = as_executor(value)
    refused = {
        "an async def fn": is_async,  # a worker runs the sync engine
        f"mode={mode!r} (a dry-run or a sample runs here; drop executor=)": mode != "full",
        'engine="python" (a worker runs the native engine)': engine != "native",
        # Equal keys run one at a time in input order over the whole run; batches on two
        # workers would run them at once.
        "key_of (equal keys in two batches would run at once on two workers)": key_of is not None,
        # The engine's per-record events (each retry, each dead letter as it happens) stay on
        # the workers: these would see only part of the run.
        "hooks= or metrics= (not supported on an executor yet)": hooks is not None or metrics is not None,
        "alerts= (not supported on an executor yet)": bool(alerts),
        # Undoing a batch needs each success's value where the batch ends: on its worker.
        "compensate=, atomic_batches= or keep_outcomes (not supported on an executor yet)":
            compensation is not None,
    }
    for what, applies in refused.items():
        if applies:
            raise ConfigError(f"executor= cannot be combined with {what}")
    return executor
