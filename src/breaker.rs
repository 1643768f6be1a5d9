//! The circuit-breaker state machine (DESIGN §6). Plain Rust, time passed in as seconds.
//!
//! Mirrors `batchguard.reference.Breaker`. Each transition bumps `generation`; an outcome
//! counts only if its call started in the current generation, so calls that were already in
//! flight when the breaker moved do not decide its next state.

use std::collections::VecDeque;

use crate::classify::ErrorClass;
use crate::error::{config_error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Thresholds and timings; validated by [`BreakerPolicy::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerPolicy {
    pub failure_rate_threshold: f64,
    pub window: usize,
    pub minimum_calls: usize,
    pub open_duration: f64,
    pub half_open_calls: u32,
    pub abort_failure_rate: Option<f64>,
    pub counts: Vec<ErrorClass>,
    /// Slow calls (Resilience4j's): a call that took longer than this many seconds is slow,
    /// and reaching `slow_call_rate_threshold` slow calls over the window opens the breaker
    /// (set together by [`BreakerPolicy::with_slow_calls`]).
    pub slow_call_s: Option<f64>,
    pub slow_call_rate_threshold: Option<f64>,
}

fn check_rate(name: &str, value: f64) -> Result<()> {
    if !(value > 0.0 && value <= 1.0) {
        return config_error(format!("CircuitBreaker.{name} must be in (0, 1], got {value}"));
    }
    Ok(())
}

impl BreakerPolicy {
    pub fn new(
        failure_rate_threshold: f64,
        window: usize,
        minimum_calls: usize,
        open_duration: f64,
        half_open_calls: u32,
        abort_failure_rate: Option<f64>,
        counts: Vec<ErrorClass>,
    ) -> Result<Self> {
        check_rate("failure_rate_threshold", failure_rate_threshold)?;
        if window == 0 {
            return config_error("CircuitBreaker.window must be >= 1, got 0");
        }
        if minimum_calls == 0 || minimum_calls > window {
            return config_error(format!(
                "CircuitBreaker.minimum_calls must be in 1..=window ({window}), got {minimum_calls}"
            ));
        }
        if open_duration.is_nan() || open_duration < 0.0 {
            return config_error(format!("CircuitBreaker.open_duration must be >= 0, got {open_duration}"));
        }
        if half_open_calls == 0 {
            return config_error("CircuitBreaker.half_open_calls must be >= 1, got 0");
        }
        if let Some(rate) = abort_failure_rate {
            check_rate("abort_failure_rate", rate)?;
        }
        if counts.is_empty() {
            return config_error("CircuitBreaker.counts must name at least one ErrorClass");
        }
        Ok(Self {
            failure_rate_threshold,
            window,
            minimum_calls,
            open_duration,
            half_open_calls,
            abort_failure_rate,
            counts,
            slow_call_s: None,
            slow_call_rate_threshold: None,
        })
    }

    /// Count slow calls: slower than `slow_call_s` seconds; the breaker opens when their share
    /// of the window reaches `threshold`. Both or neither.
    pub fn with_slow_calls(mut self, slow_call_s: Option<f64>, threshold: Option<f64>) -> Result<Self> {
        match (slow_call_s, threshold) {
            (None, None) => {}
            (Some(seconds), Some(rate)) => {
                if !(seconds.is_finite() && seconds > 0.0) {
                    return config_error(format!("CircuitBreaker.slow_call_s must be a number > 0, got {seconds}"));
                }
                check_rate("slow_call_rate_threshold", rate)?;
            }
            _ => {
                return config_error(
                    "CircuitBreaker.slow_call_s and slow_call_rate_threshold go together: give both or neither",
                )
            }
        }
        self.slow_call_s = slow_call_s;
        self.slow_call_rate_threshold = threshold;
        Ok(self)
    }
}

/// A transition, with the time it happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub at: f64,
    pub from: State,
    pub to: State,
}

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    counted: [bool; 4],
    window: VecDeque<bool>,
    failures: usize,
    /// Which calls of the window were slow, and how many (only with a slow-call threshold).
    slow_window: VecDeque<bool>,
    slow_calls: usize,
    state: State,
    generation: u64,
    opened_at: f64,
    probes_started: u32,
    probes_ok: u32,
    trips: u64,
    transitions: Vec<Transition>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        let mut counted = [false; 4];
        for class in &policy.counts {
            counted[*class as usize] = true;
        }
        Self {
            // The window grows as outcomes arrive: a huge `window` must not be allocated up front.
            window: VecDeque::with_capacity(policy.window.min(1024)),
            slow_window: VecDeque::new(),
            policy,
            counted,
            failures: 0,
            slow_calls: 0,
            state: State::Closed,
            generation: 0,
            opened_at: 0.0,
            probes_started: 0,
            probes_ok: 0,
            trips: 0,
            transitions: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// Counted failures in the current window.
    pub fn window_failures(&self) -> usize {
        self.failures
    }

    /// Does a failure of this class count against the dependency?
    #[inline]
    pub fn counts(&self, class: ErrorClass) -> bool {
        self.counted[class as usize]
    }

    /// Transitions since the last call, oldest first.
    pub fn take_transitions(&mut self) -> std::vec::Drain<'_, Transition> {
        self.transitions.drain(..)
    }

    pub fn has_transitions(&self) -> bool {
        !self.transitions.is_empty()
    }

    fn move_to(&mut self, state: State, now: f64) {
        self.transitions.push(Transition { at: now, from: self.state, to: state });
        self.state = state;
        self.generation += 1;
        self.window.clear();
        self.failures = 0;
        self.slow_window.clear();
        self.slow_calls = 0;
        match state {
            State::Open => {
                self.opened_at = now;
                self.trips += 1;
            }
            State::HalfOpen => {
                self.probes_started = 0;
                self.probes_ok = 0;
            }
            State::Closed => {}
        }
    }

    /// Can a call start? `Err(Some(t))`: not before `t`; `Err(None)`: not until an outcome.
    /// `now` is only read when the breaker is not closed.
    #[inline]
    pub fn gate(&mut self, now: impl FnOnce() -> f64) -> std::result::Result<(), Option<f64>> {
        if self.state == State::Closed {
            return Ok(());
        }
        if self.state == State::Open {
            let now = now();
            let reopen = self.opened_at + self.policy.open_duration;
            if now < reopen {
                return Err(Some(reopen));
            }
            self.move_to(State::HalfOpen, now);
        }
        if self.probes_started >= self.policy.half_open_calls {
            return Err(None);
        }
        Ok(())
    }

    /// A call starts; returns its generation.
    #[inline]
    pub fn started(&mut self) -> u64 {
        if self.state == State::HalfOpen {
            self.probes_started += 1;
        }
        self.generation
    }

    /// Record one outcome. Returns true when `abort_failure_rate` is reached.
    #[inline]
    pub fn record(&mut self, generation: u64, failed: bool, now: impl FnOnce() -> f64) -> bool {
        if generation != self.generation {
            return false;
        }
        match self.state {
            State::HalfOpen => {
                if failed {
                    self.move_to(State::Open, now());
                } else {
                    self.probes_ok += 1;
                    if self.probes_ok >= self.policy.half_open_calls {
                        self.move_to(State::Closed, now());
                    }
                }
                false
            }
            State::Open => false,
            State::Closed => self.record_closed(failed, now),
        }
    }

    /// Record `n` successes of calls started in `generation` while the window holds no
    /// failure (the fast path's bulk form of `n` calls to [`record`](Self::record); with no
    /// failure in the window, no success can move the breaker).
    pub fn record_successes(&mut self, generation: u64, n: usize) {
        if generation != self.generation || self.state != State::Closed || n == 0 {
            return;
        }
        debug_assert_eq!(self.failures, 0, "the fast path runs only over a failure-free window");
        let keep = self.window.len().saturating_add(n).min(self.policy.window);
        self.window.clear();
        self.window.resize(keep, false);
    }

    /// Does this breaker count slow calls? Then the drivers time each call.
    pub fn slow_call_s(&self) -> Option<f64> {
        self.policy.slow_call_s
    }

    /// Record one outcome of a call that was `slow` (longer than `slow_call_s`): as
    /// [`record`](Self::record), and a slow call counts toward the slow-call rate (in half-open,
    /// a slow probe fails the probe). Returns true when `abort_failure_rate` is reached.
    pub fn record_timed(&mut self, generation: u64, failed: bool, slow: bool, now: impl FnOnce() -> f64) -> bool {
        if generation != self.generation || self.policy.slow_call_rate_threshold.is_none() {
            return self.record(generation, failed, now);
        }
        if self.state != State::Closed {
            return self.record(generation, failed || slow, now);
        }
        // Calls are timed anyway: the clock is read once, for both rates.
        let now = now();
        if self.slow_window.len() == self.policy.window && self.slow_window.pop_front() == Some(true) {
            self.slow_calls -= 1;
        }
        self.slow_window.push_back(slow);
        self.slow_calls += usize::from(slow);
        let abort = self.record_closed(failed, || now);
        let calls = self.slow_window.len();
        if self.state == State::Closed && calls >= self.policy.minimum_calls && self.slow_calls > 0 {
            let threshold = self.policy.slow_call_rate_threshold.unwrap_or(f64::INFINITY);
            if self.slow_calls as f64 / calls as f64 >= threshold {
                self.move_to(State::Open, now);
            }
        }
        abort
    }

    fn record_closed(&mut self, failed: bool, now: impl FnOnce() -> f64) -> bool {
        if self.window.len() == self.policy.window && self.window.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.window.push_back(failed);
        if failed {
            self.failures += 1;
        }
        let calls = self.window.len();
        if calls < self.policy.minimum_calls || self.failures == 0 {
            return false;
        }
        let rate = self.failures as f64 / calls as f64;
        // Only a failure can abort the run: a success that completes the sample must not stop a
        // run that may have nothing left to do.
        if let Some(abort) = self.policy.abort_failure_rate {
            if failed && rate >= abort {
                return true;
            }
        }
        if rate >= self.policy.failure_rate_threshold {
            self.move_to(State::Open, now());
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(abort: Option<f64>) -> Breaker {
        let policy =
            BreakerPolicy::new(0.5, 4, 4, 10.0, 2, abort, vec![ErrorClass::Transient, ErrorClass::Recoverable])
                .unwrap();
        Breaker::new(policy)
    }

    fn call(b: &mut Breaker, failed: bool, now: f64) -> bool {
        assert!(b.gate(|| now).is_ok());
        let generation = b.started();
        b.record(generation, failed, || now)
    }

    fn slow_breaker() -> Breaker {
        let policy = BreakerPolicy::new(0.5, 4, 4, 10.0, 1, None, vec![ErrorClass::Recoverable])
            .unwrap()
            .with_slow_calls(Some(1.0), Some(0.5))
            .unwrap();
        Breaker::new(policy)
    }

    fn timed(b: &mut Breaker, failed: bool, slow: bool, now: f64) {
        assert!(b.gate(|| now).is_ok());
        let generation = b.started();
        b.record_timed(generation, failed, slow, || now);
    }

    #[test]
    fn slow_successes_open_the_breaker_at_the_slow_call_rate() {
        let mut b = slow_breaker();
        timed(&mut b, false, true, 0.0);
        timed(&mut b, false, true, 0.0);
        assert_eq!(b.state(), State::Closed, "fewer than minimum_calls");
        timed(&mut b, false, false, 0.0);
        timed(&mut b, false, false, 0.0);
        assert_eq!(b.state(), State::Open, "2 of 4 were slow: 50%");
        assert_eq!(b.trips(), 1);
        let mut b = slow_breaker();
        for slow in [true, false, false, false, false] {
            timed(&mut b, false, slow, 0.0);
        }
        assert_eq!(b.state(), State::Closed, "1 slow call of 4, then it left the window");
        timed(&mut b, false, true, 1.0);
        timed(&mut b, false, true, 1.0);
        assert_eq!(b.state(), State::Open, "2 of the last 4 were slow");
    }

    #[test]
    fn a_slow_probe_fails_the_half_open_breaker() {
        let mut b = slow_breaker();
        for _ in 0..4 {
            timed(&mut b, false, true, 0.0);
        }
        assert_eq!(b.state(), State::Open);
        timed(&mut b, false, true, 10.0);
        assert_eq!(b.state(), State::Open, "the probe was slow");
        timed(&mut b, false, false, 20.0);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn slow_calls_need_both_settings_and_sane_values() {
        let base = || BreakerPolicy::new(0.5, 4, 4, 10.0, 1, None, vec![ErrorClass::Recoverable]).unwrap();
        assert!(base().with_slow_calls(Some(1.0), None).unwrap_err().0.contains("go together"));
        assert!(base().with_slow_calls(Some(0.0), Some(0.5)).unwrap_err().0.contains("slow_call_s"));
        assert!(base().with_slow_calls(Some(1.0), Some(1.5)).unwrap_err().0.contains("slow_call_rate_threshold"));
    }

    #[test]
    fn opens_when_the_failure_rate_reaches_the_threshold_over_minimum_calls() {
        let mut b = breaker(None);
        call(&mut b, true, 0.0);
        call(&mut b, false, 0.0);
        call(&mut b, true, 0.0);
        assert_eq!(b.state(), State::Closed, "3 calls are fewer than minimum_calls");
        call(&mut b, false, 1.0);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.trips(), 1);
        assert_eq!(b.gate(|| 5.0), Err(Some(11.0)));
    }

    #[test]
    fn half_open_probes_close_it_when_all_succeed() {
        let mut b = breaker(None);
        for _ in 0..4 {
            call(&mut b, true, 0.0);
        }
        assert_eq!(b.state(), State::Open);
        assert!(b.gate(|| 10.0).is_ok());
        assert_eq!(b.state(), State::HalfOpen);
        let g1 = b.started();
        let g2 = b.started();
        assert_eq!(b.gate(|| 10.0), Err(None), "only half_open_calls probes at once");
        b.record(g1, false, || 10.5);
        b.record(g2, false, || 10.6);
        assert_eq!(b.state(), State::Closed);
        let states: Vec<_> = b.take_transitions().map(|t| t.to).collect();
        assert_eq!(states, vec![State::Open, State::HalfOpen, State::Closed]);
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let mut b = breaker(None);
        for _ in 0..4 {
            call(&mut b, true, 0.0);
        }
        assert!(b.gate(|| 10.0).is_ok());
        let g = b.started();
        b.record(g, true, || 10.2);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.trips(), 2);
        assert_eq!(b.gate(|| 12.0), Err(Some(20.2)));
    }

    #[test]
    fn outcomes_of_calls_started_before_a_transition_are_ignored() {
        let mut b = breaker(None);
        let stale = b.started();
        for _ in 0..4 {
            call(&mut b, true, 0.0);
        }
        assert!(b.gate(|| 10.0).is_ok());
        b.record(stale, true, || 10.0);
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let mut b = breaker(None);
        call(&mut b, true, 0.0);
        for _ in 0..3 {
            call(&mut b, false, 0.0);
        }
        for _ in 0..4 {
            call(&mut b, false, 0.0);
        }
        call(&mut b, true, 0.0);
        assert_eq!(b.state(), State::Closed, "1 failure in the last 4 calls is 25%");
    }

    #[test]
    fn a_success_never_aborts_even_at_the_abort_rate() {
        let mut b = breaker(Some(0.5));
        call(&mut b, true, 0.0);
        call(&mut b, true, 0.0);
        call(&mut b, false, 0.0);
        assert!(!call(&mut b, false, 0.0), "the sample is complete at 50%, but on a success");
    }

    #[test]
    fn the_abort_rate_is_reported() {
        let mut b = breaker(Some(0.75));
        call(&mut b, true, 0.0);
        call(&mut b, true, 0.0);
        call(&mut b, false, 0.0);
        assert!(call(&mut b, true, 0.0));
    }

    #[test]
    fn counts_only_the_configured_classes() {
        let b = breaker(None);
        assert!(b.counts(ErrorClass::Recoverable));
        assert!(!b.counts(ErrorClass::Permanent));
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let err = BreakerPolicy::new(1.5, 4, 4, 1.0, 1, None, vec![ErrorClass::Fatal]).unwrap_err();
        assert!(err.0.contains("failure_rate_threshold"));
        let err = BreakerPolicy::new(0.5, 0, 1, 1.0, 1, None, vec![ErrorClass::Fatal]).unwrap_err();
        assert!(err.0.contains("window"));
    }
}
