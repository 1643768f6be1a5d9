"""Both engines classify client errors alike, including the instance-dependent ones (issue 7).

The type of an exception is resolved once and cached; only the few types with an inspector
(botocore's ClientError, grpc's RpcError, SQLAlchemy's DBAPIError, TLS wrappers) are looked at
per failure. These tests hold the native engine to the reference ``Classifier.classify`` for
odd instances, and show that the per-type cache never hides an instance's own verdict.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchguard
from batchguard import Classifier, ErrorClass, MemoryDLQ, RetryPolicy
from batchguard._clients import AWS_ERROR_CODES, GRPC_STATUS_CODES
from helpers_contract import ENGINES, no_wait

botocore_exceptions = pytest.importorskip("botocore.exceptions")
sqlalchemy_exc = pytest.importorskip("sqlalchemy.exc")
grpc = pytest.importorskip("grpc")

R, T, P = ErrorClass.RECOVERABLE, ErrorClass.TRANSIENT, ErrorClass.PERMANENT


def engine_classes(excs: list[BaseException], classifier: Classifier | None = None) -> dict[str, list[str]]:
    """engine -> the class each exception got, in one run (record i raises excs[i])."""
    out = {}
    for engine in ENGINES:
        def fn(i: int) -> Any:
            raise excs[i]

        report = batchguard.run_batches(list(range(len(excs))), fn, engine=engine, retry=no_wait(1),
                                        classifier=classifier)
        out[engine] = [e.error_class for e in sorted(report.errors, key=lambda e: e.record_index)]
    return out


def expect_parity(excs: list[BaseException], classifier: Classifier | None = None) -> list[str]:
    reference = [(classifier or Classifier.default()).classify(e).value for e in excs]
    assert engine_classes(excs, classifier) == {engine: reference for engine in ENGINES}
    return reference


def client_error(code: Any = None, status: Any = None, error: Any = ..., metadata: Any = ...) -> BaseException:
    """A botocore ClientError built as botocore builds it, from the parsed response; a test
    that wants a malformed response swaps it in afterwards (botocore's constructor reads it)."""
    exc = botocore_exceptions.ClientError({"Error": {"Code": "Built", "Message": "m"}}, "ListObjectsV2")
    response: dict[str, Any] = {}
    if error is ...:
        error = {"Code": code, "Message": "m"}
    if error is not None:
        response["Error"] = error
    if metadata is ...:
        metadata = {"HTTPStatusCode": status, "HTTPHeaders": {}}
    if metadata is not None:
        response["ResponseMetadata"] = metadata
    exc.response = response
    return exc


class RpcError(grpc.RpcError):
    """An RpcError as grpc.aio and interceptors raise their own: code() says the status."""

    def __init__(self, code: Callable[[], Any]) -> None:
        super().__init__("rpc failed")
        self.code = code  # type: ignore[method-assign]


def test_the_type_cache_never_hides_an_instances_own_verdict() -> None:
    # One exception type, many verdicts, in one run on each engine.
    excs = [client_error("SlowDown", 503), client_error("AccessDenied", 403), client_error("Throttling", 400),
            client_error("Odd", 500), client_error("Odd", 404), client_error(None, None)]
    assert expect_parity(excs) == ["recoverable", "permanent", "recoverable", "recoverable", "permanent", "permanent"]
    codes = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED] * 2
    rpc = [RpcError(lambda c=c: c) for c in codes]
    assert expect_parity(rpc) == ["recoverable", "permanent", "transient"] * 2


ODD = [
    pytest.param(client_error(error=None, metadata=None), id="aws-empty-response"),
    pytest.param(client_error(error="Throttling", status=503), id="aws-error-not-a-dict"),
    pytest.param(client_error(code=42, status=503), id="aws-code-not-a-str"),
    pytest.param(client_error("Odd", status=True), id="aws-status-bool"),
    pytest.param(client_error("Odd", status="503"), id="aws-status-str"),
    pytest.param(client_error("Odd", status=700), id="aws-status-out-of-range"),
    pytest.param(client_error("Odd", metadata="nope"), id="aws-metadata-not-a-dict"),
    pytest.param(RpcError(lambda: 1 / 0), id="grpc-code-raises"),
    pytest.param(RpcError(lambda: "UNAVAILABLE"), id="grpc-code-a-str"),
    pytest.param(RpcError(lambda: None), id="grpc-code-none"),
    pytest.param(grpc.RpcError("bare"), id="grpc-no-code"),
    pytest.param(sqlalchemy_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("locked")),
                 id="sqlalchemy-unknown-orig-falls-back-to-wrapper"),
    pytest.param(sqlalchemy_exc.InterfaceError("SELECT 1", {}, sqlite3.InterfaceError("closed")),
                 id="sqlalchemy-unknown-orig-no-fallback"),
    pytest.param(sqlalchemy_exc.InterfaceError("SELECT 1", {}, sqlite3.InterfaceError("closed"),
                                               connection_invalidated=True), id="sqlalchemy-invalidated"),
    pytest.param(sqlalchemy_exc.InternalError("SELECT 1", {}, TimeoutError("t")), id="sqlalchemy-orig-timeout"),
    pytest.param(sqlalchemy_exc.InternalError("SELECT 1", {}, "not an exception"), id="sqlalchemy-orig-a-str"),
    pytest.param(sqlalchemy_exc.InternalError("SELECT 1", {}, sqlalchemy_exc.InternalError(
        "SELECT 1", {}, sqlalchemy_exc.InternalError("SELECT 1", {}, sqlalchemy_exc.InternalError(
            "SELECT 1", {}, sqlalchemy_exc.InternalError("SELECT 1", {}, TimeoutError("deep")))))),
        id="sqlalchemy-wrapped-beyond-the-depth-limit"),
]


@pytest.mark.parametrize("exc", ODD)
def test_odd_instances_classify_alike_on_both_engines(exc: BaseException) -> None:
    expect_parity([exc])


def test_wrapper_fallbacks_and_the_depth_limit() -> None:
    classes = [Classifier.default().classify(p.values[0]) for p in ODD if p.id.startswith("sqlalchemy")]
    assert classes == [R, P, R, R, P, P]


def test_a_users_rules_come_before_the_libraries_knowledge() -> None:
    slow = client_error("SlowDown", 503)
    wrapped = sqlalchemy_exc.OperationalError("SELECT 1", {}, TimeoutError("t"))
    user = (Classifier.default()
            .with_rule(botocore_exceptions.ClientError, ErrorClass.FATAL)
            .with_name_rule("sqlalchemy.exc.OperationalError", ErrorClass.TRANSIENT))
    assert expect_parity([wrapped], user) == ["recoverable"]  # the orig decides before the name rule
    assert expect_parity([slow], user) == ["fatal"]  # (FATAL stops the run: alone)
    # the wrapped driver error is classified by the same rules, the user's included
    user = Classifier.default().with_rule(TimeoutError, ErrorClass.TRANSIENT)
    assert expect_parity([wrapped, TimeoutError("x")], user) == ["transient", "transient"]


def test_name_rules_match_qualified_and_bare_names() -> None:
    class Custom(Exception):
        pass

    qualified = f"{Custom.__module__}.{Custom.__qualname__}"
    assert expect_parity([Custom()], Classifier.default().with_name_rule(qualified, T)) == ["transient"]
    assert expect_parity([Custom()], Classifier.default().with_name_rule("Custom", R)) == ["recoverable"]
    both = Classifier.default().with_name_rule("Custom", R).with_name_rule(qualified, T)
    assert expect_parity([Custom()], both) == ["transient"]
    with pytest.raises(batchguard.ConfigError, match="not an inspector"):
        Classifier(inspect_rules=(("x.Y", "psychic"),))


NAMES = st.one_of(st.sampled_from(sorted(AWS_ERROR_CODES)), st.text(max_size=12))
STATUSES = st.one_of(st.none(), st.booleans(), st.integers(-1, 1000), st.sampled_from(["503", 503.0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codes=st.lists(st.tuples(NAMES, STATUSES), min_size=1, max_size=6))
def test_aws_error_codes_and_statuses_classify_alike(codes: list[tuple[str, Any]]) -> None:
    expect_parity([client_error(code, status) for code, status in codes])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.one_of(st.sampled_from([*GRPC_STATUS_CODES, "OK"]), st.text(max_size=8)),
                      min_size=1, max_size=6))
def test_grpc_status_names_classify_alike(names: list[str]) -> None:
    class Status:
        def __init__(self, name: str) -> None:
            self.name = name

    expect_parity([RpcError(lambda n=n: Status(n)) for n in names])


HEADER_VALUES = st.one_of(
    st.integers(0, 200).map(lambda n: f"{n // 1000}.{n % 1000:03d}"),
    st.integers(0, 10**6).map(str),
    st.text(alphabet="0123456789. \t-+e١", max_size=8),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "garbage", ""]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=HEADER_VALUES)
def test_retry_after_headers_are_read_alike(value: str) -> None:
    class Throttled(ConnectionError):
        def __init__(self) -> None:
            super().__init__("429")
            self.headers = {"Retry-After": value}

    retry = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.05, jitter="none")
    delays = {}
    for engine in ENGINES:
        dlq = MemoryDLQ()

        def fn(record: Any) -> Any:
            raise Throttled()

        started = time.monotonic()
        batchguard.run_batches([1], fn, retry=retry, engine=engine, dlq=dlq)
        assert time.monotonic() - started < 10  # a hang guard: an uncapped wait would be hours
        delays[engine] = dlq.list()[0].attempts[0].delay_s
    assert delays["native"] == delays["python"], value


def test_knowing_the_clients_imports_none_of_them() -> None:
    # The default classifier matches names; a run that never used a client library must not
    # pay for importing one (nor fail where it is not installed).
    import subprocess
    import sys

    script = (
        "import sys, batchguard\n"
        "c = batchguard.Classifier.default()\n"
        "for exc in (ConnectionError(), ValueError(), OSError(), Exception()):\n"
        "    c.explain(exc)\n"
        "def fn(r):\n"
        "    raise ConnectionResetError(r)\n"
        "for engine in ('python', 'native'):\n"
        "    batchguard.run_batches([1, 2], fn, engine=engine,\n"
        "                           retry=batchguard.RetryPolicy(max_attempts=2, base_delay=0))\n"
        "libs = ('requests', 'urllib3', 'httpx', 'aiohttp', 'botocore', 'grpc', 'psycopg', 'psycopg2',\n"
        "        'sqlalchemy', 'redis')\n"
        "print(sorted(m for m in libs if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


RETRY_AFTER_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([1e12, 10**30, 10**400, -0.0, 0, True, False, None, "5", b"5"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(RETRY_AFTER_VALUES, min_size=1, max_size=4))
def test_huge_and_odd_retry_after_values_wait_alike_and_never_past_the_cap(values: list[Any]) -> None:
    class Throttled(ConnectionError):
        def __init__(self, retry_after: Any) -> None:
            super().__init__("slow down")
            self.retry_after = retry_after

    retry = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=1.0, jitter="none", max_retry_after=0.02)
    delays = {}
    for engine in ENGINES:
        dlq = MemoryDLQ()

        def fn(i: int) -> Any:
            raise Throttled(values[i])

        started = time.monotonic()
        batchguard.run_batches(list(range(len(values))), fn, retry=retry, engine=engine, dlq=dlq, concurrency=4)
        assert time.monotonic() - started < 10  # a hang guard: an uncapped wait would be hours
        delays[engine] = [e.attempts[0].delay_s for e in sorted(dlq.list(), key=lambda e: e.record_index)]
    assert delays["native"] == delays["python"], values
    assert all(0.001 <= d <= 0.02 for d in delays["python"])
