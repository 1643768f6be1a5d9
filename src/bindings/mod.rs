//! Everything that knows about Python: `batchguard._native`. Every decision is the
//! scheduler's (`crate::engine`); this module moves values between it and Python.
//!
//! * [`config`]: reads `EngineConfig` (and its policies) into the scheduler's `Config`;
//! * [`classify`]: classifies the user's exceptions and reads what they carry (HTTP status,
//!   `Retry-After`);
//! * [`events`]: the typed, frozen records that cross to Python (`RunSummary`, `BatchEvent`,
//!   `Counters`, ...) and their delivery to the recorder (`batchguard._outcome.RunRecorder`);
//! * [`run`]: `_native.run`, and what both sync drivers share;
//! * [`inline`]: concurrency 1, on the calling thread, holding the GIL, no locks;
//! * [`threaded`]: concurrency N, worker threads that each hold the GIL from one call to the
//!   next, the calling thread coordinating; [`bulk`]: its workers for a bulk fn (bisection);
//! * [`asyncio`]: `AsyncRun`, driven by `batchguard._async` on the event loop;
//! * [`values`]: where successful values wait, for the run's end or their batch's;
//! * [`wait`]: the clock and the one way a driver waits (the GIL released, Ctrl-C honoured);
//! * [`ffi`]: the only `unsafe` code, direct CPython calls on the per-record paths;
//! * [`exceptions`], [`policy`], [`testing`]: batchguard's exceptions, the policies'
//!   arithmetic, and the test hooks.

use pyo3::prelude::*;

use crate::engine::{Scheduler, Work};

mod asyncio;
mod bulk;
mod classify;
mod config;
mod events;
mod exceptions;
mod ffi;
mod inline;
mod policy;
mod run;
mod steer;
mod testing;
mod threaded;
mod values;
mod wait;

/// A Python object held by the engine (a record, a value, an exception).
type Obj = Py<PyAny>;
type PyWork = Work<Obj, Obj>;
type PyScheduler = Scheduler<Obj, Obj, wait::MonoClock>;

/// Registers the module's functions, classes and constants, in the order of `__all__`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run::run, m)?)?;
    m.add_function(wrap_pyfunction!(policy::backoff_schedule, m)?)?;
    m.add_function(wrap_pyfunction!(policy::calculate_batch_size, m)?)?;
    m.add_class::<events::RunSummary>()?;
    m.add_class::<events::Counters>()?;
    m.add_class::<events::ActiveBatch>()?;
    m.add_class::<events::BatchEvent>()?;
    m.add_class::<events::BreakerEvent>()?;
    m.add_class::<events::RetryEvent>()?;
    m.add_class::<events::DeadRecord>()?;
    m.add_class::<events::FailedAttempt>()?;
    m.add_class::<events::DeadRecords>()?;
    m.add_class::<asyncio::AsyncRun>()?;
    m.add("MAX_CONCURRENCY", threaded::MAX_CONCURRENCY)?;
    m.add("DELIVERY_ATTEMPTS", events::DELIVERY_ATTEMPTS)?;
    m.add_function(wrap_pyfunction!(testing::_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(testing::_panic_in_worker_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(testing::_budget_trace_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(testing::_adaptive_trace_for_test, m)?)?;
    Ok(())
}
