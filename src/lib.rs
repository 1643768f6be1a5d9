//! batchguard's engine: the hot path of fault-tolerant batch processing.
//!
//! The modules are plain Rust with their own tests — [`partition`], [`classify`],
//! [`backoff`], [`breaker`] and the scheduler in [`engine`]. `bindings` is the only code
//! that knows about Python; this file only registers it as `batchguard._native`.

// `unsafe` lives in `bindings/ffi.rs` only (which allows it, with a reason); everything
// else is checked by the compiler.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backoff;
pub mod breaker;
pub mod classify;
pub mod engine;
pub mod error;
pub mod partition;
pub mod ratelimit;

mod bindings;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    bindings::register(m)
}
