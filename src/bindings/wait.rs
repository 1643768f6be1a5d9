//! Time, and the one way the engine waits.
//!
//! Every wait of a driver (the inline driver's nap until a retry is due, a worker parked until
//! there is work, the coordinator waiting for events) goes through [`detached`], as polars'
//! long sections go through `enter_polars`: the GIL is released for the wait, the wait is one
//! slice of at most [`MAX_WAIT`], and a pending signal becomes its exception (Ctrl-C, a
//! `KeyboardInterrupt`) as soon as the GIL is back. The caller loops, and so sees both the
//! state that woke it and a Ctrl-C within `MAX_WAIT`.
//!
//! Every float that becomes a [`Duration`] (a timeout, a delay, a `retry_after`, a deadline)
//! goes through [`saturating_secs`], so no user's value can panic.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

use crate::engine::Clock;

/// Longest a waiting thread sleeps before it looks again (and checks for Ctrl-C).
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);

/// Longest a parked worker waits for a wake-up before it looks at the state again. Only a
/// safety net: every change that gives a worker something to do wakes one (`threaded.rs`), and
/// a worker has no Ctrl-C to look for (signal handlers run on the main thread only).
pub(super) const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// `seconds` as a Duration, saturating: a negative or NaN value is zero, an overflowing or
/// infinite one is `Duration::MAX` ("never"). `Duration::from_secs_f64` panics on those, and a
/// user's value (a timeout, a delay, a `retry_after`) must never become a PanicException.
pub(super) fn saturating_secs(seconds: f64) -> Duration {
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) => duration,
        Err(_) if seconds > 0.0 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

/// How long to wait now to wake at `until` (monotonic seconds of `clock`, None: no timer),
/// never more than MAX_WAIT: computed in seconds, so no far-future Instant is ever built.
pub(super) fn slice_until(clock: &MonoClock, until: Option<f64>) -> Duration {
    match until {
        // A NaN deadline is no deadline: waiting 0 s would spin on it.
        Some(at) if !at.is_nan() => saturating_secs(at - clock.now()).min(MAX_WAIT),
        _ => MAX_WAIT,
    }
}

/// How long a parked worker waits to wake at `until` (None: no timer), never more than
/// [`IDLE_RECHECK`].
pub(super) fn park_for(clock: &MonoClock, until: Option<f64>) -> Duration {
    match until {
        Some(at) if !at.is_nan() => saturating_secs(at - clock.now()).min(IDLE_RECHECK),
        _ => IDLE_RECHECK,
    }
}

/// Run `wait` without the GIL, handing it `slice` (at most [`MAX_WAIT`]: how long it may
/// block), then, with the GIL back, let Python handle pending signals: a Ctrl-C comes back as
/// the `KeyboardInterrupt` its handler raised. A zero slice keeps the GIL (nothing to wait
/// for) but still checks. Off the main thread the check finds nothing: CPython runs signal
/// handlers on the main thread only.
pub(super) fn detached<T, F>(py: Python<'_>, slice: Duration, wait: F) -> PyResult<T>
where
    F: Send + FnOnce(Duration) -> T,
    T: Send,
{
    let slice = slice.min(MAX_WAIT);
    let waited = if slice.is_zero() { wait(slice) } else { py.detach(|| wait(slice)) };
    py.check_signals()?;
    Ok(waited)
}

/// The scheduler's clock: monotonic seconds since the run started.
#[derive(Clone, Copy)]
pub(super) struct MonoClock(pub(super) Instant);

impl Clock for MonoClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    fn wall(&self) -> f64 {
        wall_now()
    }
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub(super) fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_becomes_a_duration_without_panicking() {
        assert_eq!(saturating_secs(1.5), Duration::from_millis(1500));
        for huge in [1e20, 1e300, f64::MAX, f64::INFINITY] {
            assert_eq!(saturating_secs(huge), Duration::MAX, "{huge}");
        }
        for nothing in [0.0, -0.0, -1.0, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(saturating_secs(nothing), Duration::ZERO, "{nothing}");
        }
    }

    #[test]
    fn a_far_or_odd_deadline_is_a_short_wait() {
        let clock = MonoClock(Instant::now());
        for until in [Some(1e300), Some(f64::INFINITY), Some(f64::NAN), None] {
            assert_eq!(slice_until(&clock, until), MAX_WAIT, "{until:?}");
        }
        assert_eq!(slice_until(&clock, Some(-5.0)), Duration::ZERO, "a deadline in the past");
        for until in [Some(1e300), Some(f64::INFINITY), Some(f64::NAN), None] {
            assert_eq!(park_for(&clock, until), IDLE_RECHECK, "{until:?}");
        }
        assert_eq!(park_for(&clock, Some(-5.0)), Duration::ZERO, "a deadline in the past");
    }
}
