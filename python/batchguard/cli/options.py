"""What the commands share: exit codes, the "cannot start" error, common options, URL helpers."""

from __future__ import annotations

import shlex
from collections.abc import Callable
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
