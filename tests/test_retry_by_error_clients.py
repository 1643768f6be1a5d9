"""Retry policies by error with real client exceptions (issue 10 item 2): httpx and requests
against a real HTTP server on 127.0.0.1, the retries counted on the server's side.

One mapping per client: its read timeout (the most specific key) may be retried 5 times, its
other transport errors (a dropped connection; any other timeout, for requests) not at all, a 429 (a predicate on the
response) 4 times, a 404 (PERMANENT) falls back to a value. Both engines.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import batchguard
from batchguard import ErrorClass, RetryPolicies, RetryPolicy
from helpers_client_server import ScriptedServer
from helpers_contract import ENGINES

CLIENT_TIMEOUT = 0.3
SERVER_SLEEP = 1.0
_tags = itertools.count()


def now(n: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=n, base_delay=0.0, jitter="none")


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def _missing(record: dict[str, str], error: BaseException) -> dict[str, Any]:
    return {"key": record["id"], "missing": True}


def httpx_setup(base: str) -> tuple[Callable[[dict[str, str]], Any], RetryPolicies]:
    httpx = pytest.importorskip("httpx")

    def fn(record: dict[str, str]) -> Any:
        with httpx.Client(timeout=CLIENT_TIMEOUT, trust_env=False) as client:
            response = client.get(base + record["path"])
            response.raise_for_status()
            return response.json()

    def throttled(exc: BaseException) -> bool:
        return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 429

    return fn, RetryPolicies(default=now(2), by_error={
        httpx.ReadTimeout: now(5), httpx.TransportError: now(1), throttled: now(4),
        ErrorClass.PERMANENT: RetryPolicy(fallback=_missing)})


def requests_setup(base: str) -> tuple[Callable[[dict[str, str]], Any], RetryPolicies]:
    requests = pytest.importorskip("requests")

    def fn(record: dict[str, str]) -> Any:
        with requests.Session() as session:
            session.trust_env = False
            with session.get(base + record["path"], timeout=CLIENT_TIMEOUT) as response:
                response.raise_for_status()
                return response.json()

    def throttled(exc: BaseException) -> bool:
        response = getattr(exc, "response", None)
        return isinstance(exc, requests.HTTPError) and response is not None and response.status_code == 429

    return fn, RetryPolicies(default=now(2), by_error={
        requests.exceptions.ReadTimeout: now(5), requests.exceptions.Timeout: now(1),
        requests.exceptions.ConnectionError: now(1), throttled: now(4),
        ErrorClass.PERMANENT: RetryPolicy(fallback=_missing)})


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("setup", [httpx_setup, requests_setup], ids=["httpx", "requests"])
def test_real_client_errors_get_their_own_policies(server: ScriptedServer, engine: str, setup: Any) -> None:
    tag = f"{setup.__name__}-{engine}-{next(_tags)}"
    paths = {
        "slow": f"/slow/{tag}-slow?sleep={SERVER_SLEEP}",  # a read timeout, then 200
        "dropped": f"/drop/{tag}-drop?times=3",  # the connection closed unanswered, 3 times
        "throttled": f"/status/429/{tag}-throttled",  # 429 for good
        "unavailable": f"/status/503/{tag}-unavailable",  # 503 for good: the default policy
        "missing": f"/status/404/{tag}-missing",  # PERMANENT: its fallback
    }
    fn, policies = setup(server.url)
    records = [{"id": name, "path": path} for name, path in paths.items()]
    report = batchguard.run_batches(records, fn, engine=engine, retry=policies)

    served = {name: server.count(path.split("?")[0]) for name, path in paths.items()}
    assert served == {"slow": 2, "dropped": 1, "throttled": 4, "unavailable": 2, "missing": 1}
    assert report.successful == [{"key": f"{tag}-slow"}, {"key": "missing", "missing": True}]
    assert (report.success_count, report.failure_count, report.fallback_count) == (2, 3, 1)
    assert {e.record_id: e.attempts for e in report.errors} == {"dropped": 1, "throttled": 4, "unavailable": 2}
