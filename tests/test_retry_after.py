"""The wait a failure asks for: ``retry_after`` and the ``Retry-After`` header (issue 7).

A retryable failure's wait is read from its numeric ``retry_after``, else from the
``Retry-After`` header of the response it carries (requests, httpx, aiohttp, botocore), in
delta-seconds or as an HTTP-date, and capped at ``RetryPolicy.max_retry_after`` (default
``max_delay``). Huge finite values (1e12, 10**30, a date in year 9999) are capped; values that
are no finite number of seconds (inf, nan, 10**400, 400 digits) are ignored, as a negative one
is; none of them hangs or panics.
Both engines read the same wait: each attempt's ``delay_s`` in the DLQ says which.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

import batchguard
from batchguard import MAX_DURATION_S, ErrorClass, MemoryDLQ, RetryPolicy
from batchguard._clients import parse_retry_after, retry_after_of
from batchguard.errors import ConfigError, ConfigTypeError
from helpers_client_server import ScriptedServer
from helpers_contract import ENGINES

BACKOFF = 0.01
CAP = 0.05


def policy(**kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("max_retry_after", CAP)
    return RetryPolicy(max_attempts=2, base_delay=BACKOFF, max_delay=1.0, jitter="none", **kwargs)


class Asks(ConnectionError):
    """A RECOVERABLE failure carrying whatever a test gives it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__("asks for a wait")
        for name, value in attrs.items():
            setattr(self, name, value)


class Response:
    def __init__(self, headers: Any) -> None:
        self.headers = headers


def waits(exc: BaseException, retry: RetryPolicy) -> dict[str, float | None]:
    """engine -> the delay before the second attempt of a record failing with ``exc``."""
    out = {}
    for engine in ENGINES:
        dlq = MemoryDLQ()

        def fn(record: Any) -> Any:
            raise exc

        started = time.monotonic()
        batchguard.run_batches([{"id": "r"}], fn, retry=retry, engine=engine, dlq=dlq)
        assert time.monotonic() - started < 5, f"{engine} waited far past the cap"
        [entry] = dlq.list()
        out[engine] = entry.attempts[0].delay_s
    return out


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


NUMERIC = [
    pytest.param(0.03, 0.03, id="below-cap"),
    pytest.param(3, CAP, id="int-above-cap"),
    pytest.param(1e12, CAP, id="1e12"),
    pytest.param(10**30, CAP, id="10**30"),
    pytest.param(10**400, BACKOFF, id="int-beyond-float-ignored"),
    pytest.param(math.inf, BACKOFF, id="inf-ignored"),
    pytest.param(-10**400, BACKOFF, id="huge-negative-ignored"),
    pytest.param(-1.0, BACKOFF, id="negative-ignored"),
    pytest.param(math.nan, BACKOFF, id="nan-ignored"),
    pytest.param(True, BACKOFF, id="bool-ignored"),
    pytest.param("30", BACKOFF, id="str-attribute-ignored"),
]


@pytest.mark.parametrize(("value", "expected"), NUMERIC)
def test_numeric_retry_after_is_capped_and_odd_values_are_ignored(value: Any, expected: float) -> None:
    assert waits(Asks(retry_after=value), policy()) == {e: pytest.approx(expected) for e in ENGINES}


HEADERS = [
    pytest.param({"Retry-After": "0.03"}, 0.03, id="delta-seconds"),
    pytest.param({"Retry-After": " 0.03\t"}, 0.03, id="delta-seconds-padded"),
    pytest.param({"Retry-After": "120"}, CAP, id="delta-seconds-capped"),
    pytest.param({"Retry-After": "9" * 400}, BACKOFF, id="400-digits-ignored"),
    pytest.param({"Retry-After": http_date(3600)}, CAP, id="http-date-capped"),
    pytest.param({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, CAP, id="http-date-year-9999"),
    pytest.param({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, BACKOFF, id="http-date-past"),
    pytest.param({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, BACKOFF, id="http-date-no-zone"),
    pytest.param({"Retry-After": "soon"}, BACKOFF, id="garbage-ignored"),
    pytest.param({"Retry-After": "-5"}, BACKOFF, id="negative-ignored"),
    pytest.param({"Retry-After": "1e3"}, BACKOFF, id="exponent-ignored"),
    pytest.param({"retry-after": "0.03"}, 0.03, id="lowercase-plain-dict"),
    pytest.param({}, BACKOFF, id="no-header"),
]


@pytest.mark.parametrize(("headers", "expected"), HEADERS)
@pytest.mark.parametrize("holder", ["exc.headers", "exc.response.headers", "botocore-metadata"])
def test_retry_after_header_is_read_where_clients_keep_it(holder: str, headers: dict[str, str],
                                                         expected: float) -> None:
    if holder == "exc.headers":
        exc = Asks(headers=headers)
    elif holder == "exc.response.headers":
        exc = Asks(response=Response(headers))
    else:
        exc = Asks(response={"ResponseMetadata": {"HTTPHeaders": {k.lower(): v for k, v in headers.items()}}})
    assert waits(exc, policy()) == {e: pytest.approx(expected) for e in ENGINES}


def test_a_numeric_retry_after_comes_before_the_header() -> None:
    exc = Asks(retry_after=0.02, response=Response({"Retry-After": "0.04"}))
    assert waits(exc, policy()) == {e: pytest.approx(0.02) for e in ENGINES}


def test_the_default_cap_is_max_delay() -> None:
    retry = RetryPolicy(max_attempts=2, base_delay=BACKOFF, max_delay=0.04, jitter="none")
    assert retry.retry_after_cap == 0.04
    assert waits(Asks(retry_after=1e12), retry) == {e: pytest.approx(0.04) for e in ENGINES}
    assert waits(Asks(response=Response({"Retry-After": "3600"})), retry) == {e: pytest.approx(0.04) for e in ENGINES}


def test_headers_that_break_are_no_headers() -> None:
    class Broken:
        def get(self, name: str) -> Any:
            raise RuntimeError("broken mapping")

    class BrokenResponse:
        @property
        def headers(self) -> Any:
            raise RuntimeError("broken response")

    for exc in (Asks(headers=Broken()), Asks(response=BrokenResponse()), Asks(headers=[1, 2]),
                Asks(headers={"Retry-After": b"1"}), Asks(response={"ResponseMetadata": "nope"})):
        assert waits(exc, policy()) == {e: pytest.approx(BACKOFF) for e in ENGINES}


def test_only_retryable_failures_ask() -> None:
    # A 404 carrying Retry-After is PERMANENT: tried once, its header never read.
    class NotFound(Exception):
        status_code = 404
        response = Response({"Retry-After": "3600"})

    def fn(record: Any) -> Any:
        raise NotFound()

    assert batchguard.Classifier.default().classify(NotFound()) is ErrorClass.PERMANENT
    for engine in ENGINES:
        dlq = MemoryDLQ()
        batchguard.run_batches([1], fn, retry=policy(), engine=engine, dlq=dlq)
        assert [a.delay_s for a in dlq.list()[0].attempts] == [None]


# --------------------------------------------------------------------------- real clients


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def _requests_error(url: str) -> BaseException:
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        session.trust_env = False
        with session.get(url, timeout=2) as response:
            try:
                response.raise_for_status()
            except requests.HTTPError as exc:
                return exc
    raise AssertionError("no error")


def _httpx_error(url: str) -> BaseException:
    httpx = pytest.importorskip("httpx")
    with httpx.Client(timeout=2, trust_env=False) as client:
        try:
            client.get(url).raise_for_status()
        except httpx.HTTPStatusError as exc:
            return exc
    raise AssertionError("no error")


def _aiohttp_error(url: str) -> BaseException:
    aiohttp = pytest.importorskip("aiohttp")
    import asyncio

    async def get() -> BaseException:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            try:
                response.raise_for_status()
            except aiohttp.ClientResponseError as exc:
                return exc
        raise AssertionError("no error")

    return asyncio.run(get())


def _botocore_error(url: str) -> BaseException:
    pytest.importorskip("botocore")
    import botocore.config
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, proxies={},
                                      s3={"addressing_style": "path"}))
    try:
        client.list_objects_v2(Bucket="aws-slowdown")
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error")


REAL = {"requests": _requests_error, "httpx": _httpx_error, "aiohttp": _aiohttp_error}


@pytest.mark.parametrize("client", sorted(REAL))
@pytest.mark.parametrize(("header", "expected"), [("0.03", 0.03), ("120", CAP), ("date+3600", CAP)])
def test_real_clients_errors_carry_their_retry_after(server: ScriptedServer, client: str, header: str,
                                                    expected: float) -> None:
    exc = REAL[client](f"{server.url}/status/503/ra-{client}?retry_after={header.replace('+', '%2B')}")
    assert waits(exc, policy()) == {e: pytest.approx(expected) for e in ENGINES}


def test_botocore_errors_carry_their_retry_after(server: ScriptedServer) -> None:
    exc = _botocore_error(server.url)  # SlowDown, 503, "Retry-After: 1"
    assert retry_after_of(exc, time.time()) == 1.0
    assert waits(exc, policy()) == {e: pytest.approx(CAP) for e in ENGINES}


# --------------------------------------------------------------------------- parsing and policy


def test_http_dates_count_from_now() -> None:
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 100, usegmt=True), now) == pytest.approx(100, abs=1)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == 0.0
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now) == 0.0  # RFC 850 form
    assert parse_retry_after("", now) is None


BAD_CAPS = [
    pytest.param(-1.0, ConfigError, ">= 0", id="negative"),
    pytest.param(math.nan, ConfigError, "nan", id="nan"),
    pytest.param(math.inf, ConfigError, "at most", id="inf"),
    pytest.param(MAX_DURATION_S + 1, ConfigError, "at most", id="beyond-max-duration"),
    pytest.param(10**400, ConfigError, "at most", id="int-beyond-float"),
    pytest.param("30", ConfigTypeError, "str", id="str"),
    pytest.param(True, ConfigTypeError, "bool", id="bool"),
]


@pytest.mark.parametrize(("value", "error", "words"), BAD_CAPS)
def test_max_retry_after_is_validated_when_built(value: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=r"RetryPolicy\.max_retry_after") as caught:
        RetryPolicy(max_retry_after=value)
    assert words in str(caught.value)


def test_max_retry_after_accepts_the_documented_range() -> None:
    assert RetryPolicy(max_retry_after=0).retry_after_cap == 0.0
    assert RetryPolicy(max_retry_after=MAX_DURATION_S).retry_after_cap == MAX_DURATION_S
    assert RetryPolicy(max_delay=12.0).retry_after_cap == 12.0
    assert RetryPolicy(max_delay=12.0, max_retry_after=600).retry_after_cap == 600.0
