"""Alerts (issue 10 item 4) against a real webhook receiver on 127.0.0.1, on both engines:
each condition fires once per episode and resolves; a receiver that answers 500 then 200
gets the retry; a receiver that is down costs the run nothing but is logged and counted."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import pytest

import batchguard
from alerts_receiver import Receiver, episodes, receiver
from batchguard import AlertRule, CircuitBreaker, RetryPolicy
from batchguard._run.execute import recorder_for
from batchguard._run.plan import close_opened_dlq, make_plan
from batchguard.alerts import Webhook
from helpers_contract import ENGINES

__all__ = ["receiver"]  # a fixture (alerts_receiver.receiver), used by name

ONCE = RetryPolicy(max_attempts=1)
FAST = {"backoff_s": 0.05, "timeout": 5.0}


def _alert_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batchguard-alert")]


def _failing(bad: set[int]) -> Any:
    def fn(x: int) -> int:
        if x in bad:
            raise ValueError(f"bad record {x}")
        return x
    return fn


@pytest.mark.parametrize("engine", ENGINES)
def test_failure_rate_fires_once_per_episode_and_resolves_when_it_clears(receiver: Receiver, engine: str) -> None:
    # The rate over the (whole-run) window rises above 20 % twice, and falls back each time:
    # records 10-29 fail (rate 20/30 at 30, back to 20 % at 100), then 200-239 (above from 226,
    # back at 300). The rate moves monotonically within each phase, so two episodes exactly.
    bad = set(range(10, 30)) | set(range(200, 240))
    hook = Webhook(receiver.url(), **FAST)
    report = batchguard.run_batches(range(1000), _failing(bad), engine=engine, batch_size=10, retry=ONCE,
                                    alerts=[AlertRule.failure_rate(above=0.2, window_s=600, notify=hook)])
    assert report.failure_count == len(bad) and report.alert_failures == 0
    bodies = receiver.bodies("failure_rate")
    assert episodes(bodies) == [("firing", 1, "threshold"), ("resolved", 1, "cleared"),
                                ("firing", 2, "threshold"), ("resolved", 2, "cleared")]
    first = bodies[0]
    assert first["run_id"] == report.run_id and first["stage"] == "process" and first["job_id"] is None
    assert first["figures"]["failure_rate"] > 0.2 and first["figures"]["above"] == 0.2
    assert first["figures"]["finished"] >= 10  # min_records
    assert bodies[1]["figures"]["failure_rate"] <= 0.2
    assert first["started_at"].endswith("Z") and first["message"].startswith("[FIRING]")
    assert not _alert_threads()


@pytest.mark.parametrize("engine", ENGINES)
def test_breaker_open_fires_after_for_s_and_resolves_when_it_closes(receiver: Receiver, engine: str) -> None:
    # Four failures in a row open the breaker; it stays open 0.5 s (its cooldown), probes, and
    # the probe succeeds: one episode of "open for 0.1 s", resolved when it closes.
    breaker = CircuitBreaker(failure_rate_threshold=1.0, window=4, minimum_calls=4, open_duration=0.5,
                             half_open_calls=1)

    def fn(x: int) -> int:
        if x < 4:
            raise ConnectionError(f"down for {x}")
        return x

    report = batchguard.run_batches(range(20), fn, engine=engine, breaker=breaker, retry=ONCE,
                                    alerts=[AlertRule.breaker_open(for_s=0.1, notify=Webhook(receiver.url(), **FAST))])
    assert report.breaker_trips == 1 and report.success_count == 16
    bodies = receiver.bodies("breaker_open")
    assert episodes(bodies) == [("firing", 1, "threshold"), ("resolved", 1, "cleared")]
    assert bodies[0]["figures"]["open_s"] >= 0.1 and bodies[0]["figures"]["trips"] == 1
    assert bodies[1]["figures"]["breaker_state"] == "closed"


@pytest.mark.parametrize("engine", ENGINES)
def test_budget_burn_of_a_count_resolves_only_when_the_run_ends(receiver: Receiver, engine: str) -> None:
    # 6 of a budget of 10 used: 60 % >= 50 %; a count only grows, so the episode ends with the run.
    hook = Webhook(receiver.url(), **FAST)
    report = batchguard.run_batches(range(100), _failing(set(range(6))), engine=engine, retry=ONCE,
                                    batch_size=10, max_failures=10,
                                    alerts=[AlertRule.budget_burn(share=0.5, notify=hook)])
    assert report.status == "partial_success"
    bodies = receiver.bodies("budget_burn")
    assert episodes(bodies) == [("firing", 1, "threshold"), ("resolved", 1, "run_ended")]
    assert bodies[0]["figures"]["max_failures"] == 10 and bodies[0]["figures"]["burn"] >= 0.5


@pytest.mark.parametrize("engine", ENGINES)
def test_budget_burn_of_a_rate_clears_when_the_rate_falls(receiver: Receiver, engine: str) -> None:
    # max_failures=0.4: 3 failures in the first 10 records burn 0.3/0.4 = 75 %; 90 successes
    # bring the rate to 3 %, a burn of 7.5 %.
    hook = Webhook(receiver.url(), **FAST)
    report = batchguard.run_batches(range(100), _failing({1, 4, 7}), engine=engine, retry=ONCE,
                                    batch_size=10, max_failures=0.4,
                                    alerts=[AlertRule.budget_burn(share=0.5, notify=hook)])
    assert report.status == "partial_success"
    assert episodes(receiver.bodies("budget_burn")) == [("firing", 1, "threshold"), ("resolved", 1, "cleared")]


@pytest.mark.parametrize("engine", ENGINES)
def test_stalled_fires_while_no_record_finishes_and_resolves_when_one_does(receiver: Receiver,
                                                                           engine: str) -> None:
    # Record 2 blocks until the receiver has the stalled notice (the run cannot move on before
    # the alert reached its receiver): it fired from the timer while the run's thread was stuck
    # in fn, and resolved once that record finished.
    hook = Webhook(receiver.url(), **FAST)

    def fn(x: int) -> int:
        if x == 2:
            assert receiver.wait_for(lambda bodies: any(b["rule"] == "stalled" for b in bodies))
        return x

    report = batchguard.run_batches(range(5), fn, engine=engine,
                                    alerts=[AlertRule.stalled(for_s=0.5, notify=hook)])
    assert report.status == "complete"
    bodies = receiver.bodies("stalled")
    assert episodes(bodies) == [("firing", 1, "threshold"), ("resolved", 1, "cleared")]
    # the counts as last seen (a snapshot is taken between calls, at most every 0.1 s): at
    # most the two records before the stuck one
    assert bodies[0]["figures"]["finished"] <= 2 and bodies[0]["figures"]["stalled_s"] >= 0.5
    assert bodies[1]["figures"]["finished"] >= 3


@pytest.mark.parametrize("engine", ENGINES)
def test_aborted_fires_once_with_why_the_run_stopped(receiver: Receiver, engine: str) -> None:
    hook = Webhook(receiver.url(), headers={"X-Team": "data"}, **FAST)
    report = batchguard.run_batches(range(50), _failing(set(range(5))), engine=engine, retry=ONCE,
                                    max_failures=2, alerts=[AlertRule.aborted(notify=hook)])
    assert report.status == "aborted"
    bodies = receiver.bodies("aborted")
    assert episodes(bodies) == [("firing", 1, "threshold")]
    assert bodies[0]["figures"] == {"stopped_reason": "max_failures", "status": "aborted",
                                    "succeeded": report.success_count, "failed": report.failure_count,
                                    "pending": report.pending_count}
    post = receiver.posts[0]
    assert post.path == "/hooks/T0K3N-s3cret" and post.headers["X-Team"] == "data"
    assert post.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_fires_aborted_and_joins_the_alert_threads(receiver: Receiver, engine: str) -> None:
    hook = Webhook(receiver.url(), **FAST)

    def fn(x: int) -> int:
        if x == 7:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        batchguard.run_batches(range(50), fn, engine=engine, batch_size=5,
                               alerts=[AlertRule.aborted(notify=hook), AlertRule.stalled(60, notify=hook)])
    bodies = receiver.bodies()
    assert episodes(bodies) == [("firing", 1, "threshold")]
    assert bodies[0]["figures"] == {"stopped_reason": "interrupt", "error_type": "KeyboardInterrupt"}
    assert not _alert_threads()


class BrokenDLQ(batchguard.MemoryDLQ):
    def send(self, entries: Any) -> None:
        raise batchguard.DLQError("the queue is down")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_that_raises_fires_aborted_with_the_error(receiver: Receiver, engine: str) -> None:
    hook = Webhook(receiver.url(), **FAST)
    with pytest.raises(batchguard.DLQError):
        batchguard.run_batches(range(50), _failing({3}), engine=engine, retry=ONCE, dlq=BrokenDLQ(),
                               alerts=[AlertRule.aborted(notify=hook)])
    assert [b["figures"] for b in receiver.bodies()] == [{"stopped_reason": "error", "error_type": "DLQError"}]
    assert not _alert_threads()


@pytest.mark.parametrize("engine", ENGINES)
def test_an_async_run_alerts_as_a_sync_one(receiver: Receiver, engine: str) -> None:
    async def fn(x: int) -> int:
        if x < 4:
            raise ValueError(x)
        return x

    hook = Webhook(receiver.url(), **FAST)
    report = asyncio.run(batchguard.arun_batches(range(40), fn, engine=engine, retry=ONCE, max_failures=3,
                                                 concurrency=4, alerts=[AlertRule.aborted(notify=hook)]))
    assert report.status == "aborted"
    assert [b["figures"]["stopped_reason"] for b in receiver.bodies()] == ["max_failures"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_receiver_answering_500_then_200_gets_the_retry(receiver: Receiver, engine: str) -> None:
    receiver.script = [500, 503]
    receiver.retry_after = "0"
    hook = Webhook(receiver.url(), **FAST)
    report = batchguard.run_batches(range(20), _failing({0, 1, 2}), engine=engine, retry=ONCE,
                                    max_failures=1, alerts=[AlertRule.aborted(notify=hook)])
    assert report.status == "aborted" and report.alert_failures == 0
    assert [p.status for p in receiver.posts] == [500, 503, 200]
    assert receiver.posts[0].body == receiver.posts[2].body  # the same notice, tried again


def test_a_4xx_is_not_retried_and_is_counted(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.script = [404]
    hook = Webhook(receiver.url(), **FAST)
    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(20), _failing({0, 1}), retry=ONCE, max_failures=1,
                                        alerts=[AlertRule.aborted(notify=hook)])
    assert [p.status for p in receiver.posts] == [404] and report.alert_failures == 1
    assert "HTTP 404" in caplog.text and "T0K3N" not in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_receiver_that_is_down_costs_the_run_nothing_and_is_logged_and_counted(
        engine: str, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hooks/T0K3N-s3cret?token=also-s3cret"
    hook = Webhook(url, **FAST)
    rules = [AlertRule.failure_rate(above=0.1, window_s=600, notify=hook), AlertRule.aborted(notify=hook),
             AlertRule.budget_burn(share=0.1, notify=hook)]
    with caplog.at_level(logging.WARNING, logger="batchguard"):
        report = batchguard.run_batches(range(200), _failing(set(range(0, 200, 3))), engine=engine,
                                        retry=ONCE, batch_size=20, max_failures=0.9, alerts=rules)
    # The run is what it would be without alerts: every record ran, none was lost.
    assert report.success_count + report.failure_count == 200 and report.failure_count == 67
    # failure_rate and budget_burn fired and resolved at the end: four notices, none delivered.
    assert report.alert_failures == 4
    assert "not delivered" in caplog.text and f"127.0.0.1:{url.split(':')[2].split('/')[0]}/***" in caplog.text
    assert "s3cret" not in caplog.text and "T0K3N" not in caplog.text
    assert "s3cret" not in repr(hook)
    assert not _alert_threads()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_receiver_that_hangs_never_holds_the_run_up(receiver: Receiver, engine: str) -> None:
    # The failure-rate notice's POST hangs at the receiver; record 30 waits until it does, and
    # every later record runs while it still hangs. At the end the sender gives that request
    # its timeout (no drain time), and both notices count as undelivered.
    receiver.hang = True
    hook = Webhook(receiver.url(), timeout=1.0, drain_s=0.0, backoff_s=0.05)
    during: list[int] = []

    def fn(x: int) -> int:
        if x < 10:
            raise ValueError(x)
        if x == 30:
            assert receiver.wait_in_flight()
        if x > 30:
            during.append(receiver.in_flight)
        return x

    report = batchguard.run_batches(range(100), fn, engine=engine, retry=ONCE, batch_size=10,
                                    alerts=[AlertRule.failure_rate(above=0.05, window_s=600, notify=hook)])
    assert report.success_count == 90 and report.failure_count == 10
    assert during == [1] * 69  # the run went on while the receiver held the request
    assert report.alert_failures == 2 and not _alert_threads()


def test_a_notify_callable_that_raises_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    def broken(alert: Any) -> None:
        seen.append(alert)
        raise RuntimeError("pager down")

    with caplog.at_level(logging.ERROR, logger="batchguard"):
        report = batchguard.run_batches(range(100), _failing(set(range(10))), retry=ONCE, batch_size=10,
                                        alerts=[AlertRule.failure_rate(above=0.2, window_s=600, notify=broken)])
    assert report.success_count == 90 and report.alert_failures == 2 == len(seen)
    assert [a.state for a in seen] == ["firing", "resolved"]
    assert caplog.text.count("raised RuntimeError: pager down") == 1


def test_callables_are_called_off_the_runs_thread() -> None:
    threads: list[int] = []
    batchguard.run_batches(range(20), _failing({0, 1, 2}), retry=ONCE, max_failures=1,
                           alerts=[AlertRule.aborted(notify=lambda _: threads.append(threading.get_ident()))])
    assert len(threads) == 1 and threads[0] != threading.get_ident()


def test_a_run_without_alerts_gets_no_snapshots_and_no_threads() -> None:
    plan = make_plan(range(3), lambda x: x)
    assert plan.hooks == () and plan.on_progress is None
    report = batchguard.run_batches(range(3), lambda x: x)
    assert report.alert_failures == 0 and not _alert_threads()


def test_alerts_and_metrics_keep_an_sqlite_dlq_writing_in_the_background(tmp_path: Any) -> None:
    # A user's hook may read the DLQ at a batch's end, so with one the recorder stores each
    # batch before calling it; alerts never read it, and must not cost a run its background
    # writes (the fsync of every batch on the run's thread).
    rules = [AlertRule.aborted(notify=lambda _: None)]
    for extra, background in (({}, True), ({"hooks": batchguard.Hooks(on_batch_complete=print)}, False)):
        plan = make_plan(range(3), abs, dlq=f"sqlite:///{tmp_path}/dlq.db", alerts=rules, **extra)
        try:
            recorder = recorder_for(plan, None, None, None)
            try:
                assert (recorder._writes is not None) is background
                recorder.finish_writes()
            finally:
                assert recorder.hooks is not None
                recorder.hooks.run_closed(None)  # the monitor's threads, started with the recorder
        finally:
            close_opened_dlq(plan)
    report = batchguard.run_batches(range(30), _failing({1, 2, 3}), retry=ONCE, batch_size=5, alerts=rules,
                                    dlq=f"sqlite:///{tmp_path}/dlq2.db")
    assert report.dlq_count == 3 and len(report.dead_letters) == 3

