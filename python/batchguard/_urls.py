"""Backend URLs: splitting them, the file path rule, batchguard's own options, and hiding the
secrets in a URL shown to people. Used by ``open_dlq`` and ``open_job_store`` alike.

URLs follow SQLAlchemy's convention: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import ConfigError

__all__ = ["FILE_SCHEMES", "BackendUrl", "file_path_of", "file_url", "parse_url", "redact", "require_module"]

# A parameter whose name contains one of these is a secret: password, sslpassword, passwd, pwd,
# secret, client_secret, token, access_token...
_SECRET_MARKS: Final = ("pass", "pwd", "secret", "token")

FILE_SCHEMES: Final = ("sqlite", "jsonl")
"""The schemes whose URL names a file (see :meth:`BackendUrl.file_path`)."""

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
    cut = _userinfo_cut_short(url, parts)
    if cut is not None:
        return redact(cut)
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


def _cut_userinfo(url: str, parts: SplitResult) -> tuple[str, str, str] | None:
    """When a ``#``, ``/`` or ``?`` typed (unescaped) in a password ended the netloc before its
    ``@`` (``redis://:pa#ss@host``: netloc ``:pa``, fragment ``ss@host``): the text before the
    user, the user, and the text after the ``@``. None when the netloc is whole."""
    netloc = parts.netloc
    if not netloc or "@" in netloc:
        return None
    start = url.find(netloc) + len(netloc)
    rest = url[start:]
    at = rest.find("@")
    if at < 0:
        return None
    head = rest[:at]
    port = netloc.rpartition(":")[2] if ":" in netloc else ""
    # What a path or query looks like (a second "/", a "key=value") is not a password, unless
    # the netloc cannot be a host and port anyway.
    if port.isdigit() and ("=" in head or "/" in head[1:]):
        return None
    user, colon, _ = (netloc + head).partition(":")
    if not colon:
        return None
    return url[:url.find(netloc)], user, rest[at + 1:]


def _userinfo_cut_short(url: str, parts: SplitResult) -> str | None:
    """``url`` with its password hidden when it ended the netloc early (see _cut_userinfo)."""
    cut = _cut_userinfo(url, parts)
    if cut is None:
        return None
    before, user, after = cut
    # The user %-escaped as it should have been written, so the result reads as intended.
    return f"{before}{quote(user, safe='%')}:***@{after}"


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


@dataclass(frozen=True, slots=True)
class BackendUrl:
    """A backend URL, split; every error it raises names the argument (``label``) and shows the
    URL with its secrets hidden.

    >>> url = parse_url("postgres://app:pw@db/x?table=t&sslmode=require", label="dlq URL",
    ...                 schemes=("postgres",), hint="use postgres://")
    >>> url.scheme, url.options(("table",), scheme="postgresql")
    ('postgres', ({'table': 't'}, 'postgresql://app:pw@db/x?sslmode=require'))
    """

    text: str
    """The URL as given (secrets included: never put it in a message)."""
    scheme: str
    """Lowercased."""
    parts: SplitResult
    label: str
    """What the URL is, for messages: ``"dlq URL"``, ``"job store URL"``."""

    def error(self, problem: str) -> ConfigError:
        """A ConfigError saying what is wrong with this URL (``problem`` follows the URL)."""
        return ConfigError(f"{self.label} {redact(self.text)!r}{problem}")

    def check_userinfo(self, unusable: str = "/?") -> None:
        """A ConfigError when a character of ``unusable`` typed unescaped in the user name or
        password cuts the host part short (the driver would read a wrong host, or fail on a
        "port" made of the password); it says how to escape it."""
        cut = _cut_userinfo(self.text, self.parts)
        if cut is None:
            return
        after_netloc = self.text[len(cut[0]) + len(self.parts.netloc):]
        if after_netloc[:1] in tuple(unusable):
            raise self.error(f": its user name or password holds an unescaped {after_netloc[0]!r}, "
                             "which ends the host part of a URL; write it %-escaped "
                             "(# as %23, / as %2F, ? as %3F, @ as %40)")

    def file_path(self) -> str:
        """The file a ``sqlite:`` or ``jsonl:`` URL names (SQLAlchemy's rule: three slashes then
        a relative path, four for an absolute one; %-escapes decoded). It takes no host and no
        query; everything between the slashes and the end of the URL is the path."""
        rest = self.text[len(self.scheme) + len("://"):]
        path, _, query = rest.partition("?")
        if query:
            raise self.error(f": a {self.scheme} URL takes no query parameters")
        if path and not path.startswith("/"):
            raise self.error(f" has a host; use {self.scheme}:///relative/path or "
                             f"{self.scheme}:////absolute/path")
        relative = unquote(path[1:])
        if not relative:
            raise self.error(f" names no file; use {self.scheme}:///relative/path or "
                             f"{self.scheme}:////absolute/path")
        if "\x00" in relative:
            raise self.error(" names a path holding a NUL character (%00), which no file name can hold")
        return relative

    def options(self, allowed: Sequence[str], *, scheme: str | None = None) -> tuple[dict[str, str], str]:
        """Split batchguard's own query parameters (``allowed``) from the ones the driver should
        see; returns them and the URL to give the driver (with ``scheme`` if given)."""
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for key, value in parse_qsl(self.parts.query, keep_blank_values=True):
            if key in allowed:
                ours[key] = value
            else:
                theirs.append((key, value))
        driver = self.parts._replace(scheme=scheme or self.parts.scheme, query=urlencode(theirs))
        return ours, urlunsplit(driver)


def parse_url(text: str, *, label: str, schemes: Sequence[str], hint: str) -> BackendUrl:
    """Split ``text``; a ConfigError (naming ``label``, ending with ``hint``) when it has no
    scheme, a scheme not in ``schemes``, or cannot be split at all (an unbalanced ``[``).

    >>> parse_url("ftp://x", label="dlq URL", schemes=("sqlite",), hint="accepted: sqlite")
    Traceback (most recent call last):
    ...
    batchguard.errors.ConfigError: dlq URL 'ftp://x' has scheme 'ftp'; accepted: sqlite
    """
    scheme, sep, _ = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"{label} {redact(text)!r} has no scheme; {hint}")
    if scheme not in schemes:
        raise ConfigError(f"{label} {redact(text)!r} has scheme {scheme!r}; {hint}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ]
        raise ConfigError(f"{label} {redact(text)!r} is not a valid URL: {exc}") from None
    url = BackendUrl(text=text, scheme=scheme, parts=parts, label=label)
    url.check_userinfo()
    return url


def file_path_of(text: str) -> str | None:
    """The file a ``sqlite:`` or ``jsonl:`` URL names, by :meth:`BackendUrl.file_path`'s rule;
    None for any other URL, or one that breaks the rule (opening it says why).

    >>> file_path_of("sqlite:///my%20queue.db"), file_path_of("jsonl:////abs/x.jsonl")
    ('my queue.db', '/abs/x.jsonl')
    >>> file_path_of("memory://"), file_path_of("sqlite://host/x.db")
    (None, None)
    """
    try:
        url = parse_url(text, label="URL", schemes=FILE_SCHEMES, hint="")
        return url.file_path()
    except ConfigError:
        return None


def file_url(scheme: str, path: str) -> str:
    """The ``scheme`` URL that names ``path`` (escaped as needed): :func:`file_path_of` gives
    ``path`` back.

    >>> file_url("sqlite", "/data/my queue?.db")
    'sqlite:////data/my%20queue%3F.db'
    """
    return f"{scheme}:///{quote(path, safe='/')}"
