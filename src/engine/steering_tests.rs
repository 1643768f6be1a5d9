//! The scheduler with a retry budget and an adaptive limit, on a virtual clock.

use std::cell::Cell;

use super::super::{AdaptivePolicy, BudgetPolicy, Clock, Config, Next, OverBudget, Scheduler, Share};
use crate::backoff::{Jitter, RetryPolicy};
use crate::classify::ErrorClass;

#[derive(Default)]
struct Manual(Cell<f64>);

impl Clock for &Manual {
    fn now(&self) -> f64 {
        self.0.get()
    }
}

#[derive(Debug)]
struct Rec(u32);

impl Share for Rec {
    fn share(&self) -> Self {
        Rec(self.0)
    }
}

type Sched<'c> = Scheduler<Rec, &'static str, &'c Manual>;

fn config(concurrency: usize, budget: Option<BudgetPolicy>, adaptive: Option<AdaptivePolicy>) -> Config {
    Config {
        batch_size: 100,
        concurrency,
        retry: RetryPolicy::new(4, 0.0, 2.0, 60.0, Jitter::None).unwrap(),
        policies: Vec::new(),
        breaker: None,
        max_failures: None,
        seed: 7,
        traceback_limit: 100,
        progress_interval: 0.1,
        rate_limit: None,
        delay_between_batches: 0.0,
        collect_retries: false,
        retry_budget: budget,
        adaptive,
    }
}

fn feed(s: &mut Sched<'_>, n: u32) {
    s.add_batch((0..n).map(Rec));
    s.end_of_input();
}

/// Every record fails its first try (a 503) and succeeds on its retry; returns the times at
/// which the retries started, and the scheduler.
fn run_failing_once(budget: BudgetPolicy, n: u32, clock: &Manual) -> (Vec<f64>, Sched<'_>) {
    let mut s: Sched<'_> = Scheduler::new(config(1, Some(budget), None), clock);
    feed(&mut s, n);
    let mut retries = Vec::new();
    loop {
        match s.next_work() {
            Next::Run(work) if work.attempt == 1 => s.fail(work, ErrorClass::Recoverable, "503", None, 0.0),
            Next::Run(work) => {
                retries.push(clock.0.get());
                drop(s.succeed(work));
            }
            Next::Wait(Some(until)) => clock.0.set(until),
            Next::Wait(None) | Next::Feed => unreachable!("one worker, all input given"),
            Next::Done => break,
        }
    }
    (retries, s)
}

#[test]
fn waiting_retries_start_as_the_window_frees_room_and_none_is_lost() {
    let clock = Manual::default();
    // 20 first attempts: 0.2 * 20 + 0.5 * 4 = 6 retries per window of 4 s.
    let budget = BudgetPolicy::new(0.2, 0.5, 4.0, OverBudget::Wait).unwrap();
    let (retries, s) = run_failing_once(budget, 20, &clock);
    assert_eq!(retries.len(), 20);
    assert_eq!(s.succeeded(), 20);
    assert!(retries[..6].iter().all(|&t| t == 0.0), "{retries:?}");
    // Within any window of 4 s, at most 6 retries (the first window's first attempts still count).
    for (i, &t) in retries.iter().enumerate() {
        let in_window = retries[i..].iter().take_while(|&&u| u < t + 4.0).count();
        assert!(in_window <= 6, "{in_window} retries in the window from {t}: {retries:?}");
    }
    // Retries run between first attempts (they come first): records 0 and 1 retry at once,
    // record 2's retry is the first one held (0.2 * 3 + 2 < 3), and from then on the queue
    // is never empty until the end, so each of the other 18 retries waited.
    assert_eq!(s.steering().budget_waited, 18);
    assert_eq!(s.steering().budget_dead_lettered, 0);
}

#[test]
fn refused_retries_are_dead_lettered_in_dead_letter_mode() {
    let clock = Manual::default();
    let budget = BudgetPolicy::new(0.25, 0.0, 10.0, OverBudget::DeadLetter).unwrap();
    let (retries, s) = run_failing_once(budget, 20, &clock);
    assert_eq!(retries.len(), 5);
    assert_eq!((s.succeeded(), s.failed()), (5, 15));
    assert_eq!(s.steering().budget_dead_lettered, 15);
}

#[test]
fn new_records_run_while_retries_wait_for_the_budget() {
    let clock = Manual::default();
    let budget = BudgetPolicy::new(0.0, 0.25, 4.0, OverBudget::Wait).unwrap(); // 1 retry per 4 s
    let mut s: Sched<'_> = Scheduler::new(config(1, Some(budget), None), &clock);
    feed(&mut s, 3);
    let mut order = Vec::new();
    loop {
        match s.next_work() {
            Next::Run(work) => {
                order.push((work.record.0, work.attempt));
                if work.record.0 < 2 && work.attempt == 1 {
                    s.fail(work, ErrorClass::Transient, "busy", None, 0.0);
                } else {
                    drop(s.succeed(work));
                }
            }
            Next::Wait(Some(until)) => clock.0.set(until),
            _ => break,
        }
    }
    // Record 0's retry takes the one retry of the window; record 1's waits, and record 2 runs
    // before it rather than behind it.
    assert_eq!(order, [(0, 1), (0, 2), (1, 1), (2, 1), (1, 2)]);
    assert_eq!(clock.0.get(), 4.0);
}

#[test]
fn the_adaptive_limit_holds_calls_back_and_an_overload_lowers_it() {
    let clock = Manual::default();
    let adaptive = AdaptivePolicy::new(1, 8, 4, 1.0, 0.5).unwrap();
    let mut s: Sched<'_> = Scheduler::new(config(8, None, Some(adaptive)), &clock);
    feed(&mut s, 50);
    let mut running = Vec::new();
    while let Next::Run(work) = s.next_work() {
        running.push(work);
    }
    assert_eq!(running.len(), 4, "the limit, not the 8 workers");
    assert_eq!(s.counters().concurrency_limit, Some(4));
    // All four come back with a 429: one decrease for the round.
    for work in running.drain(..) {
        s.overloaded(&work);
        s.fail(work, ErrorClass::Recoverable, "429", None, 0.0);
    }
    assert_eq!(s.counters().concurrency_limit, Some(2));
    while let Next::Run(work) = s.next_work() {
        running.push(work);
    }
    assert_eq!(running.len(), 2);
    let steering = s.steering();
    assert_eq!(steering.limit, Some((2, 4, 2)));
}

#[test]
fn a_run_without_steering_reports_none() {
    let clock = Manual::default();
    let s: Sched<'_> = Scheduler::new(config(4, None, None), &clock);
    assert_eq!(s.counters().concurrency_limit, None);
    assert_eq!(s.steering(), super::Steering::default());
}
