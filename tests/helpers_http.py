"""A real HTTP service on 127.0.0.1 that throttles and goes down, and a client for it.

``FlakyService`` is a stdlib ``ThreadingHTTPServer`` on an ephemeral loopback port, serving
``GET /item/<id>``. In the order it checks them:

* an outage: once the ``outage_after``-th request arrives, every request arriving in the next
  ``outage_s`` seconds (that one included) gets 503;
* throttling: the first request of each record in ``throttle`` that is not answered 503 gets
  429 with ``Retry-After: <retry_after>`` (whole seconds, as RFC 9110 writes it);
* otherwise 200 and ``{"id": <id>}``.

Every request's arrival (monotonic time, taken when the server accepts the connection, before
any handler thread runs) is logged with the record id and the status it got, so the tests can
measure the request rate, the gaps after a 429 and the calls made during the outage from the
server's side. ``fetch`` / ``afetch`` are the client: urllib, no proxy, raising
:class:`ServiceError` (``status_code``, ``retry_after``) for a non-2xx answer.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from batchguard import CircuitBreaker
from batchguard.policies import ErrorClass
from batchguard.reference import Breaker


@dataclass(frozen=True)
class Arrival:
    at: float
    """time.monotonic() when the server accepted the connection."""
    record: int
    status: int
    retry_after: float | None = None


class ServiceError(Exception):
    """A non-2xx answer, carrying what batchguard's classifier and backoff read."""

    def __init__(self, status_code: int, retry_after: float | None, record: int) -> None:
        super().__init__(f"HTTP {status_code} for record {record}")
        self.status_code = status_code
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in its delta-seconds form (the HTTP-date form is not used here)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Backlog well above the client's concurrency: no connection waits in the kernel's queue.
    request_queue_size = 128

    def __init__(self, service: FlakyService) -> None:
        self.service = service
        self.accepted: dict[int, float] = {}
        self.accepted_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # The accept loop's thread: the earliest moment the server knows a request came.
        with self.accepted_lock:
            self.accepted[id(request)] = time.monotonic()
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        with self.server.accepted_lock:
            arrived = self.server.accepted.pop(id(self.request))
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "item" or not parts[1].isdigit():
            self.send_error(404)
            return
        status, retry_after = self.server.service.decide(int(parts[1]), arrived)
        body = json.dumps({"id": int(parts[1])} if status == 200 else {"error": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)


class FlakyService:
    """See the module docstring. Use as a context manager; ``url`` is the base URL."""

    def __init__(self, *, throttle: Iterable[int] = (), retry_after: int = 1,
                 outage_after: int | None = None, outage_s: float = 0.0) -> None:
        self.throttle = frozenset(throttle)
        self.retry_after = retry_after
        self.outage_after = outage_after
        self.outage_s = outage_s
        self.outage_started: float | None = None
        self.arrivals: list[Arrival] = []
        self._throttled: set[int] = set()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def decide(self, record: int, arrived: float) -> tuple[int, int | None]:
        with self._lock:
            if (self.outage_after is not None and self.outage_started is None
                    and len(self.arrivals) + 1 >= self.outage_after):
                self.outage_started = arrived
            if self.outage_started is not None and self.in_outage(arrived):
                status, retry_after = 503, None
            elif record in self.throttle and record not in self._throttled:
                self._throttled.add(record)
                status, retry_after = 429, self.retry_after
            else:
                status, retry_after = 200, None
            self.arrivals.append(Arrival(arrived, record, status, retry_after))
        return status, retry_after

    def in_outage(self, at: float) -> bool:
        started = self.outage_started
        return started is not None and started <= at < started + self.outage_s

    @property
    def url(self) -> str:
        assert self._server is not None, "the service is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FlakyService:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="flaky-service", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def sorted_arrivals(self) -> list[Arrival]:
        with self._lock:
            return sorted(self.arrivals, key=lambda a: a.at)


# A direct opener: the tests talk to 127.0.0.1 only, whatever *_proxy the environment sets.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(base_url: str, record: int) -> dict[str, Any]:
    """GET the record; a non-2xx answer raises :class:`ServiceError`."""
    try:
        with _OPENER.open(f"{base_url}/item/{record}", timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        with err:  # an unclosed HTTPError keeps its socket open (a ResourceWarning later)
            retry_after = parse_retry_after(err.headers.get("Retry-After"))
        raise ServiceError(err.code, retry_after, record) from None


async def afetch(base_url: str, record: int) -> dict[str, Any]:
    """:func:`fetch` for an async callback: urllib on a worker thread."""
    return await asyncio.to_thread(fetch, base_url, record)


class Client:
    """``fetch`` as a batchguard callback that also notes when each attempt started (the
    moment the engine let it go), per record, in order."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.starts: list[tuple[int, float]] = []
        self._lock = threading.Lock()

    def _started(self, record: int) -> None:
        with self._lock:
            self.starts.append((record, time.monotonic()))

    def __call__(self, record: int) -> dict[str, Any]:
        self._started(record)
        return fetch(self.base_url, record)


class AsyncClient(Client):
    """The same, as an ``async def`` callback."""

    async def __call__(self, record: int) -> dict[str, Any]:  # type: ignore[override]
        self._started(record)
        return await afetch(self.base_url, record)


def latencies(starts: Sequence[tuple[int, float]], arrivals: Sequence[Arrival]) -> list[float]:
    """Seconds from each attempt's start (client side) to its arrival (server side). A record's
    requests are sequential, so its k-th start and its k-th arrival are the same request."""
    sent: dict[int, list[float]] = collections.defaultdict(list)
    for record, at in starts:
        sent[record].append(at)
    came: dict[int, list[float]] = collections.defaultdict(list)
    for arrival in arrivals:
        came[arrival.record].append(arrival.at)
    assert {r: len(v) for r, v in sent.items()} == {r: len(v) for r, v in came.items()}, \
        "the server saw a different set of requests than the client made"
    return [a - s for record in sent for s, a in zip(sorted(sent[record]), sorted(came[record]), strict=True)]


# ------------------------------------------------------------------------ the bounds the tests check


def worst_rate_excess(starts: Sequence[float], per_second: float, burst: int) -> float:
    """How far (seconds) a sequence of start times falls short of what a token bucket allows.

    A bucket of ``burst`` tokens refilled at ``per_second`` lets at most ``burst +
    per_second * (t_j - t_i)`` starts happen in any closed interval [t_i, t_j]: for the sorted
    starts, every i < j needs ``t_j - t_i >= (j - i + 1 - burst) / per_second``. Returns the
    largest shortfall over all pairs (<= 0: the limit held).
    """
    ts = sorted(starts)
    worst = -math.inf
    for i in range(len(ts)):
        for j in range(i + 1, len(ts)):
            worst = max(worst, (j - i + 1 - burst) / per_second - (ts[j] - ts[i]))
    return worst


def failures_to_trip(policy: CircuitBreaker, interleaved_successes: int) -> int:
    """The most counted failures a closed breaker can take before it opens, whatever its window
    held before and with up to ``interleaved_successes`` successes reporting among the failures.

    An exhaustive search over every order of those outcomes, played on the reference engine's
    own ``Breaker`` (so the answer follows the engines' rules, not a re-derivation of them).
    A window's contents (and how many successes are spent) is the whole state that matters, so
    the search is memoized on it.
    """
    import functools

    def after(window: tuple[bool, ...], failed: bool) -> tuple[tuple[bool, ...], bool]:
        breaker = Breaker(policy)
        breaker._window.extend(window)
        breaker.failures = sum(window)
        breaker.record(breaker.generation, failed, 0.0)
        return tuple(breaker._window), breaker.state != "closed"

    @functools.cache
    def most(window: tuple[bool, ...], successes_left: int) -> int:
        next_window, tripped = after(window, True)
        worst = 1 if tripped else 1 + most(next_window, successes_left)
        if successes_left:
            next_window, tripped = after(window, False)
            if not tripped:
                worst = max(worst, most(next_window, successes_left - 1))
        return worst

    # Any history the window can hold when the outage begins; successes are the worst for
    # it, but a mix is searched too (failures before the outage could still shape the window).
    import itertools

    histories = (history for size in range(policy.window + 1)
                 for history in itertools.product((False, True), repeat=size))
    worst = 0
    for history in histories:
        breaker = Breaker(policy)
        tripped = False
        for failed in history:
            breaker.record(breaker.generation, failed, 0.0)
            tripped = tripped or breaker.state != "closed"
        if not tripped:
            worst = max(worst, most(tuple(breaker._window), interleaved_successes))
    return worst


def outage_request_bound(policy: CircuitBreaker, concurrency: int, outage_s: float) -> int:
    """The most requests that can arrive during an outage of ``outage_s`` seconds when every
    one of them fails and is counted by the breaker (HTTP 503 is RECOVERABLE):

    * up to ``concurrency`` requests were already in flight when the outage began;
    * while the breaker stays closed, calls keep starting until the failures in its window
      reach the threshold: at most ``failures_to_trip`` of them report before it opens, with
      up to ``concurrency`` successes of pre-outage calls reporting among them;
    * when it opens, up to ``concurrency - 1`` others are still in flight;
    * once open, only probes start: ``half_open_calls`` after each ``open_duration``, and a
      failing probe reopens it, so at most ``(outage_s // open_duration + 1) * half_open_calls``.

    A probe that fails reopens the breaker (it never closes during the outage), so the closed
    state is entered at most once while the outage lasts.
    """
    assert ErrorClass.RECOVERABLE in policy.counts
    probes = (int(outage_s // policy.open_duration) + 1) * policy.half_open_calls
    return (concurrency + failures_to_trip(policy, concurrency) + (concurrency - 1) + probes)


def gaps_after_throttling(arrivals: Sequence[Arrival]) -> list[tuple[int, float, float]]:
    """For every 429: (record, seconds until that record's next request arrived, Retry-After)."""
    by_record: dict[int, list[Arrival]] = collections.defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: a.at):
        by_record[arrival.record].append(arrival)
    gaps = []
    for record, seen in by_record.items():
        for this, after in itertools.pairwise(seen):
            if this.status == 429:
                assert this.retry_after is not None
                gaps.append((record, after.at - this.at, this.retry_after))
    return gaps
