//! Adaptive concurrency (`batchguard.Adaptive`): how many calls may be in flight, found by
//! AIMD as TCP finds its window. A success adds `increase / limit` (so `increase` per round of
//! `limit` calls), doubling per round until the first overload signal (slow start); an
//! overload signal (HTTP 429/503, a timeout, a Retry-After) multiplies the limit by
//! `decrease`.
//!
//! The cool-down is TCP's one decrease per window: each call is numbered when it starts, and
//! an overload signal from a call that started before the last decrease changes nothing, since
//! that call was sent at the old limit. A burst of 429s from calls that were all in flight
//! together therefore cuts the limit once, not once per 429, and the limit does not collapse.
//!
//! Growth needs the limit to be used: a success grows it only when at least half of it was in
//! flight, so a run whose input trickles in does not drift up to `max` unchecked (Netflix's
//! concurrency-limits rule). Pure, time-free; mirrors `batchguard.reference.adaptive.Adaptive`.

use crate::error::{config_error, Result};

/// `Adaptive(min, max, initial, increase, decrease)`, validated by [`AdaptivePolicy::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptivePolicy {
    pub min: usize,
    pub max: usize,
    pub initial: usize,
    pub increase: f64,
    pub decrease: f64,
}

impl AdaptivePolicy {
    pub fn new(min: usize, max: usize, initial: usize, increase: f64, decrease: f64) -> Result<Self> {
        if min == 0 {
            return config_error("Adaptive.min must be >= 1, got 0");
        }
        if max < min {
            return config_error(format!("Adaptive.max must be >= min ({min}), got {max}"));
        }
        if !(min..=max).contains(&initial) {
            return config_error(format!("Adaptive.initial must be in min..=max ({min}..={max}), got {initial}"));
        }
        if !(increase.is_finite() && increase > 0.0) {
            return config_error(format!("Adaptive.increase must be a finite number > 0, got {increase}"));
        }
        if !(decrease > 0.0 && decrease < 1.0) {
            return config_error(format!("Adaptive.decrease must be in (0, 1), got {decrease}"));
        }
        Ok(Self { min, max, initial, increase, decrease })
    }
}

/// The limit and what it has been.
#[derive(Debug)]
pub struct Adaptive {
    policy: AdaptivePolicy,
    limit: f64,
    /// Doubling per round until the first overload signal.
    slow_start: bool,
    /// Calls started so far; each call carries its number.
    started: u64,
    /// Calls numbered up to this one started before the last decrease.
    decreased_at: u64,
    /// The highest and lowest limits so far, and how many decreases.
    pub peak: usize,
    pub low: usize,
    pub decreases: u64,
}

impl Adaptive {
    pub fn new(policy: AdaptivePolicy) -> Self {
        let initial = policy.initial;
        Self {
            policy,
            limit: initial as f64,
            slow_start: true,
            started: 0,
            decreased_at: 0,
            peak: initial,
            low: initial,
            decreases: 0,
        }
    }

    /// Calls that may be in flight now.
    #[inline]
    pub fn limit(&self) -> usize {
        (self.limit as usize).clamp(self.policy.min, self.policy.max)
    }

    /// A call starts: its number, for [`overloaded`](Self::overloaded).
    #[inline]
    pub fn started(&mut self) -> u64 {
        self.started += 1;
        self.started
    }

    /// A call succeeded with `in_flight` calls (itself included) in flight when it ended.
    #[inline]
    pub fn succeeded(&mut self, in_flight: usize) {
        if in_flight * 2 < self.limit() {
            return;
        }
        let step = if self.slow_start { 1.0 } else { self.policy.increase / self.limit };
        self.limit = (self.limit + step).min(self.policy.max as f64);
        self.peak = self.peak.max(self.limit());
    }

    /// Call number `call` ended with an overload signal. True when the limit went down.
    pub fn overloaded(&mut self, call: u64) -> bool {
        if call <= self.decreased_at {
            return false;
        }
        self.slow_start = false;
        self.limit = (self.limit * self.policy.decrease).max(self.policy.min as f64);
        self.decreased_at = self.started;
        self.decreases += 1;
        self.low = self.low.min(self.limit());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive(min: usize, max: usize, initial: usize) -> Adaptive {
        Adaptive::new(AdaptivePolicy::new(min, max, initial, 1.0, 0.5).unwrap())
    }

    /// Runs one round at a steady state: `limit` calls succeed, each with the whole limit in
    /// flight (another call starts as each one ends).
    fn round_ok(a: &mut Adaptive) {
        let n = a.limit();
        for _ in 0..n {
            a.started();
            a.succeeded(n);
        }
    }

    #[test]
    fn slow_start_doubles_the_limit_each_round_up_to_max() {
        let mut a = adaptive(1, 100, 1);
        let limits: Vec<usize> = (0..8)
            .map(|_| {
                round_ok(&mut a);
                a.limit()
            })
            .collect();
        assert_eq!(limits[..5], [2, 4, 8, 16, 32]);
        assert_eq!(a.limit(), 100);
        assert_eq!(a.peak, 100);
    }

    #[test]
    fn after_an_overload_the_limit_grows_by_increase_per_round() {
        let mut a = adaptive(1, 100, 20);
        let call = a.started();
        assert!(a.overloaded(call));
        assert_eq!(a.limit(), 10);
        for _ in 0..10 {
            a.started();
            a.succeeded(10);
        }
        assert_eq!(a.limit(), 10, "+1 spread over a round of successes: 10.96");
        a.started();
        a.succeeded(10);
        assert_eq!(a.limit(), 11);
    }

    #[test]
    fn a_burst_of_overloads_from_one_round_decreases_once() {
        let mut a = adaptive(1, 256, 64);
        let calls: Vec<u64> = (0..64).map(|_| a.started()).collect();
        let cut = calls.iter().filter(|&&c| a.overloaded(c)).count();
        assert_eq!(cut, 1);
        assert_eq!(a.limit(), 32);
        // A call that starts after the decrease is a new signal.
        let later = a.started();
        assert!(a.overloaded(later));
        assert_eq!((a.limit(), a.low, a.decreases), (16, 16, 2));
    }

    #[test]
    fn the_limit_never_goes_below_min() {
        let mut a = adaptive(3, 10, 4);
        for _ in 0..10 {
            let call = a.started();
            a.overloaded(call);
        }
        assert_eq!(a.limit(), 3);
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let mut a = adaptive(1, 100, 10);
        for _ in 0..50 {
            a.started();
            a.succeeded(1);
        }
        assert_eq!(a.limit(), 10);
    }

    #[test]
    fn bad_policies_are_refused_with_the_field_named() {
        let err = |r: Result<AdaptivePolicy>| r.unwrap_err().to_string();
        assert!(err(AdaptivePolicy::new(0, 4, 1, 1.0, 0.5)).contains("min"));
        assert!(err(AdaptivePolicy::new(4, 2, 4, 1.0, 0.5)).contains("max"));
        assert!(err(AdaptivePolicy::new(1, 4, 5, 1.0, 0.5)).contains("initial"));
        assert!(err(AdaptivePolicy::new(1, 4, 1, 0.0, 0.5)).contains("increase"));
        assert!(err(AdaptivePolicy::new(1, 4, 1, 1.0, 1.0)).contains("decrease"));
    }
}
