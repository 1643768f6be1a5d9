//! Reading `batchguard._run.config.EngineConfig` (and the policies it holds) into the
//! scheduler's [`Config`] and the drivers' [`RunOptions`].
//!
//! The engine reads the config by attribute (duck typing): each `#[derive(FromPyObject)]`
//! struct below reads every field with `getattr` under the field's own name, so the names the
//! engine depends on are declared once, here, next to the Python dataclass they mirror.

use std::collections::HashSet;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyInt;

use super::events::{progress_every_batch, wants_progress};
use super::exceptions::ConfigError;
use super::run::Prepared;
use super::wait::saturating_secs;
use crate::backoff::{Jitter, RetryPolicy};
use crate::breaker::BreakerPolicy;
use crate::classify::ErrorClass;
use crate::engine::{AdaptivePolicy, Budget, BudgetPolicy, Config, OverBudget};
use crate::ratelimit::RateLimit;

use super::ffi::Source;

/// `batchguard._run.config.EngineConfig`.
#[derive(FromPyObject)]
struct EngineConfigFields<'py> {
    batch_size: usize,
    concurrency: usize,
    retry: RetryFields,
    breaker: Option<BreakerFields>,
    #[pyo3(from_py_with = budget)]
    max_failures: Option<Budget>,
    seed: u64,
    progress_interval: f64,
    traceback_limit: u64,
    skip_batches: HashSet<u64>,
    timeout: Option<f64>,
    rate_per_second: Option<f64>,
    rate_burst: f64,
    delay_between_batches: f64,
    key_of: Option<Bound<'py, PyAny>>,
    collect_retries: bool,
    retry_policies: Vec<RetryFields>,
    retry_budget: Option<BudgetFields>,
    adaptive: Option<AdaptiveFields>,
    values_per_batch: bool,
}

/// `batchguard.RetryPolicy`.
#[derive(FromPyObject)]
struct RetryFields {
    max_attempts: u32,
    base_delay: f64,
    multiplier: f64,
    max_delay: f64,
    jitter: String,
    /// The cap on an exception's `retry_after` is the policy's own (`max_retry_after`, else
    /// `max_delay`): one rule, in Python, for both engines.
    retry_after_cap: f64,
    max_elapsed: Option<f64>,
}

impl RetryFields {
    fn policy(&self) -> PyResult<RetryPolicy> {
        Ok(RetryPolicy::new(
            self.max_attempts,
            self.base_delay,
            self.multiplier,
            self.max_delay,
            self.jitter.parse::<Jitter>()?,
        )?
        .with_max_retry_after(self.retry_after_cap)?
        .with_max_elapsed(self.max_elapsed)?)
    }
}

/// `batchguard.CircuitBreaker`.
#[derive(FromPyObject)]
struct BreakerFields {
    failure_rate_threshold: f64,
    window: usize,
    minimum_calls: usize,
    open_duration: f64,
    half_open_calls: u32,
    abort_failure_rate: Option<f64>,
    #[pyo3(from_py_with = error_classes)]
    counts: Vec<ErrorClass>,
    slow_call_s: Option<f64>,
    slow_call_rate_threshold: Option<f64>,
}

/// `batchguard.RetryBudget`.
#[derive(FromPyObject)]
struct BudgetFields {
    ratio: f64,
    min_per_s: f64,
    window_s: f64,
    over_budget: String,
}

/// `batchguard.Adaptive` (`start`: `initial`, or `min` when that is None).
#[derive(FromPyObject)]
struct AdaptiveFields {
    min: usize,
    max: usize,
    start: usize,
    increase: f64,
    decrease: f64,
}

/// `max_failures`: None, a count (an int), or a rate (a float).
fn budget(value: &Bound<'_, PyAny>) -> PyResult<Option<Budget>> {
    Ok(if value.is_none() {
        None
    } else if value.is_instance_of::<PyInt>() {
        Some(Budget::Count(value.extract()?))
    } else {
        Some(Budget::Rate(value.extract()?))
    })
}

/// A collection of `ErrorClass` values (each read by its `str`).
fn error_classes(value: &Bound<'_, PyAny>) -> PyResult<Vec<ErrorClass>> {
    value.try_iter()?.map(|class| Ok(ErrorClass::parse(&class?.str()?.to_cow()?)?)).collect()
}

/// An `EngineConfig`, as the engine runs it.
pub(super) struct Settings<'py> {
    pub(super) config: Config,
    /// Batches a resumed job already finished: read past, not run.
    pub(super) skip: HashSet<u64>,
    pub(super) key_of: Option<Bound<'py, PyAny>>,
    pub(super) timeout: Option<Duration>,
    /// Successful values go to the recorder with their batch's end, not in the run's summary
    /// (`values.rs`).
    pub(super) values_per_batch: bool,
}

impl<'py> Settings<'py> {
    /// Read and check `cfg`; `batchguard.errors.ConfigError` for values the engine cannot run.
    pub(super) fn from_py(cfg: &Bound<'py, PyAny>) -> PyResult<Self> {
        let fields: EngineConfigFields<'py> = cfg.extract()?;
        let policy = fields.retry.policy()?;
        let policies = fields.retry_policies.iter().map(RetryFields::policy).collect::<PyResult<Vec<_>>>()?;
        let breaker = match fields.breaker {
            Some(b) => Some(
                BreakerPolicy::new(
                    b.failure_rate_threshold,
                    b.window,
                    b.minimum_calls,
                    b.open_duration,
                    b.half_open_calls,
                    b.abort_failure_rate,
                    b.counts,
                )?
                .with_slow_calls(b.slow_call_s, b.slow_call_rate_threshold)?,
            ),
            None => None,
        };
        let (batch_size, concurrency) = (fields.batch_size, fields.concurrency);
        // `api` checks both; the engine must not loop on empty batches or run with no worker
        // whatever it is given.
        if batch_size == 0 || concurrency == 0 {
            let (name, value) = if batch_size == 0 { ("batch_size", batch_size) } else { ("concurrency", concurrency) };
            return Err(ConfigError::new_err(format!("{name} must be >= 1, got {value}")));
        }
        let retry_budget = match fields.retry_budget {
            Some(b) => Some(BudgetPolicy::new(b.ratio, b.min_per_s, b.window_s, OverBudget::parse(&b.over_budget)?)?),
            None => None,
        };
        let adaptive = match fields.adaptive {
            Some(a) => Some(AdaptivePolicy::new(a.min, a.max, a.start, a.increase, a.decrease)?),
            None => None,
        };
        let rate_limit = match fields.rate_per_second {
            Some(rate) => Some(RateLimit::new(rate, fields.rate_burst)?),
            None => None,
        };
        Ok(Self {
            config: Config {
                batch_size,
                concurrency,
                retry: policy,
                policies,
                breaker,
                max_failures: fields.max_failures,
                seed: fields.seed,
                traceback_limit: fields.traceback_limit,
                progress_interval: fields.progress_interval,
                rate_limit,
                delay_between_batches: fields.delay_between_batches,
                collect_retries: fields.collect_retries,
                retry_budget,
                adaptive,
            },
            skip: fields.skip_batches,
            key_of: fields.key_of.filter(|key_of| !key_of.is_none()),
            timeout: fields.timeout.map(saturating_secs),
            values_per_batch: fields.values_per_batch,
        })
    }
}

/// Per-run options the sync drivers need besides the scheduler's [`Config`].
#[allow(clippy::struct_excessive_bools)] // independent switches, each read once per run
pub(super) struct RunOptions<'py> {
    pub(super) batch_size: usize,
    skip: HashSet<u64>,
    key_of: Option<Bound<'py, PyAny>>,
    pub(super) timeout: Option<Duration>,
    /// Seconds between throttled progress reports.
    pub(super) interval: f64,
    /// Someone listens to progress (the recorder has an `on_progress` callback): only then
    /// is the clock read between records to report it on time.
    pub(super) wants_progress: bool,
    /// A snapshot at every batch end (else one at most every `interval`, batch ends included).
    pub(super) every_batch: bool,
    /// The input's length when known: result storage is sized once.
    pub(super) size_hint: Option<usize>,
    /// The fn takes a list of records (a batch, or a bisected part of one).
    pub(super) bulk: bool,
    /// See [`Settings::values_per_batch`].
    pub(super) values_per_batch: bool,
}

impl<'py> RunOptions<'py> {
    /// The options of `settings` (whose `config` goes to the scheduler).
    pub(super) fn new(
        settings: Settings<'py>,
        sink: &Bound<'py, PyAny>,
        size_hint: Option<usize>,
        bulk: bool,
    ) -> PyResult<(Config, Self)> {
        let Settings { config, skip, key_of, timeout, values_per_batch } = settings;
        let options = Self {
            batch_size: config.batch_size,
            skip,
            key_of,
            timeout,
            interval: config.progress_interval,
            wants_progress: wants_progress(sink)?,
            every_batch: progress_every_batch(sink)?,
            size_hint,
            bulk,
            values_per_batch,
        };
        Ok((config, options))
    }

    /// Read the next batch and prepare it for `sched` (key_of runs here, outside any lock).
    pub(super) fn read(&self, source: &mut Source<'py>, next_batch_index: u64) -> PyResult<Prepared> {
        let batch = source.read(self.batch_size)?;
        Prepared::new(batch, next_batch_index, &self.skip, self.key_of.as_ref())
    }
}
