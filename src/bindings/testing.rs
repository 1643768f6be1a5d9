//! Test hooks: two functions the test suite calls on the built extension to prove that a Rust
//! panic cannot crash the interpreter or hang a run. They are underscore-named, registered
//! last and documented as tests-only in `_native.pyi`; they stay in the shipped module because
//! the tests must exercise the very build users get (a cargo feature would mean a second build).

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;

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
