"""Alerts (issue 10 item 4) against hostile input: arguments that would leak a webhook's
secret or crash a thread later, receivers that misbehave at the socket level (a body that never
ends, a garbled answer), notify callables that raise BaseException, Ctrl-C during the end-of-run
drain. Every receiver is a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import batchguard
from alerts_receiver import Receiver, receiver
from batchguard import AlertRule, ConfigError, ConfigTypeError, RetryPolicy
from batchguard.alerts import Alert, AlertMonitor, Webhook
from batchguard.alerts import monitor as monitor_module
from batchguard.alerts.webhook import WebhookSender
from helpers_contract import ENGINES

__all__ = ["receiver"]  # a fixture (alerts_receiver.receiver), used by name

ONCE = RetryPolicy(max_attempts=1)


class RawServer:
    """A TCP server on 127.0.0.1 that reads one HTTP request per connection and then runs
    ``answer(connection)``: for answers no HTTP server library would send."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.stop = threading.Event()
        self._answer = answer
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            try:
                self._answer(conn)
            except OSError:
                pass

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T0K3N-s3cret"

    def close(self) -> None:
        self.stop.set()
        self._socket.close()


def _join_alert_threads() -> None:
    """Wait for alert threads a test left behind on purpose (a hung callable, released)."""
    for thread in threading.enumerate():
        if thread.name.startswith("batchguard-alert"):
            thread.join(10)
            assert not thread.is_alive()


def _send_one(hook: Webhook) -> WebhookSender:
    sender = WebhookSender(hook)
    sender.start()
    sender.send({"state": "firing", "name": "probe"})
    sender.close()
    return sender


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("url", ["http://[::1/T0K3N", "http://127.0.0.1/T0K3N path", "http://127.0.0.1/T0K3N\r\nX: y",
                                 "http://127.0.0.1/t\u00f6k3n", "http://127.0.0.1/T0K3N\x00"])
def test_a_url_no_request_can_carry_is_refused_when_made_without_showing_it(url: str) -> None:
    # Accepted before, the URL failed at each POST with an error quoting its path (the token)
    # into the log; the bracket one raised UnboundLocalError.
    with pytest.raises(ConfigError) as caught:
        Webhook(url)
    assert "T0K3N" not in str(caught.value) and "k3n" not in str(caught.value)


@pytest.mark.parametrize("headers", [{"X-Token": "s3cret\r\nInjected: yes"}, {"X-Token": "s3cret\n"},
                                     {"X-Token": "\u20acs3cret"}, {"Bad:Name": "s3cret"}, {"": "s3cret"},
                                     {"Bad Name": "s3cret"}])
def test_a_header_no_request_can_carry_is_refused_when_made_without_showing_its_value(
        headers: dict[str, str]) -> None:
    # Accepted before, and each POST failed with "Invalid header value b's3cret...'" in the log.
    with pytest.raises(ConfigError) as caught:
        Webhook("http://127.0.0.1/hook", headers=headers)
    assert "s3cret" not in str(caught.value)


def test_stalled_needs_a_positive_duration() -> None:
    # for_s=0 fired at the run's start and could never resolve (a stall of 0 s is always true).
    with pytest.raises(ConfigError, match=r"stalled\(for_s=...\) must be > 0"):
        AlertRule.stalled(0, notify=print)


@pytest.mark.parametrize("fields", [{"threshold": "abc"}, {"threshold": float("nan")}, {"window_s": "x"},
                                    {"min_records": 3}])
def test_fields_a_kind_does_not_use_are_refused_on_the_plain_constructor(fields: dict[str, Any]) -> None:
    # AlertRule("aborted", print, "abc") raised a bare ValueError from float(); a window_s on a
    # stalled rule a formatting error; others were kept and ignored.
    with pytest.raises(ConfigError):
        AlertRule("aborted" if "threshold" in fields else "stalled", print,
                  **({"threshold": 5.0} if "threshold" not in fields else {}), **fields)


# ---------------------------------------------------------------------------- receivers


def test_an_answer_body_is_never_read_so_a_huge_or_endless_one_costs_nothing() -> None:
    # 200 with a body announced at 1 GB and sent a byte at a time: the sender read the body
    # until the end of the run, left the thread behind and counted the notice nowhere.
    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        while not server.stop.wait(0.05):
            conn.sendall(b"x")

    server = RawServer(endless)
    try:
        sender = _send_one(Webhook(server.url(), timeout=1, drain_s=1, retries=0))
    finally:
        server.close()
    assert (sender.delivered, sender.failed) == (1, 0)


def test_a_garbled_answer_is_retried_like_a_dropped_connection(caplog: pytest.LogCaptureFixture) -> None:
    # "HELLO" instead of a status line (http.client.BadStatusLine) was given up at once as
    # "could not be sent", as if the payload were at fault.
    answers = iter([b"HELLO\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    server = RawServer(lambda conn: conn.sendall(next(answers)))
    try:
        with caplog.at_level(logging.WARNING, logger="batchguard"):
            sender = _send_one(Webhook(server.url(), timeout=2, drain_s=5, retries=1, backoff_s=0.01))
    finally:
        server.close()
    assert (sender.delivered, sender.failed) == (1, 0)
    assert "T0K3N" not in caplog.text


def test_a_notice_left_in_flight_at_the_end_is_counted(receiver: Receiver) -> None:
    # The receiver holds the POST past the sender's join: the notice in flight was counted
    # neither delivered nor failed (report.alert_failures said 0).
    receiver.hang = True
    hook = Webhook(receiver.url(), timeout=30, drain_s=0, retries=0)
    sender = WebhookSender(hook)
    sender.start()
    sender.send({"state": "firing", "name": "probe"})
    assert receiver.wait_in_flight()
    sender.join_s = 0.2  # what close() waits for the thread; the request's own timeout is longer
    sender.close()
    receiver.release.set()
    _join_alert_threads()
    assert (sender.delivered, sender.failed) == (0, 1)


# ---------------------------------------------------------------------------- notify callables


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_notify_raising_base_exception_is_counted_and_the_other_rules_still_hear(
        engine: str, raised: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    # SystemExit from a callable ended the timer thread silently: every later notice, of every
    # rule, was lost, and report.alert_failures said 0.
    heard: list[tuple[str, str]] = []

    def boom(alert: Alert) -> None:
        raise raised

    def fn(x: int) -> int:
        if 10 <= x < 40:
            raise ValueError(x)
        return x

    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(200), fn, engine=engine, batch_size=10, retry=ONCE, alerts=[
            AlertRule.failure_rate(0.2, 600, notify=boom),
            AlertRule.failure_rate(0.2, 600, notify=lambda a: heard.append((a.state, a.reason)), name="second")])
    assert heard == [("firing", "threshold"), ("resolved", "cleared")]
    assert report.alert_failures == 2
    assert type(raised).__name__ in caplog.text


# ---------------------------------------------------------------------------- Ctrl-C at the end


def test_ctrl_c_during_the_drain_stops_every_sender(receiver: Receiver) -> None:
    # Two webhooks, both held by the receiver: Ctrl-C while the first one drained left the
    # second one's thread waiting for ever (its close() was never reached), a thread per run.
    receiver.hang = True
    first, second = (Webhook(receiver.url(f"/{n}"), timeout=30, drain_s=30, retries=0) for n in (1, 2))
    monitor = AlertMonitor([AlertRule.aborted(notify=first), AlertRule.aborted(notify=second, name="two")],
                           max_failures=None)
    monitor.run_started("run-1", "process", None)
    monitor._end("interrupt", {"error_type": "KeyboardInterrupt"})
    main = threading.main_thread().ident
    assert main is not None

    def draining() -> bool:
        """Is the main thread in a sender's close(), the end-of-run drain?"""
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code is WebhookSender.close.__code__:
                return True
            frame = frame.f_back
        return False

    def ctrl_c() -> None:
        with receiver._cond:
            receiver._cond.wait_for(lambda: receiver.in_flight == 2, 20)
        # Ctrl-C only once the drain has begun: sent sooner, it would interrupt pytest itself.
        deadline = time.monotonic() + 20
        while not draining():
            if time.monotonic() > deadline:
                return  # the test fails: run_closed returns without KeyboardInterrupt
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)

    threads = [t for t in threading.enumerate() if t.name == "batchguard-alert-webhook"]
    threading.Thread(target=ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        monitor.run_closed(KeyboardInterrupt())
    receiver.release.set()
    for thread in threads:
        thread.join(10)
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)


def test_credentials_in_the_url_are_sent_as_basic_auth(receiver: Receiver) -> None:
    # urllib takes "user:pw@127.0.0.1" for the host name: a URL with credentials, accepted and
    # shown as http://***@host/, failed every POST with "Name or service not known".
    url = receiver.url("/hooks/T0K3N").replace("http://", "http://alerts:p%40ss@")
    sender = _send_one(Webhook(url, retries=0))
    assert (sender.delivered, sender.failed) == (1, 0)
    post = receiver.posts[0]
    assert post.path == "/hooks/T0K3N" and post.headers["Authorization"] == "Basic YWxlcnRzOnBAc3M="
    # An Authorization header given explicitly wins over the URL's.
    _send_one(Webhook(url, retries=0, headers={"Authorization": "Bearer t0k3n"}))
    assert receiver.posts[1].headers["Authorization"] == "Bearer t0k3n"
    assert repr(Webhook(url)) == f"Webhook('http://***@127.0.0.1:{receiver.port}/***', timeout=5, retries=3)"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_notify_that_blocks_for_ever_holds_back_no_webhook_and_its_notices_are_counted(
        receiver: Receiver, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A callable that never returns held the timer thread, which also handed webhook notices
    # to their senders: the webhook rule's notices never left, and report.alert_failures said 0
    # though three notices to callables were lost (the one in hand, the ones queued behind it).
    monkeypatch.setattr(monitor_module, "CALLABLE_DRAIN_S", 0.5)  # the end's wait for callables
    release = threading.Event()
    heard: list[Alert] = []
    try:
        report = batchguard.run_batches(
            range(200), lambda x: 1 // (x % 3), engine=engine, batch_size=10, retry=ONCE, max_failures=50,
            alerts=[AlertRule.failure_rate(0.2, 600, notify=lambda alert: release.wait()),
                    AlertRule.failure_rate(0.2, 600, notify=Webhook(receiver.url(), retries=0), name="webhook"),
                    AlertRule.aborted(notify=heard.append)])
    finally:
        release.set()
    _join_alert_threads()
    # Counted as not delivered, and so never delivered late, after the run returned.
    assert report.status == "aborted" and heard == []
    assert [(b["name"], b["state"]) for b in receiver.bodies()] == [("webhook", "firing"), ("webhook", "resolved")]
    assert report.alert_failures == 3


def test_notices_held_behind_a_hanging_callable_are_bounded_and_counted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Records alternately fail and succeed: the whole-run rate crosses 50 % at every record,
    # a notice each. Behind a callable that hangs, every one of them was held in memory.
    monkeypatch.setattr(monitor_module, "CALLABLE_DRAIN_S", 0.5)

    def rules(notify: Callable[[Alert], Any]) -> list[AlertRule]:
        return [AlertRule.failure_rate(0.5, 600, min_records=1, notify=notify)]

    def run(notify: Callable[[Alert], Any]) -> batchguard.BatchReport[Any]:
        return batchguard.run_batches(range(3000), lambda x: 1 // (x % 2), batch_size=1, concurrency=1,
                                      retry=ONCE, alerts=rules(notify))

    raised: list[Alert] = []
    run(raised.append)
    assert len(raised) > monitor_module.MAX_HELD
    release = threading.Event()
    try:
        with caplog.at_level(logging.ERROR, logger="batchguard"):
            report = run(lambda alert: release.wait())
    finally:
        release.set()
    _join_alert_threads()
    assert report.alert_failures == len(raised)
    assert f"{monitor_module.MAX_HELD} notices wait for the notify callables already" in caplog.text


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cancelled_arun_batches_fires_aborted_and_joins_its_threads(receiver: Receiver, engine: str) -> None:
    started = asyncio.Event()

    async def fn(x: int) -> int:
        started.set()
        await asyncio.sleep(3600)  # cancelled, never finished
        return x

    async def main() -> None:
        task = asyncio.create_task(batchguard.arun_batches(
            range(100), fn, engine=engine, concurrency=4,
            alerts=[AlertRule.aborted(notify=Webhook(receiver.url(), retries=0))]))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    figures = [b["figures"] for b in receiver.bodies()]
    assert figures == [{"stopped_reason": "interrupt", "error_type": "CancelledError"}]
    assert not [t for t in threading.enumerate() if t.name.startswith("batchguard-alert")]


def test_a_redirect_is_not_followed_and_the_log_says_so(caplog: pytest.LogCaptureFixture) -> None:
    server = RawServer(lambda conn: conn.sendall(
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:9/new/T0K3N\r\nContent-Length: 0\r\n\r\n"))
    try:
        with caplog.at_level(logging.ERROR, logger="batchguard"):
            sender = _send_one(Webhook(server.url(), retries=3, backoff_s=0.01))
    finally:
        server.close()
    assert (sender.delivered, sender.failed) == (0, 1)
    assert "failed 1 time(s), last: HTTP 301 (a redirect, not followed: a POST" in caplog.text
    assert "T0K3N" not in caplog.text


def test_an_async_notify_is_refused_and_a_returned_coroutine_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    # An async def notify was called and its coroutine dropped ("never awaited"): the notice was
    # lost and counted as delivered (report.alert_failures 0).
    async def page(alert: Alert) -> None:
        pass

    with pytest.raises(ConfigTypeError, match="async def"):
        AlertRule.aborted(notify=page)

    def fn(x: int) -> int:
        raise ValueError(x)

    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(20), fn, retry=ONCE, max_failures=0,
                                        alerts=[AlertRule.aborted(notify=lambda alert: page(alert))])
    assert report.alert_failures == 1
    assert "returned a coroutine" in caplog.text


def test_a_webhook_cannot_be_changed_past_its_checks() -> None:
    # Its fields were plain attributes: hook.headers["X-Token"] = "s3cret\r\n..." or
    # hook.timeout = -1 after the checks came back as a leak or a crash on the sender thread.
    hook = Webhook("http://127.0.0.1/hook", headers={"X-Team": "data"})
    with pytest.raises(TypeError):
        hook.headers["X-Token"] = "s3cret\r\nInjected: yes"  # type: ignore[index]
    with pytest.raises(AttributeError, match="Webhook is read-only"):
        hook.timeout = -1.0
    assert dict(hook.headers) == {"X-Team": "data"} and hook.timeout == 5.0
    for copied in (copy.deepcopy(hook), pickle.loads(pickle.dumps(hook))):  # noqa: S301 - our own bytes
        assert dict(copied.headers) == {"X-Team": "data"} and copied.url == hook.url


def test_a_failure_rate_rule_that_could_never_fire_is_refused() -> None:
    # above=1.0 was accepted: "more than 100 % dead-lettered" never happens, so the rule was
    # silent however bad the run went.
    with pytest.raises(ConfigError, match=r"failure_rate\(above=...\) must be in \[0, 1\), got 1.0"):
        AlertRule.failure_rate(above=1.0, notify=print)


def test_a_drain_that_waits_says_so_and_how_to_skip_it(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    # The end of a run waited up to drain_s plus a request's timeout in silence: after Ctrl-C,
    # nothing said why the program did not stop, nor that a second Ctrl-C ends the wait.
    receiver.hang = True
    sender = WebhookSender(Webhook(receiver.url(), timeout=30, drain_s=0, retries=0))
    sender.start()
    sender.send({"state": "firing", "name": "probe"})
    assert receiver.wait_in_flight()
    sender.join_s = 1.5
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        sender.close()
    receiver.release.set()
    _join_alert_threads()
    assert "still delivering 1 notice(s)" in caplog.text and "Ctrl-C to skip" in caplog.text
    assert "T0K3N" not in caplog.text


def test_every_webhook_drains_at_once_not_one_after_another(receiver: Receiver) -> None:
    # Each webhook's drain began only when the previous one's had ended: with N receivers that
    # hang, the end of a run waited N times drain_s plus a timeout, not once as documented.
    receiver.hang = True
    hooks = [Webhook(receiver.url(f"/{n}"), timeout=30, drain_s=0, retries=0) for n in range(3)]
    monitor = AlertMonitor([AlertRule.aborted(notify=hook, name=f"r{n}") for n, hook in enumerate(hooks)],
                           max_failures=None)
    monitor.run_started("run-1", "process", None)
    monitor._end("interrupt", {"error_type": "KeyboardInterrupt"})
    with receiver._cond:
        assert receiver._cond.wait_for(lambda: receiver.in_flight == 3, 20)
    senders = list(monitor._senders.values())
    for sender in senders:
        sender.join_s = 0.2
    closing_seen: list[bool] = []
    original = WebhookSender.close

    def close(self: WebhookSender) -> None:
        closing_seen.append(all(s._closing.is_set() for s in senders))  # when each one's wait begins
        original(self)

    WebhookSender.close = close  # type: ignore[method-assign]
    try:
        monitor.run_closed(None)
    finally:
        WebhookSender.close = original  # type: ignore[method-assign]
        receiver.release.set()
        _join_alert_threads()
    assert closing_seen == [True, True, True]
    assert monitor.alert_failures == 3
