//! What a run is configured with ([`Config`], [`Budget`]) and why it may stop ([`StopReason`]).

use super::adaptive::AdaptivePolicy;
use super::budget::BudgetPolicy;
use crate::backoff::RetryPolicy;
use crate::breaker::BreakerPolicy;
use crate::ratelimit::RateLimit;

/// The error budget (`max_failures`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Stop when more than this many records are dead-lettered.
    Count(u64),
    /// Stop when more than this share of the finished records are dead-lettered.
    Rate(f64),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub batch_size: usize,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// `RetryPolicies.by_error`'s policies: a failure's [`crate::classify::Verdict`] names one
    /// by index from 1 (0 is `retry`). Empty when one policy governs every failure.
    pub policies: Vec<RetryPolicy>,
    pub breaker: Option<BreakerPolicy>,
    pub max_failures: Option<Budget>,
    pub seed: u64,
    /// Dead-lettered records whose exceptions keep a traceback; later ones drop it.
    pub traceback_limit: u64,
    /// Seconds between progress reports (besides the one at every batch end).
    pub progress_interval: f64,
    /// Attempts start at most this fast, shared by all workers.
    pub rate_limit: Option<RateLimit>,
    /// The first record of a batch starts at least this long after the previous batch's last
    /// new record started.
    pub delay_between_batches: f64,
    /// Hand each scheduled retry to the driver as an [`Event::Retry`] (an `on_retry` hook).
    pub collect_retries: bool,
    /// Retries may not exceed a share of first attempts (`retry_budget=RetryBudget(...)`).
    pub retry_budget: Option<BudgetPolicy>,
    /// Calls in flight are limited by AIMD (`concurrency=Adaptive(...)`); `concurrency` is
    /// then its `max`.
    pub adaptive: Option<AdaptivePolicy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Fatal,
    MaxFailures,
    BreakerAbort,
    Interrupt,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::MaxFailures => "max_failures",
            Self::BreakerAbort => "breaker_abort",
            Self::Interrupt => "interrupt",
        }
    }
}
