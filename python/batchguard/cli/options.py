"""What the commands share: exit codes, the "cannot start" error, common options, URL helpers."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click

from .._urls import file_path_of, file_url, redact
from ..dlq.base import FILTER_FIELDS
from ..errors import ConfigError
from ..jobs import DEFAULT_STORE_URL
from ..policies import ErrorClass, RetryPolicy

__all__ = [
    "DEFAULT_URL",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CannotStart",
    "Interrupted",
    "JsonErrorsCommand",
    "RunFailed",
    "absolute_url",
    "cannot_start",
    "dlq_option",
    "file_of",
    "filter_options",
    "filters",
    "retry_policy",
    "store_option",
    "url_flag",
]

DEFAULT_URL: Final = DEFAULT_STORE_URL
"""Default DLQ and job store: ``batchguard.db`` in the working directory."""

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_F = TypeVar("_F", bound=Callable[..., Any])


class CannotStart(click.ClickException):
    """Nothing ran: bad configuration, input or backend (exit 2)."""

    exit_code = EXIT_USAGE


class RunFailed(click.ClickException):
    """The run started and then failed (a DLQ or job store error mid-run): exit 1."""

    exit_code = EXIT_INCOMPLETE


class Interrupted(click.ClickException):
    """Ctrl-C: the message says what is saved and how to resume (exit 130)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, resume: str | None = None) -> None:
        super().__init__(message)
        self.resume = resume
        """The command that resumes the run (redacted), when it can be resumed."""

    def show(self, file: Any = None) -> None:
        click.echo("\n" + self.format_message(), err=True)


_KINDS: Final = {RunFailed: "failed", Interrupted: "interrupted", CannotStart: "cannot_start"}


def json_error(exc: click.ClickException) -> dict[str, Any]:
    """The JSON document a ``--json`` command prints on stdout when it fails: what kind of
    failure, its message (as printed on stderr) and the exit code."""
    kind = next((name for cls, name in _KINDS.items() if isinstance(exc, cls)),
                "usage" if isinstance(exc, click.UsageError) else "error")
    error: dict[str, Any] = {"kind": kind, "message": exc.format_message(), "exit_code": exc.exit_code}
    if isinstance(exc, Interrupted) and exc.resume is not None:
        error["resume"] = exc.resume
    return {"status": "error", "error": error}


class JsonErrorsCommand(click.Command):
    """A command whose ``--json`` holds when it fails: a usage error, a run that cannot start,
    fails or is interrupted still prints one JSON document on stdout (``{"status": "error",
    "error": {"kind", "message", "exit_code"}}``), so a script never parses an empty stdout.
    The message is printed on stderr as without ``--json``, and the exit code is the same."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        wants_json = "--json" in _options_part(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            if wants_json:
                click.echo(json.dumps(json_error(exc), indent=2))
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if ctx.params.get("as_json"):
                click.echo(json.dumps(json_error(exc), indent=2))
            raise


def _options_part(args: Sequence[str]) -> Sequence[str]:
    """``args`` before a ``--`` (after it, ``--json`` would be an argument)."""
    return args[: args.index("--")] if "--" in args else args


def cannot_start(exc: BaseException) -> NoReturn:
    """Stop the command with exit 2, ``exc``'s message and no traceback."""
    raise CannotStart(str(exc)) from None


def retry_policy(max_attempts: int, base_delay: float) -> RetryPolicy:
    """The RetryPolicy of ``--max-attempts`` and ``--base-delay``."""
    try:
        return RetryPolicy(max_attempts=max_attempts, base_delay=base_delay)
    except (ConfigError, TypeError) as exc:
        cannot_start(exc)


def file_of(url: str) -> Path | None:
    """The file of a sqlite:/// or jsonl:/// URL (the backends' path rule, ``_urls``), else None."""
    path = file_path_of(url)
    return None if path is None else Path(path)


def absolute_url(url: str) -> str:
    """A file URL made absolute (``sqlite:////abs/path``), so it means the same from any cwd."""
    path = file_of(url)
    if path is None:
        return url
    return file_url(url.partition("://")[0].lower(), str(path.resolve()))


def url_flag(option: str, url: str) -> str:
    """`` --dlq URL`` (``option`` and the redacted ``url``, shell-quoted) for a command to print,
    or nothing for the default URL, which the command finds without it."""
    return "" if url == DEFAULT_URL else f" {option} {shlex.quote(redact(url))}"


def dlq_option(default: str | None = DEFAULT_URL, help_text: str | None = None) -> Callable[[_F], _F]:
    """The ``--dlq URL`` option."""
    return click.option("--dlq", "dlq_url", metavar="URL", default=default, show_default=default is not None,
                        help=help_text or "Dead-letter queue: sqlite:///x.db, jsonl:///x.jsonl, "
                                          "redis://..., postgresql://...")


def store_option(fn: _F) -> _F:
    """The ``--store URL`` option of the jobs commands."""
    return click.option("--store", "store_url", metavar="URL", default=DEFAULT_URL, show_default=True,
                        help="Job store: sqlite:///x.db or postgresql://...")(fn)


def filter_options(fn: _F) -> _F:
    """The options that select dead letters (``--error-type``, ``--job``, ...)."""
    options = [
        click.option("--error-type", metavar="NAME", help="Exception type name, e.g. KeyError."),
        click.option("--error-class", type=click.Choice([c.value for c in ErrorClass]),
                     help="How the failure was classified."),
        click.option("--job", "job_id", metavar="NAME", help="Entries of this job."),
        click.option("--stage", metavar="NAME", help="Entries of this stage."),
        click.option("--run-id", metavar="ID", help="Entries of this run."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def filters(**given: Any) -> dict[str, Any]:
    """The DLQ filters among a command's parameters (the ones given)."""
    return {name: value for name, value in given.items() if name in FILTER_FIELDS and value is not None}
