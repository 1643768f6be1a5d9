"""The engine's knobs on ``batchguard run``: options, a TOML ``--config`` file, saved with a job.

Each option is a ``run_batches`` keyword (or a field of the policy it builds); its value is
checked by the library's own checks (``make_plan``, ``RetryPolicy``, ``RateLimit``,
``CircuitBreaker``), and a ConfigError naming a keyword becomes a usage error naming the option.
"""

from __future__ import annotations

import functools
import inspect
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

import click
from click.core import ParameterSource

from .._checks import closest
from .._inputs import UnparsedLine, guard_parse_errors
from .._run.plan import close_opened_dlq, make_plan
from ..alerts import Webhook, default_rules, redact_webhook
from ..errors import ConfigError, InputParseError
from ..policies import CircuitBreaker, RateLimit, RetryPolicy
from ..steering import Adaptive, RetryBudget
from .callables import load_callable, portable_spec

__all__ = ["CONFIG_KEYS", "ENGINE_KEYS", "SECRET_KEYS", "EngineSettings", "apply_config", "engine_options",
           "given_on_command_line", "resumed_settings", "settings_of", "shown_value"]

_F = TypeVar("_F", bound=Callable[..., Any])

ENGINE_KEYS: Final = ("timeout", "rate_limit", "burst", "breaker", "breaker_cooldown", "breaker_abort",
                      "success_threshold", "max_failures", "delay_between_batches", "id_field",
                      "key_field", "max_delay", "jitter", "seed", "stage", "bulk", "alert_webhook",
                      "keep_outcomes", "compensate", "atomic_batches", "on_abort", "retry_budget",
                      "adaptive")
"""The options this module adds to ``run``, by parameter name."""
SECRET_KEYS: Final = ("alert_webhook",)
"""Settings a job never saves (a webhook URL holds its token): a resume is given them again."""
PHASE_KEYS: Final = ("validate", "mode", "sample_count", "sample_key")
"""The phase options ``run`` takes (cli.phases): a team checks its validation step in as well."""
CONFIG_KEYS: Final = ("batch_size", "concurrency", "max_attempts", "base_delay", *ENGINE_KEYS, *PHASE_KEYS)
"""What a ``--config`` file may set: the run options of the same names (``rate_limit`` or
``rate-limit``). Not the input, ``--fn``, the DLQ or the job store: those say what runs, where."""

_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}


class RateType(click.ParamType[float]):
    """``N/s``, ``N/m``, ``N/h`` (or a bare N, per second) -> attempts per second."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        text = str(value).strip().lower()
        number, _, unit = text.partition("/")
        unit = unit.strip() or "s"
        try:
            if unit not in _UNITS:
                raise ValueError(unit)
            return float(number) / _UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a rate: write N/s, N/m or N/h (e.g. 50/s)", param, ctx)


class BreakerType(click.ParamType[tuple[int, int]]):
    """``FAILURES/CALLS``: open when FAILURES of the last CALLS calls failed."""

    name = "failures/calls"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            value = f"{value[0]}/{value[1]}"
        failures, sep, calls = str(value).partition("/")
        try:
            pair = int(failures), int(calls)
        except ValueError:
            pair = (0, 0)
        if not sep or pair[0] < 1 or pair[1] < pair[0]:
            self.fail(f"{value!r} is not FAILURES/CALLS with 1 <= FAILURES <= CALLS (e.g. 5/10: open "
                      f"when 5 of the last 10 calls failed)", param, ctx)
        return pair


class MaxFailuresType(click.ParamType[int | float]):
    """An int count (``10``) or a rate (``0.2`` or ``20%``)."""

    name = "count|rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            if text.endswith("%"):
                return float(text[:-1]) / 100.0
            return float(text) if any(c in text for c in ".eE") or text.lower() in ("nan", "inf") else int(text)
        except ValueError:
            self.fail(f"{value!r} is not a count (10) or a rate (0.2, 20%)", param, ctx)


class StrictString(click.ParamType[str]):
    """A string (a TOML number or bool is not silently turned into a name)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not isinstance(value, str):
            self.fail(f"expected a string, got {type(value).__name__} {value!r}", param, ctx)
        return value


def engine_options(fn: _F) -> _F:
    """The engine's options (``--timeout``, ``--rate-limit``, ``--breaker``, ...) and ``--config``."""
    text = StrictString()
    options = [
        click.option("--timeout", type=float, metavar="S", help="Seconds one attempt may take; a late one "
                     "counts as a TimeoutError (retried, then dead-lettered) [default: none]."),
        click.option("--rate-limit", type=RateType(), metavar="N/s",
                     help="Start at most N attempts per second (N/m, N/h), over all workers."),
        click.option("--burst", type=int, metavar="N", help="With --rate-limit: attempts allowed at once "
                     "[default: 1]."),
        click.option("--breaker", type=BreakerType(), metavar="FAILURES/CALLS",
                     help="Circuit breaker: pause every call when FAILURES of the last CALLS calls failed "
                          "(transient or recoverable errors), e.g. 5/10."),
        click.option("--breaker-cooldown", type=float, metavar="S",
                     help="How long an open breaker waits before probing [default: 30]."),
        click.option("--breaker-abort", type=float, metavar="RATE",
                     help="Stop the run (the rest stays pending, resumable) when this share of the "
                          "breaker's window failed, e.g. 0.9."),
        click.option("--retry-budget", type=float, metavar="RATIO",
                     help="Retries may not exceed RATIO of the first attempts (0.2: 20%%) plus 10 a second, "
                          "over any 10 s; a retry over it waits, queued, while new records run."),
        click.option("--adaptive", is_flag=True, default=None,
                     help="--concurrency is then the most calls in flight: the limit adapts from 1 by AIMD, "
                          "backing off on HTTP 429/503, timeouts and Retry-After. Not with --bulk."),
        click.option("--success-threshold", type=float, metavar="RATE",
                     help="Share of records that must succeed for the run to count as a success (0-1)."),
        click.option("--max-failures", type=MaxFailuresType(), metavar="N|RATE",
                     help="Error budget: stop once more than N records (or this share of them: 0.2, "
                          "20%) are dead-lettered; the rest stays pending."),
        click.option("--delay-between-batches", type=float, metavar="S", help="Pause before each new batch."),
        click.option("--id-field", type=text, metavar="NAME",
                     help="The record field that is its id in the DLQ [default: the record's position]."),
        click.option("--key-field", type=text, metavar="NAME",
                     help="Records with the same value of this field run one at a time, in input order."),
        click.option("--max-delay", type=float, metavar="S", help="Longest retry delay [default: 30]."),
        click.option("--jitter", type=click.Choice(["none", "full", "equal", "decorrelated"]),
                     help="Retry delay jitter [default: full]."),
        click.option("--seed", type=int, help="Seed of the retry jitter (reproducible delays)."),
        click.option("--stage", type=text, metavar="NAME", help="Stage name on dead letters [default: process]."),
        click.option("--alert-webhook", type=text, metavar="URL", envvar="BATCHGUARD_ALERT_WEBHOOK",
                     help="POST alerts as JSON to URL, retried, never holding the run up: failure rate "
                          "above 20% over 60 s (resolved once it falls to 10% or below, so a rate "
                          "hovering at 20% alerts once), breaker open for 60 s, no record finished for "
                          "300 s, run aborted and, with --max-failures, half of the error budget used; "
                          "each once per episode, then resolved. The URL is a secret: it is shown as "
                          "scheme://host/*** and never saved with a job [env: BATCHGUARD_ALERT_WEBHOOK]."),
        click.option("--bulk/--no-bulk", default=None,
                     help="--fn takes a list (a whole batch) and returns a list of results of the same "
                          "length, in order. When a call raises, the batch is split in halves and retried "
                          "until each failing record stands alone and is dead-lettered as usual. Not "
                          "with --key-field."),
        click.option("--compensate", type=text, metavar="MODULE:UNDO",
                     help="undo(record, value): reverses what --fn did for a record that returned value; "
                          "used with --atomic-batches and --on-abort compensate."),
        click.option("--atomic-batches", is_flag=True, default=None,
                     help="With --compensate: a batch that dead-letters a record is rolled back, its "
                          "succeeded records undone (newest first) and dead-lettered as BatchRolledBack."),
        click.option("--on-abort", type=click.Choice(["stop", "compensate"]),
                     help="What an aborted run (fatal error, --breaker-abort, --max-failures) does: stop "
                          "[default], or compensate: undo every record it succeeded on (with --compensate)."),
        click.option("--keep-outcomes", is_flag=True, default=None,
                     help="With --job: keep each succeeded record and its result in the job store, so "
                          "that `batchguard rollback JOB --fn MODULE:UNDO` can undo the job later."),
        click.option("--config", "config_path", metavar="FILE.toml",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Run settings from a TOML file, with these options' names (rate_limit = "
                          "\"50/s\"); the command line wins."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def apply_config(ctx: click.Context, params: dict[str, Any], path: str | None) -> set[str]:
    """Fill ``params`` from the TOML file at ``path`` where the command line did not set them;
    return the names it filled."""
    filled: set[str] = set()
    if path is None:
        return filled
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="'--config'") from None
    by_name = {p.name: p for p in ctx.command.params}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in CONFIG_KEYS:
            close = closest(name, CONFIG_KEYS)
            hint = f"; did you mean {close!r}?" if close else f"; known: {', '.join(CONFIG_KEYS)}"
            raise click.BadParameter(f"unknown key {key!r} in {path}{hint}", param_hint="'--config'")
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            continue  # the command line (or the environment) wins
        param = by_name.get(name)
        if param is None:
            raise click.BadParameter(f"{key} in {path}: {ctx.info_name} does not take it (a job keeps "
                                     "the batch size it was started with)", param_hint="'--config'")
        if name == "bulk":
            if not isinstance(value, bool):
                raise click.BadParameter(f"{key} = {value!r} in {path}: write true or false",
                                         param_hint="'--config'")
            params[name] = value
            filled.add(name)
            continue
        if isinstance(value, bool):
            raise click.BadParameter(f"{key} = {value!r} in {path}: not a boolean setting",
                                     param_hint="'--config'")
        try:
            params[name] = param.type.convert(value, param, ctx)
        except click.BadParameter as exc:
            raise click.BadParameter(f"{key} in {path}: {exc.message}", param_hint="'--config'") from None
        filled.add(name)
    return filled


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """Whether the option ``name`` was given (command line or environment), not defaulted."""
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def shown_value(name: str, value: Any) -> str:
    """An option's value as a person typed it (``--breaker 5/10``, ``--rate-limit 50/s``)."""
    if value is None:
        return "default"
    if name == "breaker" and isinstance(value, (list, tuple)):
        return f"{value[0]}/{value[1]}"
    if name == "rate_limit":
        return f"{value:g}/s"
    if name in SECRET_KEYS:
        return redact_webhook(str(value))
    return str(value)


def resumed_settings(ctx: click.Context, saved: Mapping[str, Any], params: dict[str, Any],
                     config_path: str | None) -> tuple[dict[str, Any], list[str]]:
    """The settings a resumed job runs with, and what the resume changed.

    The command line wins over ``--config``, which wins over what the job saved (its last
    run's settings), which wins over the defaults. Returns every CONFIG_KEYS value (None where
    none applies) and one ``--option VALUE (saved: OLD)`` note per changed setting.
    """
    from_config = apply_config(ctx, params, config_path)
    engine = saved.get("engine") if isinstance(saved.get("engine"), dict) else {}
    before: dict[str, Any] = {k: saved.get(k) for k in ("batch_size", "concurrency", "max_attempts", "base_delay")}
    before.update({k: v for k, v in EngineSettings.from_saved(engine).values.items()})
    values = dict(before)
    notes: list[str] = []
    for name in CONFIG_KEYS:
        if name not in params or not (given_on_command_line(ctx, name) or name in from_config):
            continue
        values[name] = params[name]
        if before.get(name) != params[name]:
            notes.append(f"--{name.replace('_', '-')} {shown_value(name, params[name])} "
                         f"(saved: {shown_value(name, before.get(name))})")
    return values, notes


# A library message starts with the keyword (or Policy.field) it is about: the option to blame.
_OPTION_OF: Final = {
    "timeout": "--timeout", "RateLimit.per_second": "--rate-limit", "RateLimit.burst": "--burst",
    "CircuitBreaker.open_duration": "--breaker-cooldown", "CircuitBreaker.abort_failure_rate": "--breaker-abort",
    "CircuitBreaker": "--breaker", "success_threshold": "--success-threshold", "max_failures": "--max-failures",
    "delay_between_batches": "--delay-between-batches", "stage": "--stage",
    "RetryPolicy.max_attempts": "--max-attempts", "RetryPolicy.base_delay": "--base-delay",
    "RetryPolicy.max_delay": "--max-delay", "RetryPolicy.jitter": "--jitter", "RetryPolicy.seed": "--seed",
    "bulk=True": "--bulk", "Webhook": "--alert-webhook", "RetryBudget": "--retry-budget",
    "concurrency=Adaptive": "--adaptive",
}


def _usage_error(exc: BaseException) -> click.BadParameter:
    message = str(exc)
    names = [n for n in _OPTION_OF if message.startswith(n)]
    hint = _OPTION_OF[max(names, key=len)] if names else None
    return click.BadParameter(message, param_hint=None if hint is None else f"'{hint}'")


@dataclass(frozen=True)
class FieldOf:
    """``record[name]`` of a dict record: ``--id-field`` / ``--key-field``."""

    name: str
    unparsed_key: bool = False
    """For key_of: a line that did not parse gets a key of its own, so it reaches fn's guard and is
    dead-lettered with its parse error (not a KeyError of the key field)."""

    def __call__(self, record: Any) -> Any:
        if self.unparsed_key and type(record) is UnparsedLine:
            return ("unparsed line", record.line)
        if not isinstance(record, Mapping):
            raise TypeError(f"field {self.name!r}: the record is a {type(record).__name__}, not an object")
        return record[self.name]


@dataclass(frozen=True)
class EngineSettings:
    """The engine options given (by name, as their click types converted them); JSON-able."""

    values: dict[str, Any] = field(default_factory=dict)

    def saved(self) -> dict[str, Any]:
        """What a job stores to resume with: every setting but the secrets (SECRET_KEYS)."""
        return {k: (list(v) if isinstance(v, tuple) else portable_spec(v) if k == "compensate" else v)
                for k, v in self.values.items() if k not in SECRET_KEYS}

    @classmethod
    def from_saved(cls, saved: Any) -> EngineSettings:
        if not isinstance(saved, dict):
            return cls()
        values = {k: (tuple(v) if k == "breaker" and isinstance(v, list) else v)
                  for k, v in saved.items() if k in ENGINE_KEYS and k not in SECRET_KEYS and v is not None}
        return cls(values)

    def retry(self, max_attempts: int, base_delay: float) -> RetryPolicy:
        v = self.values
        extra: dict[str, Any] = {k: v[k] for k in ("max_delay", "jitter", "seed") if k in v}
        return RetryPolicy(max_attempts=max_attempts, base_delay=base_delay, **extra)

    def plan_kwargs(self) -> dict[str, Any]:
        """The ``run_batches`` keywords these settings give (retry aside); raises ConfigError."""
        v = self.values
        kwargs: dict[str, Any] = {k: v[k] for k in ("timeout", "success_threshold", "max_failures",
                                                    "delay_between_batches", "stage") if k in v}
        if "burst" in v and "rate_limit" not in v:
            raise ConfigError("RateLimit.burst is only used with --rate-limit N/s")
        if "rate_limit" in v:
            kwargs["rate_limit"] = RateLimit(per_second=v["rate_limit"], burst=v.get("burst", 1))
        if any(k in v for k in ("breaker", "breaker_cooldown", "breaker_abort")):
            breaker: dict[str, Any] = {}
            if "breaker" in v:
                failures, calls = v["breaker"]
                breaker.update(failure_rate_threshold=failures / calls, window=calls, minimum_calls=calls)
            if "breaker_cooldown" in v:
                breaker["open_duration"] = v["breaker_cooldown"]
            if "breaker_abort" in v:
                breaker["abort_failure_rate"] = v["breaker_abort"]
            kwargs["breaker"] = CircuitBreaker(**breaker)
        if "id_field" in v:
            kwargs["id_of"] = FieldOf(v["id_field"])
        if "key_field" in v:
            kwargs["key_of"] = FieldOf(v["key_field"], unparsed_key=True)
        if v.get("bulk"):
            kwargs["bulk"] = True
        if v.get("keep_outcomes"):
            kwargs["keep_outcomes"] = True
        if "compensate" in v:
            kwargs["compensate"] = _undo(v["compensate"])
        if v.get("atomic_batches"):
            kwargs["atomic_batches"] = True
        if "on_abort" in v:
            kwargs["on_abort"] = v["on_abort"]
        if "retry_budget" in v:
            kwargs["retry_budget"] = RetryBudget(ratio=v["retry_budget"])
        if "alert_webhook" in v:
            kwargs["alerts"] = default_rules(Webhook(v["alert_webhook"]), max_failures=v.get("max_failures"))
        return kwargs

    def guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` raising InputParseError for an input line that did not parse instead of
        seeing its raw text; with ``--bulk``, for a list holding one (the bisection then
        isolates that line, dead-lettered with its parse error, and runs the rest)."""
        return guard_bulk_parse_errors(fn) if self.values.get("bulk") else guard_parse_errors(fn)

    def concurrency(self, concurrency: int) -> int | Adaptive:
        """``run_batches``' concurrency for ``--concurrency``: with ``--adaptive``, its limit."""
        return Adaptive(max=concurrency) if self.values.get("adaptive") else concurrency

    def check(self, max_attempts: int, base_delay: float) -> None:
        """Every value through the library's checks; a bad one is a usage error naming its option."""
        try:
            retry = self.retry(max_attempts, base_delay)
            kwargs = self.plan_kwargs()
            kwargs.pop("keep_outcomes", None)  # checked with the run's --job (execute_run)
            plan = make_plan([], _noop, retry=retry, concurrency=self.concurrency(1), **kwargs)
            close_opened_dlq(plan)
        except (ConfigError, TypeError) as exc:
            raise _usage_error(exc) from None


def _noop(record: Any) -> Any:
    return record


def guard_bulk_parse_errors(fn: Callable[[Sequence[Any]], Any]) -> Callable[[Sequence[Any]], Any]:
    """A bulk ``fn`` that raises the first unparsed line's InputParseError for a list holding one.

    >>> guarded = guard_bulk_parse_errors(lambda rs: [r["id"] for r in rs])
    >>> guarded([{"id": 1}])
    [1]
    >>> guarded([{"id": 1}, UnparsedLine("{oops", line=2, error="bad JSON")])
    Traceback (most recent call last):
    ...
    batchguard.errors.InputParseError: line 2: bad JSON
    """
    def check(records: Sequence[Any]) -> None:
        for record in records:
            if type(record) is UnparsedLine:
                raise InputParseError(f"line {record.line}: {record.error}")

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def guarded_async(records: Sequence[Any]) -> Any:
            check(records)
            return await fn(records)

        return guarded_async

    @functools.wraps(fn)
    def guarded(records: Sequence[Any]) -> Any:
        check(records)
        return fn(records)

    return guarded


def _undo(spec: str) -> Callable[[Any, Any], Any]:
    """``--compensate``'s callable (a usage error naming the option when it does not import)."""
    try:
        return cast(Callable[[Any, Any], Any], load_callable(spec))
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="'--compensate'") from None


def settings_of(params: Mapping[str, Any]) -> EngineSettings:
    """The EngineSettings of a command's parameters (the ones given)."""
    return EngineSettings({k: params[k] for k in ENGINE_KEYS if params.get(k) is not None})
