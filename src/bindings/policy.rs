//! The policies' arithmetic, exposed so Python shows the numbers the engine will use.

use pyo3::prelude::*;

use super::exceptions::ConfigError;
use crate::backoff::RetryPolicy;

/// The delays `RetryPolicy.schedule` promises, computed by the engine that waits them.
#[pyfunction]
#[pyo3(signature = (max_attempts, base_delay, multiplier, max_delay, jitter, seed, record_index, n))]
#[allow(clippy::too_many_arguments)]
pub fn backoff_schedule(
    max_attempts: u32,
    base_delay: f64,
    multiplier: f64,
    max_delay: f64,
    jitter: &str,
    seed: u64,
    record_index: u64,
    n: usize,
) -> PyResult<Vec<f64>> {
    // The list is built whole: a huge n must be an error, not an allocation that panics or aborts.
    const MAX_SCHEDULE: usize = 1 << 20;
    if n > MAX_SCHEDULE {
        return Err(ConfigError::new_err(format!("n must be <= {MAX_SCHEDULE} delays, got {n}")));
    }
    let policy = RetryPolicy::new(max_attempts, base_delay, multiplier, max_delay, jitter.parse()?)?;
    Ok(policy.schedule(seed, record_index, n))
}

/// The seed's batch-size heuristic (see `batchguard.calculate_batch_size`).
#[pyfunction]
pub fn calculate_batch_size(total_items: u64, max_batch_size: u64) -> PyResult<u64> {
    if max_batch_size < 1 {
        return Err(ConfigError::new_err(format!("max_batch_size must be >= 1, got {max_batch_size}")));
    }
    Ok(crate::partition::calculate_batch_size(total_items, max_batch_size))
}
