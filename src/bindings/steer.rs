//! What the drivers tell the scheduler for adaptive concurrency: whether a failed call's error
//! is an overload signal. The rule is `batchguard.steering.is_overload`, one function both
//! engines call, asked only when concurrency adapts and only for failures (the cold path).

use pyo3::intern;
use pyo3::prelude::*;

/// Is `exc` an overload signal (HTTP 429/503, a timeout, a Retry-After)? An error raised while
/// deciding (it cannot come from the rule, which guards the exception's attributes) counts as
/// no signal: it must not fail the record or the run.
pub(super) fn is_overload(py: Python<'_>, exc: &Bound<'_, PyAny>) -> bool {
    py.import(intern!(py, "batchguard.steering"))
        .and_then(|module| module.getattr(intern!(py, "is_overload")))
        .and_then(|rule| rule.call1((exc,)))
        .and_then(|verdict| verdict.is_truthy())
        .unwrap_or(false)
}
