"""Open a dead-letter queue from a URL."""

from __future__ import annotations

import os
from typing import Final

from .._urls import parse_url
from ..errors import ConfigError
from .base import DeadLetterQueue, MemoryDLQ
from .jsonl import JsonlDLQ
from .postgres import PostgresDLQ
from .redis import RedisDLQ
from .sqlite import SqliteDLQ

__all__ = ["SCHEMES", "ConfigError", "open_dlq"]  # ConfigError: what open_dlq raises for a bad URL

SCHEMES: Final = ("memory", "sqlite", "jsonl", "redis", "rediss", "postgresql", "postgres")
"""The URL schemes :func:`open_dlq` accepts."""
_HINT: Final = f"accepted schemes: {', '.join(SCHEMES)} (e.g. sqlite:///dead_letters.db)"


def open_dlq(target: DeadLetterQueue | str) -> DeadLetterQueue:
    """A dead-letter queue from a URL, or ``target`` itself if it already is one.

    ============================================  ==============================================
    ``memory://``                                 :class:`MemoryDLQ` (entries die with the process)
    ``sqlite:///relative.db``                     :class:`SqliteDLQ` on ``relative.db``
    ``sqlite:////absolute/path.db``               :class:`SqliteDLQ` on ``/absolute/path.db``
    ``jsonl:///relative.jsonl``, ``jsonl:////…``  :class:`JsonlDLQ`, same path rules
    ``redis://…``, ``rediss://…``                 :class:`RedisDLQ`; ``?key_prefix=`` sets its keys
    ``postgresql://…``, ``postgres://…``          :class:`PostgresDLQ`; ``?table=`` sets its table
    ============================================  ==============================================

    >>> open_dlq("memory://")
    MemoryDLQ(0 entries)
    >>> open_dlq("ftp://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: dlq URL 'ftp://x' has scheme 'ftp'; accepted schemes: memory, sqlite, ...
    """
    if not isinstance(target, str):
        if isinstance(target, DeadLetterQueue):
            return target
        hint = " (a path? write it as a URL: sqlite:///x.db, jsonl:///x.jsonl)" if isinstance(
            target, os.PathLike) else ""
        raise TypeError(
            f"dlq must be a DeadLetterQueue or a URL string, got {type(target).__name__}{hint}"
        )
    url = parse_url(target, label="dlq URL", schemes=SCHEMES, hint=_HINT)
    if url.scheme == "memory":
        if url.parts.netloc or url.parts.path or url.parts.query:
            raise url.error(": use plain memory://")
        return MemoryDLQ()
    if url.scheme == "sqlite":
        return SqliteDLQ(url.file_path())
    if url.scheme == "jsonl":
        return JsonlDLQ(url.file_path())
    if url.scheme in ("redis", "rediss"):
        url.check_userinfo("#/?")  # libpq reads a "#" in a password; redis-py does not
        options, driver_url = url.options(("key_prefix",))
        if "key_prefix" in options:
            return RedisDLQ(driver_url, key_prefix=options["key_prefix"])
        return RedisDLQ(driver_url)
    options, driver_url = url.options(("table",), scheme="postgresql")
    if "table" in options:
        return PostgresDLQ(driver_url, table=options["table"])
    return PostgresDLQ(driver_url)
