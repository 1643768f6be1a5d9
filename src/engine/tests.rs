//! The scheduler on a virtual clock: each test drives it by hand through a failure plan.

use std::cell::Cell;
use std::collections::HashMap;

use super::*;
use crate::backoff::{Jitter, RetryPolicy};
use crate::breaker::BreakerPolicy;

/// A virtual clock: tests move time by hand, so backoff and breaker tests take no time.
#[derive(Default)]
struct Manual(Cell<f64>);

impl Clock for &Manual {
    fn now(&self) -> f64 {
        self.0.get()
    }
}

type Sched<'c> = Scheduler<u32, &'static str, &'c Manual>;

fn config(max_attempts: u32, base_delay: f64) -> Config {
    Config {
        batch_size: 4,
        concurrency: 1,
        retry: RetryPolicy::new(max_attempts, base_delay, 2.0, 60.0, Jitter::None).unwrap(),
        policies: Vec::new(),
        breaker: None,
        max_failures: None,
        seed: 7,
        traceback_limit: 100,
        progress_interval: 0.1,
        rate_limit: None,
        delay_between_batches: 0.0,
        collect_retries: false,
        retry_budget: None,
        adaptive: None,
    }
}

impl Share for u32 {
    fn share(&self) -> Self {
        *self
    }
}

impl Share for &'static str {
    fn share(&self) -> Self {
        self
    }
}

/// What a failure plan says about one attempt of one record.
#[derive(Clone, Copy)]
enum Plan {
    Ok,
    Fail(ErrorClass),
}

struct Outcome {
    succeeded: Vec<u32>,
    dead: Vec<(u64, ErrorClass, usize)>,
    batches: Vec<(u64, usize, usize, usize)>,
    stop: Option<StopReason>,
    pending: u64,
    calls: Vec<(u32, u32)>,
}

/// Drive a scheduler at concurrency 1 over `n` records; `plan(record, attempt)` decides.
fn drive(config: Config, n: u32, clock: &Manual, plan: impl Fn(u32, u32) -> Plan) -> Outcome {
    drive_with(config, n, clock, plan, false)
}

/// As [`drive`], optionally through the [`Scheduler::stream`] fast path.
fn drive_with(config: Config, n: u32, clock: &Manual, plan: impl Fn(u32, u32) -> Plan, fast: bool) -> Outcome {
    let batch_size = config.batch_size;
    let mut s: Sched<'_> = Scheduler::new(config, clock);
    let mut input = 0..n;
    let mut out = Outcome { succeeded: vec![], dead: vec![], batches: vec![], stop: None, pending: 0, calls: vec![] };
    loop {
        if fast {
            let calls = &mut out.calls;
            let succeeded = &mut out.succeeded;
            let streamed = s.stream(3, |_, &record| {
                calls.push((record, 1));
                match plan(record, 1) {
                    Plan::Ok => {
                        succeeded.push(record);
                        Ok(true)
                    }
                    Plan::Fail(class) => Err(Failure {
                        class: class.into(),
                        error: "boom",
                        retry_after: None,
                        wall: 0.0,
                        interrupted: false,
                    }),
                }
            });
            match streamed {
                Streamed::Paused(0) => {}
                Streamed::Paused(_) => continue,
                Streamed::Failed(work, f) => {
                    s.fail(work, f.class, f.error, f.retry_after, f.wall);
                    continue;
                }
            }
        }
        match s.next_work() {
            Next::Run(work) => {
                out.calls.push((work.record, work.attempt));
                match plan(work.record, work.attempt) {
                    Plan::Ok => out.succeeded.push(s.succeed(work).record),
                    Plan::Fail(class) => s.fail(work, class, "boom", None, 0.0),
                }
            }
            Next::Feed => {
                let batch: Vec<u32> = input.by_ref().take(batch_size).collect();
                if !batch.is_empty() {
                    s.add_batch(batch.into_iter());
                }
                if s.records_read() == u64::from(n) {
                    s.end_of_input();
                }
            }
            Next::Wait(Some(until)) => clock.0.set(until),
            Next::Wait(None) => unreachable!("nothing is in flight at concurrency 1"),
            Next::Done => break,
        }
    }
    out.pending = s.close();
    for event in s.take_events() {
        if let Event::Batch(b) = event {
            out.batches.push((b.index, b.succeeded, b.failed, b.pending));
            out.dead.extend(b.dead.iter().map(|d| (d.index, d.class, d.attempts.len())));
        }
    }
    out.dead.sort_by_key(|d| d.0);
    out.stop = s.stop_reason();
    out
}

#[test]
fn every_record_succeeds_in_order_when_nothing_fails() {
    let clock = Manual::default();
    let out = drive(config(3, 0.0), 10, &clock, |_, _| Plan::Ok);
    assert_eq!(out.succeeded, (0..10).collect::<Vec<_>>());
    assert_eq!(out.batches, vec![(0, 4, 0, 0), (1, 4, 0, 0), (2, 2, 0, 0)]);
}

#[test]
fn transient_failures_retry_at_once_before_new_records() {
    let clock = Manual::default();
    let out =
        drive(
            config(3, 5.0),
            3,
            &clock,
            |r, a| {
                if r == 0 && a == 1 {
                    Plan::Fail(ErrorClass::Transient)
                } else {
                    Plan::Ok
                }
            },
        );
    assert_eq!(out.calls, vec![(0, 1), (0, 2), (1, 1), (2, 1)]);
    assert_eq!(clock.0.get(), 0.0, "a transient retry waits for nothing");
}

#[test]
fn recoverable_retries_are_parked_while_other_records_run() {
    let clock = Manual::default();
    let out =
        drive(
            config(3, 5.0),
            3,
            &clock,
            |r, a| {
                if r == 0 && a == 1 {
                    Plan::Fail(ErrorClass::Recoverable)
                } else {
                    Plan::Ok
                }
            },
        );
    assert_eq!(out.calls, vec![(0, 1), (1, 1), (2, 1), (0, 2)]);
    assert_eq!(clock.0.get(), 5.0, "the retry ran once its delay was over");
    assert_eq!(out.succeeded, vec![1, 2, 0]);
}

#[test]
fn exhausted_retries_dead_letter_with_the_whole_history() {
    let clock = Manual::default();
    let out =
        drive(config(3, 1.0), 2, &clock, |r, _| if r == 1 { Plan::Fail(ErrorClass::Recoverable) } else { Plan::Ok });
    assert_eq!(out.dead, vec![(1, ErrorClass::Recoverable, 3)]);
    assert_eq!(clock.0.get(), 3.0, "waited 1 s then 2 s");
}

#[test]
fn permanent_failures_are_not_retried() {
    let clock = Manual::default();
    let out =
        drive(config(5, 0.0), 2, &clock, |r, _| if r == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
    assert_eq!(out.calls, vec![(0, 1), (1, 1)]);
    assert_eq!(out.dead, vec![(0, ErrorClass::Permanent, 1)]);
}

#[test]
fn fatal_error_leaves_unstarted_records_pending() {
    let clock = Manual::default();
    let out = drive(config(3, 0.0), 10, &clock, |r, _| if r == 5 { Plan::Fail(ErrorClass::Fatal) } else { Plan::Ok });
    assert_eq!(out.stop, Some(StopReason::Fatal));
    assert_eq!(out.succeeded.len(), 5);
    assert_eq!(out.dead, vec![(5, ErrorClass::Fatal, 1)]);
    assert_eq!(out.pending, 2, "records 6 and 7 of the open batch");
    assert_eq!(out.batches.last(), Some(&(1, 1, 1, 2)));
}

#[test]
fn the_error_budget_stops_the_run_past_its_count() {
    let clock = Manual::default();
    let mut c = config(1, 0.0);
    c.max_failures = Some(Budget::Count(2));
    let out = drive(c, 20, &clock, |r, _| if r % 2 == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
    assert_eq!(out.stop, Some(StopReason::MaxFailures));
    assert_eq!(out.dead.len(), 3);
}

#[test]
fn a_rate_budget_waits_for_a_sample() {
    let clock = Manual::default();
    let mut c = config(1, 0.0);
    c.max_failures = Some(Budget::Rate(0.5));
    let out =
        drive(c, 30, &clock, |r, _| if !(2..20).contains(&r) { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
    assert_eq!(out.stop, None, "2 of the first 10 is under 50%, 12 of 30 too");
}

#[test]
fn the_breaker_pauses_and_nothing_fails_because_it_is_open() {
    let clock = Manual::default();
    let mut c = config(10, 0.0);
    c.breaker = Some(BreakerPolicy::new(0.5, 4, 4, 30.0, 1, None, vec![ErrorClass::Recoverable]).unwrap());
    // The dependency is down for the first 4 calls.
    let calls = Cell::new(0);
    let out = drive(c, 6, &clock, |_, _| {
        calls.set(calls.get() + 1);
        if calls.get() <= 4 {
            Plan::Fail(ErrorClass::Recoverable)
        } else {
            Plan::Ok
        }
    });
    assert_eq!(out.succeeded.len(), 6);
    assert!(out.dead.is_empty());
    assert_eq!(clock.0.get(), 30.0, "the run waited out open_duration");
}

#[test]
fn the_breaker_abort_rate_stops_the_run() {
    let clock = Manual::default();
    let mut c = config(1, 0.0);
    c.breaker = Some(BreakerPolicy::new(0.9, 4, 4, 30.0, 1, Some(0.5), vec![ErrorClass::Permanent]).unwrap());
    let out = drive(c, 12, &clock, |r, _| if r % 2 == 0 { Plan::Fail(ErrorClass::Permanent) } else { Plan::Ok });
    assert_eq!(out.stop, Some(StopReason::BreakerAbort));
    // The 4th call completes the sample at a 50% failure rate, but it is a success and a
    // success never aborts: the 5th call (a failure) does, and nothing after it starts.
    assert_eq!(out.calls.len(), 5);
    assert_eq!(out.succeeded.len() + out.dead.len(), 5);
}

#[test]
fn the_fast_path_reaches_exactly_the_outcomes_of_the_slow_path() {
    let classes = [ErrorClass::Transient, ErrorClass::Recoverable, ErrorClass::Permanent, ErrorClass::Fatal];
    for pattern in 0u32..512 {
        let mut c = config(3, 0.0);
        c.breaker = Some(BreakerPolicy::new(0.5, 4, 2, 1.0, 1, Some(0.9), vec![ErrorClass::Recoverable]).unwrap());
        c.max_failures = Some(Budget::Count(3));
        let plan = |r: u32, a: u32| {
            if (pattern >> (r % 9)) & 1 == 1 && a < 3 {
                Plan::Fail(classes[((pattern >> (r % 5)) & 0b11) as usize])
            } else {
                Plan::Ok
            }
        };
        let (slow_clock, fast_clock) = (Manual::default(), Manual::default());
        let slow = drive_with(c.clone(), 11, &slow_clock, plan, false);
        let fast = drive_with(c, 11, &fast_clock, plan, true);
        assert_eq!(slow.calls, fast.calls, "pattern {pattern}");
        assert_eq!(slow.succeeded, fast.succeeded, "pattern {pattern}");
        assert_eq!(slow.dead, fast.dead, "pattern {pattern}");
        assert_eq!(slow.batches, fast.batches, "pattern {pattern}");
        assert_eq!((slow.stop, slow.pending), (fast.stop, fast.pending), "pattern {pattern}");
    }
}

#[test]
fn the_stream_pauses_after_a_success_when_the_driver_asks() {
    let clock = Manual::default();
    let mut s: Sched<'_> = Scheduler::new(config(1, 0.0), &clock);
    s.add_batch(0..4u32);
    s.end_of_input();
    let mut ran = Vec::new();
    assert!(matches!(
        s.stream(100, |_, &r| {
            ran.push(r);
            Ok(r != 1)
        }),
        Streamed::Paused(2)
    ));
    assert_eq!(s.counters().succeeded, 2, "both records are accounted when the stream pauses");
    assert!(matches!(
        s.stream(100, |_, &r| {
            ran.push(r);
            Ok(true)
        }),
        Streamed::Paused(2)
    ));
    assert_eq!(ran, vec![0, 1, 2, 3]);
    assert!(matches!(s.next_work(), Next::Done));
}

#[test]
fn an_attempt_lost_with_its_worker_stops_the_run_and_stays_pending() {
    let clock = Manual::default();
    let mut s: Sched<'_> = Scheduler::new(config(1, 0.0), &clock);
    s.add_batch(0..4u32);
    s.end_of_input();
    let Next::Run(work) = s.next_work() else { panic!("a record is ready") };
    drop(work); // its worker died with it
    s.lose_in_flight();
    assert_eq!(s.stop_reason(), Some(StopReason::Interrupt));
    assert!(matches!(s.next_work(), Next::Done), "nothing waits for the lost attempt");
    assert_eq!(s.close(), 4, "the lost record and the unstarted ones are pending");
}

#[test]
fn visit_sees_every_record_and_error_the_scheduler_holds() {
    let clock = Manual::default();
    let mut s: Sched<'_> = Scheduler::new(config(3, 5.0), &clock);
    s.add_batch(0..4u32);
    let Next::Run(parked) = s.next_work() else { panic!("a record is ready") };
    s.fail(parked, ErrorClass::Recoverable, "parked", None, 0.0);
    let Next::Run(dead) = s.next_work() else { panic!("a record is ready") };
    s.fail(dead, ErrorClass::Permanent, "dead", None, 0.0);
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    s.visit(
        |r| {
            records.push(*r);
            Ok::<(), ()>(())
        },
        |e| {
            errors.push(*e);
            Ok(())
        },
    )
    .unwrap();
    records.sort_unstable();
    errors.sort_unstable();
    assert_eq!(records, vec![0, 1, 2, 3], "queued, parked and dead-lettered records");
    assert_eq!(errors, vec!["dead", "parked"]);
}

#[test]
fn conservation_holds_for_every_plan() {
    // A small exhaustive-ish sweep: per-record failure patterns from a fixed table.
    let classes = [ErrorClass::Transient, ErrorClass::Recoverable, ErrorClass::Permanent, ErrorClass::Fatal];
    for pattern in 0u32..256 {
        let clock = Manual::default();
        let n = 9;
        let out = drive(config(3, 0.5), n, &clock, |r, a| {
            let bits = (pattern >> ((r + a) % 8)) & 0b11;
            if (pattern >> (r % 8)) & 1 == 1 && a < 3 {
                Plan::Fail(classes[bits as usize])
            } else {
                Plan::Ok
            }
        });
        let finished = out.succeeded.len() as u64 + out.dead.len() as u64;
        let read = out.batches.iter().map(|b| (b.1 + b.2 + b.3) as u64).sum::<u64>();
        assert_eq!(finished + out.pending, read, "pattern {pattern}");
        let mut seen = HashMap::new();
        for r in out.succeeded.iter().copied().map(u64::from).chain(out.dead.iter().map(|d| d.0)) {
            *seen.entry(r).or_insert(0) += 1;
        }
        assert!(seen.values().all(|&c| c == 1), "pattern {pattern}: a record finished twice");
    }
}

#[test]
fn open_batches_count_each_open_batchs_records_by_state() {
    let clock = Manual::default();
    clock.0.set(10.0);
    let mut s: Sched<'_> = Scheduler::new(config(3, 5.0), &clock);
    s.add_batch(0..4u32);
    clock.0.set(11.0);
    s.add_batch(4..8u32);
    let Next::Run(ok) = s.next_work() else { panic!("a record is ready") };
    drop(s.succeed(ok));
    let Next::Run(parked) = s.next_work() else { panic!("a record is ready") };
    s.fail(parked, ErrorClass::Recoverable, "backs off", None, 0.0);
    let Next::Run(dead) = s.next_work() else { panic!("a record is ready") };
    s.fail(dead, ErrorClass::Permanent, "dead", None, 0.0);
    let Next::Run(running) = s.next_work() else { panic!("a record is ready") };
    clock.0.set(12.5);
    let batches = s.open_batches();
    let first = BatchCounts {
        index: 0,
        size: 4,
        succeeded: 1,
        failed: 1,
        retrying: 1,
        in_flight: 1,
        queued: 0,
        retries: 0,
        started: 0.0,
        elapsed: 2.5,
    };
    let second = BatchCounts {
        index: 1,
        succeeded: 0,
        failed: 0,
        retrying: 0,
        in_flight: 0,
        queued: 4,
        started: 1.0,
        elapsed: 1.5,
        ..first
    };
    assert_eq!(batches, vec![first, second]);
    drop(s.succeed(running));
    clock.0.set(20.0);
    let Next::Run(retry) = s.next_work() else { panic!("the retry is due") };
    let counts = s.open_batches()[0];
    assert_eq!((counts.retrying, counts.in_flight, counts.retries), (0, 1, 1), "the retry runs");
    drop(s.succeed(retry));
    assert_eq!(s.open_batches().iter().map(|b| b.index).collect::<Vec<_>>(), vec![1], "batch 0 closed");
}

/// What a driver hands over, in order: retries as `(record, attempt, delay)`, batch ends as
/// their index.
#[derive(Debug, PartialEq)]
enum Seen {
    Retry(u32, u32, f64),
    Batch(u64),
}

fn seen(events: Vec<Event<u32, &'static str>>) -> Vec<Seen> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Retry(r) => Some(Seen::Retry(r.record, r.attempt, r.delay)),
            Event::Batch(b) => Some(Seen::Batch(b.index)),
            Event::Breaker { .. } => None,
        })
        .collect()
}

#[test]
fn retry_events_are_collected_only_when_asked_and_wait_for_the_batch_end() {
    for collect in [false, true] {
        let clock = Manual::default();
        let mut c = config(3, 2.0);
        c.batch_size = 2;
        c.collect_retries = collect;
        let mut s: Sched<'_> = Scheduler::new(c, &clock);
        s.add_batch(0..2u32);
        s.end_of_input();
        let Next::Run(first) = s.next_work() else { panic!("record 0 is ready") };
        s.fail(first, ErrorClass::Recoverable, "slow", None, 0.0);
        assert!(!s.has_events(), "a retry alone does not call the driver");
        let Next::Run(second) = s.next_work() else { panic!("record 1 is ready") };
        s.succeed(second);
        let Next::Wait(Some(until)) = s.next_work() else { panic!("record 0 waits for its retry") };
        clock.0.set(until);
        let Next::Run(retry) = s.next_work() else { panic!("record 0 is due") };
        assert_eq!(retry.attempt, 2);
        s.succeed(retry);
        let expected = if collect { vec![Seen::Retry(0, 1, 2.0), Seen::Batch(0)] } else { vec![Seen::Batch(0)] };
        assert_eq!(seen(s.take_events()), expected);
    }
}

#[test]
fn retry_events_of_an_unfinished_batch_come_before_its_end_at_close() {
    let clock = Manual::default();
    let mut c = config(3, 2.0);
    c.collect_retries = true;
    let mut s: Sched<'_> = Scheduler::new(c, &clock);
    s.add_batch(0..1u32);
    s.end_of_input();
    let Next::Run(work) = s.next_work() else { panic!("record 0 is ready") };
    s.fail(work, ErrorClass::Recoverable, "slow", None, 0.0);
    s.interrupt();
    assert_eq!(s.close(), 1);
    assert_eq!(seen(s.take_events()), vec![Seen::Retry(0, 1, 2.0), Seen::Batch(0)]);
}

#[test]
fn each_failure_is_retried_under_its_own_policy_and_max_elapsed_cuts_a_record() {
    use crate::classify::Verdict;
    let clock = Manual::default();
    let mut cfg = config(2, 1.0);
    cfg.policies = vec![
        RetryPolicy::new(4, 5.0, 2.0, 60.0, Jitter::None).unwrap(),
        RetryPolicy::new(9, 4.0, 1.0, 60.0, Jitter::None).unwrap().with_max_elapsed(Some(10.0)).unwrap(),
    ];
    let mut s: Sched<'_> = Scheduler::new(cfg, &clock);
    s.add_batch([0_u32, 1, 2].into_iter());
    s.end_of_input();
    let under = |policy| Verdict { class: ErrorClass::Recoverable, policy };
    let run = |s: &mut Sched<'_>, at: f64| {
        clock.0.set(at);
        match s.next_work() {
            Next::Run(work) => work,
            _ => panic!("nothing to run at {at}"),
        }
    };
    let w = run(&mut s, 0.0);
    s.fail(w, under(1), "a", None, 0.0); // policy 1: 5 s
    let w = run(&mut s, 0.0);
    s.fail(w, under(2), "b", None, 0.0); // policy 2: 4 s, due at 4 (of 10)
    let w = run(&mut s, 0.0);
    drop(s.succeed(w));
    assert!(matches!(s.next_work(), Next::Wait(Some(due)) if due == 4.0));
    let w = run(&mut s, 4.0);
    assert_eq!((w.record, w.attempt), (1, 2));
    s.fail(w, under(2), "b", None, 0.0); // due at 8 (of 10)
    let w = run(&mut s, 5.0);
    assert_eq!((w.record, w.attempt), (0, 2));
    s.fail(w, under(1), "a", None, 0.0); // policy 1's second delay: 10 s, due at 15
    let w = run(&mut s, 8.0);
    assert_eq!((w.record, w.attempt), (1, 3));
    s.fail(w, under(2), "b", None, 0.0); // due at 12, past 10: dead, the refused 4 s kept
    let w = run(&mut s, 15.0);
    assert_eq!((w.record, w.attempt), (0, 3));
    s.fail(w, ErrorClass::Recoverable, "a", None, 0.0); // the default policy: 2 attempts, used up
    let dead: Vec<_> = s
        .take_events()
        .into_iter()
        .flat_map(|e| match e {
            Event::Batch(b) => b.dead,
            _ => vec![],
        })
        .map(|d| (d.record, d.attempts.iter().map(|a| a.delay).collect::<Vec<_>>()))
        .collect();
    assert_eq!(dead, vec![(1, vec![Some(4.0), Some(4.0), Some(4.0)]), (0, vec![Some(5.0), Some(10.0), None])]);
}
