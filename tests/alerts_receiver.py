"""A real webhook receiver for the alert tests: a stdlib ThreadingHTTPServer on an ephemeral
127.0.0.1 port that records every POST's JSON and answers with the statuses it is told to
(``script``: one per request, in order; then 200)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    """What the receiver answered."""


class Receiver:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.script: list[int] = []
        self.retry_after: str | None = None
        self.hang = False
        """Hold each request (answering only once ``release`` is set): a receiver that hangs."""
        self.release = threading.Event()
        self.in_flight = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.hang:
                    with receiver._cond:
                        receiver.in_flight += 1
                        receiver._cond.notify_all()
                    receiver.release.wait(30)
                    with receiver._cond:
                        receiver.in_flight -= 1
                with receiver._cond:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.posts.append(Post(self.path, dict(self.headers), body, status))
                    receiver._cond.notify_all()
                self.send_response(status)
                if status != 200 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hooks/T0K3N-s3cret") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, rule: str | None = None) -> list[dict[str, Any]]:
        """The JSON of the posts answered 2xx (what was delivered), of ``rule`` if given."""
        with self._cond:
            return [p.body for p in self.posts if p.status < 300 and (rule is None or p.body["rule"] == rule)]

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0) -> bool:
        """Block until ``check(delivered bodies)`` holds (a guard, not a measurement)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check([p.body for p in self.posts if p.status < 300]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_in_flight(self, timeout: float = 20.0) -> bool:
        """Block until a request is held by a hanging receiver (a guard, not a measurement)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight > 0, timeout)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def episodes(bodies: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(state, episode, reason) of each notice, in order."""
    return [(b["state"], b["episode"], b["reason"]) for b in bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` for one test (a fixture: import it into a test module)."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
