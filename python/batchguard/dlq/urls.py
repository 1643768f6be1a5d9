"""Open a dead-letter queue from a URL, and hide the passwords in URLs shown to people."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from .base import DeadLetterQueue, MemoryDLQ

__all__ = ["SCHEMES", "open_dlq", "redact", "require_module"]

SCHEMES: Final = ("memory", "sqlite", "jsonl", "redis", "rediss", "postgresql", "postgres")
"""The URL schemes :func:`open_dlq` accepts."""

# A parameter whose name contains one of these is a secret: password, sslpassword, passwd, pwd,
# secret, client_secret, token, access_token...
_SECRET_MARKS: Final = ("pass", "pwd", "secret", "token")

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# One key=value of a libpq connection string: the value is single-quoted (backslash escapes) or
# runs to the next whitespace; libpq allows spaces around "=".
_CONNINFO_PAIR: Final = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)"
                                   r"(?P<value>'(?:[^'\\]|\\.)*'?|\S*)")


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(mark in lowered for mark in _SECRET_MARKS)


def redact(url: str) -> str:
    """``url`` with every secret in it replaced by ``***``: the password of the userinfo, and any
    password-like parameter (``password``, ``sslpassword``, ``token``, ``secret``...) of the
    query or, for a libpq ``key=value`` connection string, of the string itself.

    >>> redact("postgresql://app:s3cret@db.internal:5432/jobs")
    'postgresql://app:***@db.internal:5432/jobs'
    >>> redact("redis://:s3cret@cache:6379/0?password=x")
    'redis://:***@cache:6379/0?password=***'
    >>> redact("host=db.internal password='s3 cret' dbname=jobs sslpassword=k3y")
    'host=db.internal password=*** dbname=jobs sslpassword=***'
    """
    if not isinstance(url, str):
        url = str(url)
    if _SCHEME.match(url) is None:
        if "=" in url:
            return _redact_conninfo(url)
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(key) for key, _ in pairs):
            query = urlencode([(k, "***" if _is_secret(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    # Rebuilt by hand: urlunsplit would turn "sqlite:///x" into "sqlite:/x".
    slashes = "//" if url[len(parts.scheme) + 1:].startswith("//") else ""
    return (f"{parts.scheme}:{slashes}{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def _redact_conninfo(conninfo: str) -> str:
    def hide(match: re.Match[str]) -> str:
        if not _is_secret(match["key"]):
            return match[0]
        return f"{match['key']}{match['eq']}***"

    return _CONNINFO_PAIR.sub(hide, conninfo)


def require_module(module: str, *, needed_by: str, extra: str) -> ModuleType:
    """Import an optional dependency, or explain which extra installs it.

    >>> require_module("json", needed_by="the docs", extra="none").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{needed_by} needs the {module!r} package, which is not installed: "
            f'pip install "batchguard[{extra}]"',
            name=module,
        ) from exc


def _file_path(url: str, scheme: str, netloc: str, path: str) -> Path:
    """SQLAlchemy's convention: three slashes then a relative path, four for an absolute one."""
    if netloc:
        raise ConfigError(
            f"dlq URL {redact(url)!r}: a {scheme} URL has no host; use {scheme}:///relative/path "
            f"or {scheme}:////absolute/path"
        )
    relative = unquote(path[1:] if path.startswith("/") else path)
    if not relative:
        raise ConfigError(
            f"dlq URL {redact(url)!r} names no file; use {scheme}:///relative/path or "
            f"{scheme}:////absolute/path (memory:// keeps entries in memory)"
        )
    if "\x00" in relative:
        raise ConfigError(f"dlq URL {redact(url)!r} names a path holding a NUL character (%00), "
                          "which no file name can hold")
    return Path(relative)


def _take_options(url: str, query: str, allowed: tuple[str, ...]) -> tuple[dict[str, str], str]:
    """Split batchguard's own query parameters from the ones the driver should see."""
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in allowed:
            ours[key] = value
        else:
            theirs.append((key, value))
    return ours, urlencode(theirs)


def _no_query(url: str, query: str, scheme: str) -> None:
    if query:
        raise ConfigError(f"dlq URL {redact(url)!r}: a {scheme} URL takes no query parameters")


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
    >>> open_dlq("ftp://x")
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: dlq URL 'ftp://x' has scheme 'ftp'; accepted schemes: memory, sqlite, jsonl, redis, rediss, postgresql, postgres
    """
    if not isinstance(target, str):
        if isinstance(target, DeadLetterQueue):
            return target
        hint = " (a path? write it as a URL: sqlite:///x.db, jsonl:///x.jsonl)" if isinstance(
            target, os.PathLike) else ""
        raise TypeError(
            f"dlq must be a DeadLetterQueue or a URL string, got {type(target).__name__}{hint}"
        )
    url = target
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    accepted = ", ".join(SCHEMES)
    if not sep:
        raise ConfigError(
            f"dlq URL {redact(url)!r} has no scheme; accepted schemes: {accepted} "
            f"(e.g. sqlite:///dead_letters.db)"
        )
    if scheme not in SCHEMES:
        raise ConfigError(f"dlq URL {redact(url)!r} has scheme {scheme!r}; accepted schemes: {accepted}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ]
        raise ConfigError(f"dlq URL {redact(url)!r} is not a valid URL: {exc}") from None

    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ConfigError(f"dlq URL {redact(url)!r}: use plain memory://")
        return MemoryDLQ()
    if scheme == "sqlite":
        from .sqlite import SqliteDLQ

        _no_query(url, parts.query, scheme)
        return SqliteDLQ(_file_path(url, scheme, parts.netloc, parts.path))
    if scheme == "jsonl":
        from .jsonl import JsonlDLQ

        _no_query(url, parts.query, scheme)
        return JsonlDLQ(_file_path(url, scheme, parts.netloc, parts.path))
    if scheme in ("redis", "rediss"):
        from .redis import RedisDLQ

        options, query = _take_options(url, parts.query, ("key_prefix",))
        driver_url = urlunsplit(parts._replace(query=query))
        if "key_prefix" in options:
            return RedisDLQ(driver_url, key_prefix=options["key_prefix"])
        return RedisDLQ(driver_url)
    from .postgres import PostgresDLQ

    options, query = _take_options(url, parts.query, ("table",))
    driver_url = urlunsplit(parts._replace(scheme="postgresql", query=query))
    if "table" in options:
        return PostgresDLQ(driver_url, table=options["table"])
    return PostgresDLQ(driver_url)
