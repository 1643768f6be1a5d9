//! A token bucket shared by all workers: attempts start at most `rate` per second on average
//! and `burst` at once. Mirrors `batchguard.reference.TokenBucket`.

use crate::error::{config_error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
}

impl RateLimit {
    /// ```
    /// use batchguard::ratelimit::RateLimit;
    /// assert!(RateLimit::new(0.0, 1.0).is_err());
    /// ```
    pub fn new(per_second: f64, burst: f64) -> Result<Self> {
        if !(per_second > 0.0 && per_second.is_finite()) {
            return config_error(format!("RateLimit.per_second must be > 0, got {per_second}"));
        }
        if !(burst >= 1.0 && burst.is_finite()) {
            return config_error(format!("RateLimit.burst must be >= 1, got {burst}"));
        }
        Ok(Self { per_second, burst })
    }
}

const TOKEN_EPSILON: f64 = 1e-9;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(limit: RateLimit, now: f64) -> Self {
        Self { tokens: limit.burst, limit, last: now }
    }

    /// Take a token: `None` when granted, else the time one will be there.
    pub fn take(&mut self, now: f64) -> Option<f64> {
        if now > self.last {
            self.tokens = self.limit.burst.min(self.tokens + (now - self.last) * self.limit.per_second);
            self.last = now;
        }
        // The epsilon absorbs rounding in the refill: waiting until the promised time must
        // always be enough, or a caller could spin on a token that never quite arrives.
        if self.tokens >= 1.0 - TOKEN_EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return None;
        }
        Some(now + (1.0 - self.tokens) / self.limit.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_grants_its_burst_then_paces() {
        let mut bucket = TokenBucket::new(RateLimit::new(10.0, 3.0).unwrap(), 0.0);
        assert_eq!((bucket.take(0.0), bucket.take(0.0), bucket.take(0.0)), (None, None, None));
        let next = bucket.take(0.0).expect("the burst is spent");
        assert!((next - 0.1).abs() < 1e-12);
        assert_eq!(bucket.take(0.1), None);
    }

    #[test]
    fn the_long_run_rate_never_exceeds_the_limit() {
        let mut bucket = TokenBucket::new(RateLimit::new(50.0, 5.0).unwrap(), 0.0);
        let (mut now, mut granted) = (0.0, 0u32);
        while now < 10.0 {
            match bucket.take(now) {
                None => granted += 1,
                Some(until) => now = until,
            }
        }
        assert!(granted <= 5 + 50 * 10, "{granted} starts in 10 s");
        assert!(granted >= 50 * 10 - 1, "{granted}: the bucket should not starve either");
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let mut bucket = TokenBucket::new(RateLimit::new(1.0, 2.0).unwrap(), 0.0);
        assert_eq!((bucket.take(100.0), bucket.take(100.0)), (None, None));
        assert!(bucket.take(100.0).is_some());
    }

    #[test]
    fn invalid_limits_name_the_field() {
        assert!(RateLimit::new(-1.0, 1.0).unwrap_err().0.contains("per_second"));
        assert!(RateLimit::new(1.0, 0.5).unwrap_err().0.contains("burst"));
    }
}
