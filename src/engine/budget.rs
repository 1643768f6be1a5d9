//! The retry budget (`batchguard.RetryBudget`): retries may not exceed a share of first
//! attempts, plus a floor per second, over a sliding window (Finagle's `RetryBudget`, gRPC's
//! retry throttling; resilience4j issue 172 asks for it). A run whose dependency fails
//! everything then sends `ratio` more calls than it has records at most, not `max_attempts`
//! times as many: retries cannot turn an outage into a retry storm.
//!
//! The window is `SLOTS` slots of `window_s / SLOTS` seconds, each counting the first attempts
//! and retries that started in it: O(1) per call and no allocation after the start, at the
//! cost of a window that slides a slot at a time (as Finagle's does). Time is passed in, so
//! the tests run on a virtual clock. Mirrors `batchguard.reference.budget.RetryBudget`
//! decision for decision (same slot arithmetic, same float operations).

use crate::error::{config_error, Result};

/// Slots the window is cut into.
pub const SLOTS: usize = 10;

/// What happens to a retry that the budget does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverBudget {
    /// The retry stays queued until the budget allows it (new records still start).
    Wait,
    /// The record is dead-lettered at once, its entry saying that the budget stopped it.
    DeadLetter,
}

impl OverBudget {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "wait" => Ok(Self::Wait),
            "dead_letter" => Ok(Self::DeadLetter),
            other => config_error(format!("RetryBudget.over_budget must be 'wait' or 'dead_letter', got {other:?}")),
        }
    }
}

/// `RetryBudget(ratio, min_per_s, window_s, over_budget)`, validated by [`BudgetPolicy::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetPolicy {
    pub ratio: f64,
    pub min_per_s: f64,
    pub window_s: f64,
    pub over_budget: OverBudget,
}

impl BudgetPolicy {
    pub fn new(ratio: f64, min_per_s: f64, window_s: f64, over_budget: OverBudget) -> Result<Self> {
        if !(ratio.is_finite() && ratio >= 0.0) {
            return config_error(format!("RetryBudget.ratio must be a finite number >= 0, got {ratio}"));
        }
        if !(min_per_s.is_finite() && min_per_s >= 0.0) {
            return config_error(format!("RetryBudget.min_per_s must be a finite number >= 0, got {min_per_s}"));
        }
        if !(window_s.is_finite() && window_s > 0.0) {
            return config_error(format!("RetryBudget.window_s must be a finite number > 0, got {window_s}"));
        }
        // Waiting needs a floor that frees at least one retry per window once the input is
        // done: with none, a retry queued after the last first attempt would wait forever.
        if over_budget == OverBudget::Wait && min_per_s * window_s < 1.0 {
            return config_error(format!(
                "RetryBudget(over_budget='wait') needs min_per_s * window_s >= 1 (at least one retry \
                 per window once no first attempts are left), got {min_per_s} * {window_s}"
            ));
        }
        Ok(Self { ratio, min_per_s, window_s, over_budget })
    }

    /// Retries the window allows with `firsts` first attempts in it.
    fn allowance(&self, firsts: u64) -> f64 {
        self.ratio * firsts as f64 + self.min_per_s * self.window_s
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    firsts: u64,
    retries: u64,
}

/// The budget's state: the window's slots and what it refused.
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    slot_len: f64,
    slots: [Slot; SLOTS],
    /// The slot number (`floor(now / slot_len)`) the newest slot stands for.
    head: i64,
    firsts: u64,
    retries: u64,
    /// Retries that started later than due because the budget held them (wait mode; the
    /// scheduler's gates count them).
    pub waited: u64,
    /// Retries the budget refused, their records dead-lettered (dead-letter mode).
    pub dead_lettered: u64,
}

impl RetryBudget {
    pub fn new(policy: BudgetPolicy, now: f64) -> Self {
        let slot_len = policy.window_s / SLOTS as f64;
        let head = slot_of(now, slot_len);
        Self {
            policy,
            slot_len,
            slots: [Slot::default(); SLOTS],
            head,
            firsts: 0,
            retries: 0,
            waited: 0,
            dead_lettered: 0,
        }
    }

    /// Move the window to `now`: slots that fell out of it are emptied.
    fn advance(&mut self, now: f64) {
        let slot = slot_of(now, self.slot_len);
        if slot <= self.head {
            return;
        }
        let expired = (slot - self.head).min(SLOTS as i64);
        for step in 1..=expired {
            let index = (self.head + step).rem_euclid(SLOTS as i64) as usize;
            let old = std::mem::take(&mut self.slots[index]);
            self.firsts -= old.firsts;
            self.retries -= old.retries;
        }
        self.head = slot;
    }

    fn current(&mut self) -> &mut Slot {
        &mut self.slots[self.head.rem_euclid(SLOTS as i64) as usize]
    }

    /// A first attempt starts: it earns `ratio` of a retry.
    pub fn first_attempt(&mut self, now: f64) {
        self.advance(now);
        self.current().firsts += 1;
        self.firsts += 1;
    }

    /// Would one more retry starting at `now` stay within the budget?
    pub fn allows(&mut self, now: f64) -> bool {
        self.advance(now);
        (self.retries + 1) as f64 <= self.policy.allowance(self.firsts)
    }

    /// A retry starts at `now` (after [`allows`](Self::allows) said yes).
    pub fn retry_started(&mut self, now: f64) {
        self.advance(now);
        self.current().retries += 1;
        self.retries += 1;
    }

    /// Take a retry now, or refuse it (dead-letter mode): true when taken.
    pub fn take_or_refuse(&mut self, now: f64) -> bool {
        if self.allows(now) {
            self.current().retries += 1;
            self.retries += 1;
            true
        } else {
            self.dead_lettered += 1;
            false
        }
    }

    /// When the window next slides (its oldest slot expires): a held retry may pass then.
    pub fn next_change(&self) -> f64 {
        let mut at = (self.head + 1) as f64 * self.slot_len;
        // `(k * len) / len` may round below k (k = 42 for a slot of 0.4 s): a time that still
        // falls in the current slot would have a waiting driver wake to the same answer forever.
        while slot_of(at, self.slot_len) <= self.head {
            at += self.slot_len * 1e-6;
        }
        at
    }

    pub fn waits(&self) -> bool {
        self.policy.over_budget == OverBudget::Wait
    }
}

fn slot_of(now: f64, slot_len: f64) -> i64 {
    (now / slot_len).floor() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_s: f64, window_s: f64) -> RetryBudget {
        RetryBudget::new(BudgetPolicy::new(ratio, min_per_s, window_s, OverBudget::Wait).unwrap(), 0.0)
    }

    #[test]
    fn retries_are_limited_to_the_ratio_of_first_attempts_plus_the_floor() {
        let mut b = budget(0.2, 0.1, 10.0); // floor: 1 retry per window
        for _ in 0..20 {
            b.first_attempt(0.5);
        }
        // 0.2 * 20 + 1 = 5 retries.
        let mut allowed = 0;
        while b.allows(0.5) {
            b.retry_started(0.5);
            allowed += 1;
        }
        assert_eq!(allowed, 5);
        assert!(!b.allows(0.5));
    }

    #[test]
    fn the_window_slides_so_old_retries_stop_counting() {
        let mut b = budget(0.0, 0.1, 10.0);
        assert!(b.allows(0.0));
        b.retry_started(0.0);
        assert!(!b.allows(9.9), "the retry at 0.0 is still in the window");
        assert_eq!(b.next_change(), 10.0);
        assert!(b.allows(10.0), "its slot expired");
    }

    #[test]
    fn the_next_change_is_always_in_a_later_slot() {
        let mut b = budget(0.2, 0.25, 4.0);
        for slot in 0..10_000 {
            let at = f64::from(slot) * 0.4;
            b.allows(at);
            let next = b.next_change();
            assert!(slot_of(next, b.slot_len) > b.head, "slot {slot}: {next}");
            assert!(next - at < 0.41, "slot {slot}: {next}");
        }
    }

    #[test]
    fn first_attempts_leave_the_window_too() {
        let mut b = budget(1.0, 0.1, 10.0);
        for _ in 0..10 {
            b.first_attempt(1.0);
        }
        assert!(b.allows(5.0));
        // At 11 s the first attempts of slot 1 (1.0..2.0) have expired: only the floor is left.
        for _ in 0..11 {
            if b.allows(11.5) {
                b.retry_started(11.5);
            }
        }
        assert_eq!(b.retries, 1);
    }

    #[test]
    fn a_long_gap_empties_the_whole_window() {
        let mut b = budget(0.5, 1.0, 1.0);
        for _ in 0..100 {
            b.first_attempt(0.0);
        }
        b.retry_started(0.0);
        b.advance(1_000.0);
        assert_eq!((b.firsts, b.retries), (0, 0));
    }

    #[test]
    fn dead_letter_mode_takes_or_refuses() {
        let policy = BudgetPolicy::new(0.5, 0.0, 10.0, OverBudget::DeadLetter).unwrap();
        let mut b = RetryBudget::new(policy, 0.0);
        b.first_attempt(0.0);
        b.first_attempt(0.0);
        assert!(b.take_or_refuse(0.0));
        assert!(!b.take_or_refuse(0.0));
        assert_eq!(b.dead_lettered, 1);
    }

    #[test]
    fn bad_policies_are_refused_with_the_field_named() {
        let err = |r: Result<BudgetPolicy>| r.unwrap_err().to_string();
        assert!(err(BudgetPolicy::new(-0.1, 1.0, 10.0, OverBudget::Wait)).contains("ratio"));
        assert!(err(BudgetPolicy::new(0.2, f64::NAN, 10.0, OverBudget::Wait)).contains("min_per_s"));
        assert!(err(BudgetPolicy::new(0.2, 1.0, 0.0, OverBudget::Wait)).contains("window_s"));
        assert!(err(BudgetPolicy::new(0.2, 0.0, 10.0, OverBudget::Wait)).contains("min_per_s * window_s"));
        assert!(BudgetPolicy::new(0.2, 0.0, 10.0, OverBudget::DeadLetter).is_ok());
        assert!(OverBudget::parse("drop").is_err());
    }
}
