//! Retry delays: exponential backoff with four jitter modes, reproducible from a seed.
//!
//! The jitter stream is splitmix64, keyed by (seed, record index), so a record waits the same
//! delays whichever worker runs it and whichever engine (the Python reference mirrors this
//! file bit for bit: `batchguard.policies.BackoffState`).

use crate::error::{config_error, Result};

/// How a computed delay `d` is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// `d`
    None,
    /// `uniform(0, d)`
    Full,
    /// `d/2 + uniform(0, d/2)`
    Equal,
    /// `min(max_delay, uniform(base_delay, 3 * previous))`, first `previous = base_delay`
    Decorrelated,
}

impl std::str::FromStr for Jitter {
    type Err = crate::error::ConfigError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "full" => Ok(Self::Full),
            "equal" => Ok(Self::Equal),
            "decorrelated" => Ok(Self::Decorrelated),
            other => config_error(format!(
                "RetryPolicy.jitter must be one of none, full, equal, decorrelated; got {other:?}"
            )),
        }
    }
}

/// Attempts and backoff shape. Built only through [`RetryPolicy::new`], which validates.
///
/// ```
/// use batchguard::backoff::{Jitter, RetryPolicy};
/// let p = RetryPolicy::new(4, 0.5, 2.0, 30.0, Jitter::None).unwrap();
/// assert_eq!(p.schedule(0, 0, 3), vec![0.5, 1.0, 2.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: f64,
    multiplier: f64,
    max_delay: f64,
    jitter: Jitter,
    /// The longest wait an exception's `retry_after` can ask for (`max_retry_after`).
    max_retry_after: f64,
    /// Seconds from a record's first failure after which no retry of it starts.
    max_elapsed: Option<f64>,
}

fn check_non_negative(name: &str, value: f64) -> Result<()> {
    if value.is_nan() || value < 0.0 {
        return config_error(format!("RetryPolicy.{name} must be >= 0, got {value}"));
    }
    Ok(())
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base_delay: f64, multiplier: f64, max_delay: f64, jitter: Jitter) -> Result<Self> {
        if max_attempts < 1 {
            return config_error("RetryPolicy.max_attempts must be >= 1, got 0");
        }
        check_non_negative("base_delay", base_delay)?;
        check_non_negative("max_delay", max_delay)?;
        if multiplier.is_nan() || multiplier < 1.0 {
            return config_error(format!("RetryPolicy.multiplier must be >= 1, got {multiplier}"));
        }
        if max_delay < base_delay {
            return config_error(format!("RetryPolicy.max_delay ({max_delay}) must be >= base_delay ({base_delay})"));
        }
        Ok(Self {
            max_attempts,
            base_delay,
            multiplier,
            max_delay,
            jitter,
            max_retry_after: max_delay,
            max_elapsed: None,
        })
    }

    /// Caps what an exception's `retry_after` can ask for (the default cap is `max_delay`):
    /// a server's `Retry-After: 1e12` must not park a record for 30,000 years.
    pub fn with_max_retry_after(mut self, cap: f64) -> Result<Self> {
        check_non_negative("max_retry_after", cap)?;
        self.max_retry_after = cap;
        Ok(self)
    }

    /// Bounds a record's retrying: no retry starts more than `seconds` after its first failure.
    pub fn with_max_elapsed(mut self, seconds: Option<f64>) -> Result<Self> {
        if let Some(seconds) = seconds {
            if seconds.is_nan() || seconds <= 0.0 {
                return config_error(format!("RetryPolicy.max_elapsed must be > 0, got {seconds}"));
            }
        }
        self.max_elapsed = seconds;
        Ok(self)
    }

    pub fn max_elapsed(&self) -> Option<f64> {
        self.max_elapsed
    }

    /// May a retry due at `due` start, for a record that first failed at `first_failed`?
    pub fn within_elapsed(&self, first_failed: f64, due: f64) -> bool {
        self.max_elapsed.is_none_or(|limit| due - first_failed <= limit)
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait a failure asks for (`retry_after`, seconds), within `max_retry_after`.
    pub fn capped_retry_after(&self, retry_after: f64) -> f64 {
        // `min` also turns a NaN into the cap rather than letting it through.
        self.max_retry_after.min(retry_after)
    }

    /// The un-jittered delay before the `retry`-th retry (1-based).
    pub fn base_delay_for(&self, retry: u32) -> f64 {
        if self.base_delay == 0.0 {
            return 0.0; // not 0 * inf: zero means no wait, however many retries
        }
        let raw = self.base_delay * self.multiplier.powf(f64::from(retry) - 1.0);
        // `min` returns the other operand when one is NaN (0 * inf), as Python's overflow path does.
        self.max_delay.min(raw)
    }

    /// The first `n` delays one record would wait (before any `retry_after`).
    pub fn schedule(&self, seed: u64, record_index: u64, n: usize) -> Vec<f64> {
        let mut state = Backoff::new(self, seed, record_index);
        (0..n).map(|_| state.next_delay(self)).collect()
    }
}

/// splitmix64: tiny, fast, and trivially identical in Python.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(state: u64) -> Self {
        Self(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`, from the top 53 bits.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        low + (high - low) * unit
    }
}

/// What a record's index is multiplied by to key its jitter stream (mirrored in `policies.py`).
const JITTER_KEY: u64 = 0xD1B5_4A32_D192_ED03;

/// The delay generator of one record.
#[derive(Clone, Debug)]
pub struct Backoff {
    rng: SplitMix64,
    retry: u32,
    previous: f64,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy, seed: u64, record_index: u64) -> Self {
        // Added, not xored: record `first + i` of a run with `seed` has the stream of record `i`
        // of a run with `seed + first * KEY`, so a batch run alone on an executor's worker
        // draws the jitter its records draw in the whole input (`batchguard.policies.jitter_seed_at`).
        let key = record_index.wrapping_add(1).wrapping_mul(JITTER_KEY);
        Self { rng: SplitMix64::new(seed.wrapping_add(key)), retry: 0, previous: policy.base_delay }
    }

    pub fn next_delay(&mut self, policy: &RetryPolicy) -> f64 {
        self.retry += 1;
        match policy.jitter {
            Jitter::Decorrelated => {
                let high = policy.base_delay.max(3.0 * self.previous);
                let delay = policy.max_delay.min(self.rng.uniform(policy.base_delay, high));
                self.previous = delay;
                delay
            }
            Jitter::None => policy.base_delay_for(self.retry),
            Jitter::Full => {
                let d = policy.base_delay_for(self.retry);
                self.rng.uniform(0.0, d)
            }
            Jitter::Equal => {
                let d = policy.base_delay_for(self.retry);
                // Clamped: for a subnormal d of an odd number of ulps, d / 2 rounds up, and
                // the sum could pass d by an ulp.
                (d / 2.0 + self.rng.uniform(0.0, d / 2.0)).min(d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::new(10, 1.0, 2.0, 30.0, jitter).unwrap()
    }

    #[test]
    fn exponential_without_jitter_is_capped_at_max_delay() {
        let delays = policy(Jitter::None).schedule(0, 0, 7);
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
    }

    #[test]
    fn huge_retry_numbers_saturate_instead_of_overflowing() {
        let p = RetryPolicy::new(10_000, 0.5, 2.0, 5.0, Jitter::None).unwrap();
        assert_eq!(p.base_delay_for(5000), 5.0);
        let zero = RetryPolicy::new(10_000, 0.0, 2.0, 5.0, Jitter::None).unwrap();
        assert_eq!(zero.base_delay_for(5000), 0.0, "zero base delay never waits");
    }

    #[test]
    fn full_jitter_stays_below_the_exponential_delay() {
        let p = policy(Jitter::Full);
        for (n, d) in p.schedule(42, 7, 8).into_iter().enumerate() {
            assert!((0.0..=p.base_delay_for(n as u32 + 1)).contains(&d), "retry {n}: {d}");
        }
    }

    #[test]
    fn equal_jitter_keeps_at_least_half() {
        let p = policy(Jitter::Equal);
        for (n, d) in p.schedule(42, 7, 8).into_iter().enumerate() {
            let full = p.base_delay_for(n as u32 + 1);
            assert!(d >= full / 2.0 && d <= full, "retry {n}: {d}");
        }
    }

    #[test]
    fn decorrelated_jitter_grows_from_base_and_respects_the_cap() {
        let p = policy(Jitter::Decorrelated);
        let delays = p.schedule(1, 0, 50);
        assert!(delays[0] >= 1.0 && delays[0] <= 3.0);
        assert!(delays.iter().all(|d| (1.0..=30.0).contains(d)));
    }

    #[test]
    fn same_seed_and_record_give_the_same_delays_and_records_differ() {
        let p = policy(Jitter::Full);
        assert_eq!(p.schedule(9, 3, 5), p.schedule(9, 3, 5));
        assert_ne!(p.schedule(9, 3, 5), p.schedule(9, 4, 5));
    }

    #[test]
    fn splitmix_matches_the_reference_vector() {
        // The first outputs for state 0 (published splitmix64 test vector).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn retry_after_is_capped_at_max_delay_by_default_and_at_max_retry_after_when_set() {
        let p = RetryPolicy::new(3, 1.0, 2.0, 30.0, Jitter::None).unwrap();
        assert_eq!(p.capped_retry_after(1e12), 30.0);
        assert_eq!(p.capped_retry_after(1e30), 30.0);
        assert_eq!(p.capped_retry_after(2.5), 2.5);
        let p = p.with_max_retry_after(120.0).unwrap();
        assert_eq!(p.capped_retry_after(1e12), 120.0);
        assert!(RetryPolicy::new(3, 1.0, 2.0, 30.0, Jitter::None).unwrap().with_max_retry_after(-1.0).is_err());
    }

    #[test]
    fn invalid_policies_are_rejected_with_the_field_name() {
        let err = RetryPolicy::new(0, 1.0, 2.0, 3.0, Jitter::Full).unwrap_err();
        assert!(err.0.contains("max_attempts"));
        let err = RetryPolicy::new(1, -1.0, 2.0, 3.0, Jitter::Full).unwrap_err();
        assert!(err.0.contains("base_delay"));
        let err = RetryPolicy::new(1, 5.0, 2.0, 3.0, Jitter::Full).unwrap_err();
        assert!(err.0.contains("max_delay"));
        assert!("sometimes".parse::<Jitter>().unwrap_err().0.contains("jitter"));
        let err = RetryPolicy::new(1, 1.0, 2.0, 3.0, Jitter::Full).unwrap().with_max_elapsed(Some(0.0)).unwrap_err();
        assert!(err.0.contains("max_elapsed"));
    }

    #[test]
    fn max_elapsed_allows_a_retry_due_up_to_the_limit_and_none_after() {
        let p = policy(Jitter::None).with_max_elapsed(Some(10.0)).unwrap();
        assert!(p.within_elapsed(100.0, 110.0));
        assert!(!p.within_elapsed(100.0, 110.5));
        assert!(policy(Jitter::None).within_elapsed(0.0, 1e12));
    }
}
