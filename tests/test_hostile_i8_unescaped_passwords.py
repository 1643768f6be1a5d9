"""A password typed into a URL without %-escaping its ``#``, ``/`` or ``?`` (the usual way people
paste one) is never shown: not by ``redact``, not in any error about the DLQ or the job store
(hostile tester, issue 8: "passwords in postgres/redis URLs in every error message").

Before the fix ``redact`` read such a URL as the parser does: ``redis://:pa#ss@host/0`` has
netloc ``:pa`` (no ``@``, so nothing to hide) and fragment ``ss@host/0``, so it came back
whole. So did every message built on it: "invalid Redis URL 'redis://:pa#ss@...'" (plus
redis-py's own "... as 'pa'"), "job store URL 'redis://:pa#ss@...' has scheme 'redis'", "invalid
PostgreSQL URL 'postgresql://bob:pa?ss%40...'", and for ``postgresql://bob:pa/ss@host/db`` (which
libpq reads as host ``bob``, port ``pa``) "cannot reach the PostgreSQL dead-letter queue at
bob:pa/ss@127.0.0.1:1/db".
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

import pytest

import batchguard
from batchguard._urls import redact

SECRET = "Pw9zz"
# Each password splits the secret with a character a URL gives a meaning to.
PASSWORDS = [f"{SECRET[:2]}{c}{SECRET[2:]}" for c in "#/?"]
PIECES = [SECRET[:2] + c for c in "#/?"] + [c + SECRET[2:] for c in "#/?"] + [SECRET[2:]]

URLS = [
    *(f"redis://:{pw}@127.0.0.1:1/0" for pw in PASSWORDS),
    *(f"redis://user:{pw}@127.0.0.1:1/0" for pw in PASSWORDS),
    *(f"postgresql://bob:{pw}@127.0.0.1:1/db" for pw in PASSWORDS),
    *(f"postgres://bob:{pw}@127.0.0.1:1/db?sslmode=disable" for pw in PASSWORDS),
]


def _shown(text: str) -> None:
    assert SECRET[2:] not in text, text
    for piece in PIECES:
        assert piece not in text, text


@pytest.mark.parametrize("url", URLS)
def test_redact_hides_a_password_with_unescaped_url_characters(url: str) -> None:
    shown = redact(url)
    _shown(shown)
    assert "***" in shown and "127.0.0.1" in shown


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("how", ["dlq", "store"])
def test_no_error_shows_the_password(url: str, how: str) -> None:
    kwargs: dict[str, Any] = {"dlq": url} if how == "dlq" else {"job": "j", "store": url}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as caught:  # noqa: PT011 - which error depends on the URL; none may show it
            batchguard.run_batches([1], lambda x: x, **kwargs)
    _shown("".join(traceback.format_exception(caught.value)))


@pytest.mark.parametrize("url", ["sqlite:///dir@x/a:b.db", "jsonl:///a:b@c.jsonl",
                                 "postgresql://app:pw@db.internal:5432/jobs?application_name=a@b"])
def test_urls_without_such_a_password_read_as_before(url: str) -> None:
    expected = {"sqlite:///dir@x/a:b.db": "sqlite:///dir@x/a:b.db",
                "jsonl:///a:b@c.jsonl": "jsonl:///a:b@c.jsonl",
                "postgresql://app:pw@db.internal:5432/jobs?application_name=a@b":
                    "postgresql://app:***@db.internal:5432/jobs?application_name=a@b"}
    assert redact(url) == expected[url]


@pytest.mark.parametrize("url", [u for u in URLS if "#" not in u or u.startswith("redis")])
def test_the_error_says_how_to_write_the_url(url: str) -> None:
    with pytest.raises(batchguard.ConfigError, match=r"unescaped .*write it %-escaped"):
        batchguard.open_dlq(url)


def test_libpq_still_reads_a_hash_in_a_postgres_password() -> None:
    from batchguard._db.postgres import describe

    # libpq takes "#" in a password as it is (no fragments in its URLs): not refused, and the
    # location it is described by has no password in it
    assert describe(f"postgresql://bob:{PASSWORDS[0]}@127.0.0.1:1/db") == "127.0.0.1:1/db"
    # a "/" it reads as the end of the host: described redacted, whoever built the URL
    _shown(describe(f"postgresql://bob:{PASSWORDS[1]}@127.0.0.1:1/db"))
