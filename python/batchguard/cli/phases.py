"""``batchguard run --mode dry-run|sample|full --validate MODULE:CALLABLE``: the phases on the
command line.

A dry-run prints the validation screen (rich on a terminal, plain text otherwise, ``--json``:
the report's ``to_json``) and exits 0 when nothing is blocked, 1 otherwise; a sample prints the
sample screen and exits 0 when every sampled record succeeded. Neither writes a DLQ entry or a
job checkpoint; a sample keeps its succeeded records in the job store (``--store``), so that
``batchguard rollback SAMPLE_ID --fn MODULE:UNDO`` can undo them. Their NEXT STEPS are exact
commands: this command line (every option given on it, URLs redacted, shell-quoted) with the
next ``--mode``.

An input line that does not parse is blocked in a dry-run and never sampled; in a full run it
is left to ``--fn``'s guard, which dead-letters it with its parse error (as without
``--validate``), so ``dlq retry`` still knows it for an unparsed line.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any, Final

import click
from click.core import ParameterSource
from rich.console import Group
from rich.rule import Rule
from rich.text import Text

from .._inputs import RecordSource, StreamSource, UnparsedLine, guard_parse_errors
from .._run.plan import close_opened_dlq, is_coroutine_function, make_plan
from .._urls import redact
from ..errors import BatchguardError, ConfigError, DLQUnavailableError
from ..validation.issues import MAX_SAMPLE_COUNT, MODES, ValidationIssue
from ..validation.report import RULE, ValidationReport, default_next_steps
from ..validation.run import dry_run, sample
from ..validation.sample import SampleReport, default_sample_steps
from .callables import load_callable
from .console import console, is_tty
from .options import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, cannot_start, url_flag
from .progress import ProgressView
from .report import save_report_json
from .settings import PHASE_KEYS, EngineSettings

__all__ = ["PHASE_KEYS", "Phase", "command_line", "phase_of", "phase_options", "print_validation", "run_phase",
           "saved_phase"]

_URL_PARAMS: Final = frozenset({"dlq_url", "store_url"})
# Options a next-step command leaves out: the mode is what it changes; the sample's own options
# mean nothing to the other modes.
_SAMPLE_ONLY: Final = frozenset({"sample_count", "sample_key"})


def phase_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--validate``, ``--mode``, ``--sample-count`` and ``--sample-key``."""
    options = [
        click.option("--validate", "validate", metavar="MODULE:CALLABLE", default=None,
                     help="A check run on each record before --fn: it returns the record's "
                          "batchguard.validation.ValidationIssue objects (blocked or warning), or None. "
                          "In a full run a blocked record is dead-lettered (stage validate), never run."),
        click.option("--mode", type=click.Choice(MODES), default="full", show_default=True,
                     help="dry-run: only the checks (needs --validate), a report, exit 1 if any record "
                          "is blocked; sample: --fn on a few records from short to long; full: the run."),
        click.option("--sample-count", type=click.IntRange(1, MAX_SAMPLE_COUNT), default=3,
                     show_default=True, metavar="N", help="Records --mode sample tries."),
        click.option("--sample-key", metavar="MODULE:CALLABLE", default=None,
                     help="What 'long' means for --mode sample: a callable giving a record's "
                          "complexity as a number [default: the size of its JSON]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@dataclasses.dataclass(frozen=True)
class Phase:
    """The phase options of one ``run``: loaded callables, and their specs."""

    mode: str = "full"
    validate: Callable[[Any], Any] | None = None
    validate_spec: str | None = None
    sample_count: int = 3
    sample_key: Callable[[Any], Any] | None = None

    def check_for_input(self) -> Callable[[Any], Any] | None:
        """The check as this mode runs it on the input's records (see the module docstring)."""
        check, mode = self.validate, self.mode
        if check is None and mode != "sample":
            return None

        def cli_check(record: Any) -> Any:
            if type(record) is UnparsedLine:
                if mode == "full":
                    return None  # --fn's guard dead-letters it with its InputParseError
                return ValidationIssue("<line>", f"line {record.line} does not parse: {record.error}",
                                       f"fix line {record.line} of the input")
            return None if check is None else check(record)

        if check is not None and is_coroutine_function(check):
            async def acheck(record: Any) -> Any:
                if type(record) is UnparsedLine:
                    return cli_check(record)
                return await check(record)
            return acheck
        return cli_check


def _load(spec: str | None, option: str) -> Callable[[Any], Any] | None:
    if spec is None:
        return None
    try:
        return load_callable(spec)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None


def phase_of(given: dict[str, Any]) -> Phase:
    """The Phase of ``run``'s parameters (after ``--config``); a usage error for a bad one."""
    mode, validate_spec = given.get("mode") or "full", given.get("validate")
    if mode == "dry-run" and validate_spec is None:
        raise click.UsageError("--mode dry-run runs the checks and nothing else: it needs "
                               "--validate MODULE:CALLABLE (a check returning ValidationIssues)")
    return Phase(mode=mode, validate=_load(validate_spec, "--validate"), validate_spec=validate_spec,
                 sample_count=given.get("sample_count") or 3,
                 sample_key=_load(given.get("sample_key") if mode == "sample" else None, "--sample-key"))


def saved_phase(cli: dict[str, Any]) -> Phase | None:
    """The full-run phase a job was started with (``meta.cli.validate``), for ``jobs resume``:
    a resumed job checks its records as its first run did, so a blocked record never reaches
    ``--fn`` after a resume either."""
    spec = cli.get("validate")
    if not isinstance(spec, str):
        return None
    return Phase(mode="full", validate=_load(spec, "--validate"), validate_spec=spec)


def _flag_value(name: str, value: Any) -> str:
    if name in _URL_PARAMS:
        return redact(str(value))
    if name == "rate_limit":
        return f"{value!r}/s"
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    return str(value)


def command_line(ctx: click.Context, mode: str) -> str:
    """This ``batchguard run`` as the user typed it (every option given on the command line or
    in the environment, URLs redacted, each word shell-quoted), with ``--mode mode``."""
    words = ["batchguard", "run"]
    for param in ctx.command.params:
        name = param.name
        if name is None or name == "mode" or (mode != "sample" and name in _SAMPLE_ONLY):
            continue
        if name == "store_url" and mode != "sample" and not ctx.params.get("job"):
            continue  # where a sample kept its results; a run without --job takes no --store
        value = ctx.params.get(name)
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None) or value is None:
            continue
        flag = max(param.opts, key=len)  # the long spelling
        if isinstance(param, click.Option) and param.is_flag:
            if value:
                words.append(flag)
            continue
        words += [flag, _flag_value(name, value)]
    if mode != "full":
        words += ["--mode", mode]
    return " ".join(shlex.quote(word) for word in words)


def _plan(source: RecordSource | StreamSource, fn: Callable[[Any], Any], phase: Phase, *,
          batch_size: int, concurrency: int, max_attempts: int, base_delay: float,
          settings: EngineSettings, view: ProgressView | None, store_url: str | None) -> Any:
    try:
        return make_plan(source, guard_parse_errors(fn), batch_size=batch_size, concurrency=concurrency,
                         retry=settings.retry(max_attempts, base_delay), on_progress=view,
                         mode=phase.mode, validate=phase.check_for_input(),
                         sample_count=phase.sample_count, sample_key=phase.sample_key,
                         store=store_url if phase.mode == "sample" else None, **settings.plan_kwargs())
    except (ConfigError, DLQUnavailableError, TypeError, ModuleNotFoundError) as exc:
        cannot_start(exc)


def run_phase(ctx: click.Context, *, source: RecordSource | StreamSource, fn: Callable[[Any], Any],
              phase: Phase, batch_size: int, concurrency: int, max_attempts: int, base_delay: float,
              settings: EngineSettings, quiet: bool, as_json: bool,
              report_json_path: str | None = None, store_url: str | None = None) -> int:
    """Run a dry-run or a sample, print its screen (and write its JSON to ``report_json_path``
    when given, as a full run writes its report); the exit code. ``store_url``: where a sample
    keeps its succeeded records (``batchguard rollback``)."""
    view = ProgressView(title="batchguard", quiet=quiet, mode=phase.mode, concurrency=concurrency)
    plan = _plan(source, fn, phase, batch_size=batch_size, concurrency=concurrency,
                 max_attempts=max_attempts, base_delay=base_delay, settings=settings,
                 view=None if quiet else view, store_url=store_url)
    result: ValidationReport | SampleReport
    try:
        with view.running():
            result = dry_run(plan) if phase.mode == "dry-run" else sample(plan)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: the {phase.mode} was stopped; it wrote nothing, so run it again "
                   f"with: {command_line(ctx, phase.mode)}", err=True)
        return EXIT_INTERRUPTED
    except BatchguardError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_INCOMPLETE
    finally:
        close_opened_dlq(plan)
    if isinstance(result, ValidationReport):
        result = result.with_next_steps(default_next_steps(
            result, dry_run=command_line(ctx, "dry-run"), sample=command_line(ctx, "sample")))
    else:
        rollback = None if result.rollback_id is None or store_url is None else (
            f"batchguard rollback {result.rollback_id} --fn MODULE:UNDO{url_flag('--store', store_url)}")
        result = result.with_next_steps(default_sample_steps(
            result, full=command_line(ctx, "full"), sample=command_line(ctx, "sample"), rollback=rollback))
    # --report-json could not be written: the command must not read as a success.
    unwritten = report_json_path is not None and not save_report_json(report_json_path, result.to_json())
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
    elif is_tty(sys.stdout):
        # soft_wrap: the terminal wraps long lines, rich inserts no line break, so a NEXT STEPS
        # command copied off the screen is the command
        console().print(_rich(result), soft_wrap=True)
    else:
        click.echo(result.summary())
    return EXIT_OK if result.ok and not unwritten else EXIT_INCOMPLETE


def _rich(result: ValidationReport | SampleReport) -> Group:
    """The screen with colour: the same lines as ``summary()``, headings and counts styled, the
    user's text never read as markup."""
    styles = {"BLOCKED": "bold red", "WARNINGS": "bold yellow", "NEXT STEPS": "bold cyan",
              "READY": "green", "Ready:": "green", "Warnings:": "yellow", "Blocked:": "red",
              "Dry-Run": "bold", "Sample Batch": "bold", "ISSUES BY KIND": "bold"}
    lines: list[Any] = []
    for line in result.summary().splitlines():
        if line == RULE:
            lines.append(Rule(style="dim"))
            continue
        style = next((s for prefix, s in styles.items() if line.startswith(prefix)), "")
        if " FAILED in " in line:
            style = "red"
        lines.append(Text(line, style=style))
    return Group(*lines)


def print_validation(summary: Any) -> None:
    """The line a full run with ``--validate`` adds under its report."""
    if summary is None:
        return
    click.echo(f"Validation: {summary.blocked:,} blocked (dead-lettered at stage 'validate', --fn "
               f"never called), {summary.warnings:,} ran with warnings.")

