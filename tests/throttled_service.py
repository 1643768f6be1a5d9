"""A real HTTP service on 127.0.0.1 that allows so many requests per second and can go down,
counting every request it gets (issue 10 item 6: adaptive concurrency and the retry budget are
judged at the server, not by what the client believes it sent).

``ThrottledService`` is a stdlib ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) on an ephemeral
loopback port serving ``GET /item/<id>``:

* during an outage (``outage(seconds)``), every request gets 503 at once;
* otherwise a token bucket of ``rate`` requests per second (``burst`` deep) decides: a request
  without a token gets 429 at once, one with a token is answered 200 after ``latency_s`` (the
  work a real service does; it is what makes concurrency matter: at 200/s and 50 ms, ten calls
  in flight are what the service can take).

Each request's arrival is logged (monotonic time, record id, status), so tests and the bench
count 429s, first attempts and retries, per window, from the server's side. Used by
``tests/test_adaptive_http.py``, ``tests/test_budget_http.py`` and ``benches/bench_adaptive.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Arrival:
    at: float
    """time.monotonic() when the request was read."""
    record: int
    status: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        record = int(self.path.rsplit("/", 1)[-1])
        status, delay = self.server.service.decide(record)
        if delay:
            time.sleep(delay)
        body = b'{"id": %d}' % record if status == 200 else b'{"error": "%d"}' % status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the arrivals are the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    service: ThrottledService


class ThrottledService:
    """See the module doc. Use as a context manager; ``url(record)`` is a record's address."""

    def __init__(self, rate: float = 200.0, burst: float = 20.0, latency_s: float = 0.05) -> None:
        self.rate, self.burst, self.latency_s = rate, burst, latency_s
        self._tokens = burst
        self._refilled = time.monotonic()
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.service = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="throttled-service",
                                        daemon=True)

    def __enter__(self) -> ThrottledService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, record: int) -> str:
        return f"{self.base}/item/{record}"

    def outage(self, seconds: float) -> None:
        """Answer 503 to every request for the next ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def decide(self, record: int) -> tuple[int, float]:
        """(status, seconds to take) for a request of ``record`` arriving now; logged."""
        with self._lock:
            now = time.monotonic()
            if now < self._down_until:
                status, delay = 503, 0.0
            else:
                self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
                self._refilled = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    status, delay = 200, self.latency_s
                else:
                    status, delay = 429, 0.0
            self.arrivals.append(Arrival(now, record, status))
        return status, delay

    # ------------------------------------------------------------------ what the server saw

    def count(self, status: int) -> int:
        return sum(1 for a in self.arrivals if a.status == status)

    def share(self, status: int) -> float:
        """The share of all requests answered ``status``."""
        return self.count(status) / len(self.arrivals) if self.arrivals else 0.0

    def first_and_retries(self) -> list[tuple[float, bool]]:
        """Each request in arrival order as (time, is a retry): a retry is a request for a
        record the server had seen before."""
        seen: set[int] = set()
        out = []
        for arrival in sorted(self.arrivals, key=lambda a: a.at):
            out.append((arrival.at, arrival.record in seen))
            seen.add(arrival.record)
        return out
