//! Test hooks: functions the test suite calls on the built extension, to prove that a Rust
//! panic cannot crash the interpreter or hang a run, and to hold the steering state machines
//! (retry budget, adaptive limit) to their Python twins step by step. They are
//! underscore-named, registered last and documented as tests-only in `_native.pyi`; they stay
//! in the shipped module because the tests must exercise the very build users get (a cargo
//! feature would mean a second build).

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::engine::{Adaptive, AdaptivePolicy, BudgetPolicy, OverBudget, RetryBudget};

/// Record index at which the next threaded worker panics after its call (`u64::MAX`: never).
/// Only `_panic_in_worker_for_test` arms it.
static PANIC_AFTER_RECORD: AtomicU64 = AtomicU64::new(u64::MAX);

/// Panics inside the extension: proves a Rust panic reaches Python as an exception.
#[pyfunction]
pub fn _panic_for_test(message: &str) {
    panic!("{message}");
}

/// Makes the threaded worker that runs `record_index` panic once its call has returned, while
/// the record is still in flight: proves a dead worker cannot hang a run.
#[pyfunction]
pub fn _panic_in_worker_for_test(record_index: u64) {
    PANIC_AFTER_RECORD.store(record_index, Ordering::Relaxed);
}

/// A threaded worker calls this after each call: panics once when `_panic_in_worker_for_test`
/// armed this record (one relaxed load otherwise).
#[inline]
pub(super) fn panic_if_armed(record_index: u64) {
    if record_index == PANIC_AFTER_RECORD.load(Ordering::Relaxed) {
        PANIC_AFTER_RECORD.store(u64::MAX, Ordering::Relaxed);
        panic!("_panic_in_worker_for_test: record {record_index}");
    }
}

/// Runs a script on the retry budget's state machine (`src/engine/budget.rs`) and returns
/// what each step answered, so the parity tests can hold `reference/budget.py` to it. Steps:
/// `("first", now)` a first attempt (None), `("allows", now)` (bool), `("retry", now)` a
/// retry starts (None), `("take", now)` dead-letter mode's take-or-refuse (bool), `("next", _)`
/// when the window next slides (float). The last item is `(waited, dead_lettered)`.
#[pyfunction]
pub fn _budget_trace_for_test(
    py: Python<'_>,
    ratio: f64,
    min_per_s: f64,
    window_s: f64,
    over_budget: &str,
    script: Vec<(String, f64)>,
) -> PyResult<Vec<Py<PyAny>>> {
    let policy = BudgetPolicy::new(ratio, min_per_s, window_s, OverBudget::parse(over_budget)?)?;
    let mut budget = RetryBudget::new(policy, 0.0);
    let mut out = Vec::with_capacity(script.len() + 1);
    for (step, now) in script {
        out.push(match step.as_str() {
            "first" => {
                budget.first_attempt(now);
                py.None()
            }
            "allows" => budget.allows(now).into_py_any(py)?,
            "retry" => {
                budget.retry_started(now);
                py.None()
            }
            "take" => budget.take_or_refuse(now).into_py_any(py)?,
            "next" => budget.next_change().into_py_any(py)?,
            other => return Err(PyValueError::new_err(format!("unknown step {other:?}"))),
        });
    }
    out.push((budget.waited, budget.dead_lettered).into_py_any(py)?);
    Ok(out)
}

/// Runs a script on the adaptive limit (`src/engine/adaptive.rs`) and returns the limit after
/// each step, for the parity tests against `reference/adaptive.py`. Steps: `("start", _)` a
/// call starts, `("ok", in_flight)` a call succeeds with that many in flight, `("overload",
/// call)` call number `call` ended with an overload signal. The last item is
/// `(peak, low, decreases)`.
#[pyfunction]
#[pyo3(signature = (low, high, initial, increase, decrease, script))]
pub fn _adaptive_trace_for_test(
    py: Python<'_>,
    low: usize,
    high: usize,
    initial: usize,
    increase: f64,
    decrease: f64,
    script: Vec<(String, u64)>,
) -> PyResult<Vec<Py<PyAny>>> {
    let mut adaptive = Adaptive::new(AdaptivePolicy::new(low, high, initial, increase, decrease)?);
    let mut out = Vec::with_capacity(script.len() + 1);
    for (step, value) in script {
        match step.as_str() {
            "start" => {
                adaptive.started();
            }
            "ok" => adaptive.succeeded(usize::try_from(value).unwrap_or(usize::MAX)),
            "overload" => {
                adaptive.overloaded(value);
            }
            other => return Err(PyValueError::new_err(format!("unknown step {other:?}"))),
        }
        out.push(adaptive.limit().into_py_any(py)?);
    }
    out.push((adaptive.peak, adaptive.low, adaptive.decreases).into_py_any(py)?);
    Ok(out)
}
