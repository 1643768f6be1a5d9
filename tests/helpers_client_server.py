"""A scripted HTTP server on 127.0.0.1 for the real-client tests, and ports that misbehave.

Paths are ``/<scenario>/<key>[?query]``; the server notes when each request arrived (per path,
monotonic and wall clock) so tests measure retry gaps on the server's side:

* ``/ok/<key>``: 200 with ``{"key": key}``.
* ``/status/<code>/<key>?retry_after=V``: always ``code``, with ``Retry-After: V`` if given.
* ``/once/<code>/<key>?retry_after=V``: ``code`` (and the header) the first time, 200 after.
  ``V`` may be ``date+N``: an HTTP-date N seconds from the moment of the answer.
* ``/slow/<key>?sleep=S``: the first request sleeps S seconds before its 200, later ones don't.
* ``/drop/<key>?times=N``: the first N requests (default 1) are closed without an answer (aiohttp
  retries a GET once by itself when that happens), later ones get 200.
* ``/aws-<name>...``: an S3-style XML error for botocore (``AWS_ERRORS``), with
  ``Retry-After: 1``.
"""

from __future__ import annotations

import collections
import email.utils
import json
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# bucket name -> (HTTP status, AWS error code)
AWS_ERRORS = {
    "aws-throttling": (400, "Throttling"),
    "aws-slowdown": (503, "SlowDown"),
    "aws-denied": (403, "AccessDenied"),
    "aws-unknown-500": (500, "SomethingNew"),
    "aws-unknown-404": (404, "NoSuchBucket"),
}


@dataclass(frozen=True)
class Arrival:
    at: float
    """time.monotonic() when the request was read."""
    wall: float
    """time.time() at the same moment."""
    status: int
    retry_after: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out closed its end: writing the late answer fails, as expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        at, wall = time.monotonic(), time.time()
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        owner = self.server.owner
        seen = owner.count(url.path)
        scenario = parts[0]
        retry_after = query.get("retry_after")
        if retry_after is not None and retry_after.startswith("date+"):
            retry_after = email.utils.formatdate(wall + float(retry_after[5:]), usegmt=True)
        if scenario == "ok":
            status, retry_after = 200, None
        elif scenario == "status":
            status = int(parts[1])
        elif scenario == "once":
            status = int(parts[1]) if seen == 0 else 200
            retry_after = retry_after if seen == 0 else None
        elif scenario == "slow":
            status, retry_after = 200, None
            if seen == 0:
                owner.note(url.path, Arrival(at, wall, 200, None))
                time.sleep(float(query.get("sleep", "1")))
                self._answer(200, None, {"key": parts[-1]})
                return
        elif scenario == "drop":
            status, retry_after = (0, None) if seen < int(query.get("times", "1")) else (200, None)
        elif scenario in AWS_ERRORS:
            status, code = AWS_ERRORS[scenario]
            owner.note(url.path, Arrival(at, wall, status, "1"))
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>scripted {code}</Message><RequestId>r1</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)
            return
        else:
            status, retry_after = 404, None
        owner.note(url.path, Arrival(at, wall, status, retry_after))
        if status == 0:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(status, retry_after, {"key": parts[-1]} if status == 200 else {"error": status})

    def _answer(self, status: int, retry_after: str | None, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)


class ScriptedServer:
    """See the module docstring. A context manager; ``url`` is the base URL."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[Arrival]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.arrivals[path])

    def note(self, path: str, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals[path].append(arrival)

    def seen(self, path: str) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals[path])

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def dead_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@contextmanager
def backlogged_port() -> Iterator[int]:
    """A port whose listen queue is full: the kernel drops new connection attempts, so a
    client's connect times out (a real connect timeout, on loopback)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.05)  # the handshakes complete and fill the queue
            yield port
        finally:
            for filler in fillers:
                filler.close()


def gap_after_first(arrivals: list[Arrival]) -> float:
    """Seconds between the first and the second request to one path, on the server's clock."""
    assert len(arrivals) >= 2, f"expected a retry, the server saw {len(arrivals)} request(s)"
    return arrivals[1].at - arrivals[0].at


def header_date_wait(arrival: Arrival) -> float:
    """For an answer whose Retry-After was an HTTP-date: seconds from that answer to the date."""
    assert arrival.retry_after is not None
    when = email.utils.parsedate_to_datetime(arrival.retry_after).timestamp()
    return when - arrival.wall if math.isfinite(when) else math.inf
