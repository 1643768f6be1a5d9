//! The driver at concurrency 1: runs inline on the calling thread, holding the GIL, with no
//! locks at all. Records stream through the scheduler's fast path (`Scheduler::stream`) until
//! something needs a look: a failure, a batch end, a due progress report, a wait.

use std::time::Instant;

use pyo3::prelude::*;

use super::classify::{failure_of, NativeClassifier};
use super::config::RunOptions;
use super::events::{deliver, open_batches, progress, summary, RunSummary};
use super::ffi::{FastCall, Source};
use super::run::{call_timed, finish, report_failure};
use super::values::Values;
use super::wait::{detached, slice_until, MonoClock};
use super::PyScheduler;
use crate::engine::{Clock, Config, Next, Scheduler, Streamed};

/// Most records the inline driver runs between looks at events, progress and signals.
const STREAM_LIMIT: usize = 256;

/// When the inline stream looks at the clock for a due progress report. A clock read costs
/// ~25 ns, a third of a trivial callback's whole cost through the engine, so it is read every
/// `stride` records: the stride doubles (up to `MAX_STRIDE`) while records come faster than one
/// millisecond a stride, and falls back to 1 as soon as they don't. A report is then late by
/// about a millisecond of records, or by at most `MAX_STRIDE` records when callbacks suddenly
/// slow down.
struct ProgressPacer {
    stride: u32,
    countdown: u32,
    last_read: f64,
}

impl ProgressPacer {
    const MAX_STRIDE: u32 = 256;
    const FAST: f64 = 0.001;

    fn new(now: f64) -> Self {
        Self { stride: 1, countdown: 1, last_read: now }
    }

    /// Is `due` still ahead? (true without reading the clock between strides)
    #[inline]
    fn before(&mut self, clock: &MonoClock, due: f64) -> bool {
        self.countdown -= 1;
        if self.countdown > 0 {
            return true;
        }
        let now = clock.now();
        self.stride = if now - self.last_read < Self::FAST { (self.stride * 2).min(Self::MAX_STRIDE) } else { 1 };
        self.countdown = self.stride;
        self.last_read = now;
        now < due
    }
}

pub(super) fn run_inline<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    func: &Bound<'py, PyAny>,
    config: Config,
    classifier: &NativeClassifier,
    sink: &Bound<'_, PyAny>,
    options: &RunOptions<'py>,
) -> PyResult<Bound<'py, RunSummary>> {
    let (timeout, interval) = (options.timeout, options.interval);
    let clock = MonoClock(Instant::now());
    let mut sched: PyScheduler = Scheduler::new(config, clock);
    let slow_call_s = sched.slow_call_s();
    let func = &FastCall::new(func);
    let mut results = Values::ordered(options.values_per_batch, options.batch_size, options.size_hint);
    let wants_progress = options.wants_progress;
    let mut next_progress = interval;
    let mut pacer = ProgressPacer::new(clock.now());
    let mut drive = || -> PyResult<()> {
        loop {
            // With an on_progress callback, the stream pauses once a report is due; without
            // one, it never looks at the clock.
            let due = next_progress;
            let streamed =
                sched.stream(STREAM_LIMIT, |index, record| match call_timed(func, record.bind(py), timeout) {
                    Ok(value) => {
                        results.store(index, value.unbind());
                        Ok(!wants_progress || pacer.before(&clock, due))
                    }
                    Err(err) => Err(failure_of(py, err, classifier, sink)),
                });
            match streamed {
                Streamed::Paused(0) => match sched.next_work() {
                    Next::Run(work) => {
                        // Timed only for a breaker that counts slow calls.
                        let started = slow_call_s.map(|_| Instant::now());
                        let outcome = call_timed(func, work.record.bind(py), timeout);
                        if started.is_some_and(|t| slow_call_s.is_some_and(|s| t.elapsed().as_secs_f64() > s)) {
                            sched.slow_call();
                        }
                        match outcome {
                            Ok(value) => {
                                results.store(work.index, value.unbind());
                                drop(sched.succeed(work));
                            }
                            Err(err) => {
                                let failure = failure_of(py, err, classifier, sink);
                                report_failure(py, &mut sched, work, failure)?;
                            }
                        }
                    }
                    Next::Feed => {
                        let batch = options.read(source, sched.next_batch_index())?;
                        drop(batch.add_to(&mut sched, options.batch_size));
                    }
                    Next::Wait(until) => detached(py, slice_until(&clock, until), |slice| {
                        if !slice.is_zero() {
                            std::thread::sleep(slice);
                        }
                    })?,
                    Next::Done => return Ok(()),
                },
                Streamed::Paused(_) => {}
                Streamed::Failed(work, failure) => report_failure(py, &mut sched, work, failure)?,
            }
            if sched.has_events() {
                let mut events = sched.take_events();
                results.attach(&mut events);
                // A snapshot goes with the events at every batch end, or (a display that draws
                // at its own pace) only once one is due.
                let due = wants_progress && (options.every_batch || clock.now() >= next_progress);
                let batches = open_batches(&sched, due);
                deliver(py, sink, events, &sched.counters(), batches.as_deref())?;
                if due || options.every_batch {
                    next_progress = clock.now() + interval;
                }
            } else if wants_progress && clock.now() >= next_progress {
                let batches = open_batches(&sched, true);
                progress(py, sink, &sched.counters(), batches.as_deref())?;
                next_progress = clock.now() + interval;
            }
            if sched.has_released() {
                drop(sched.take_released());
            }
        }
    };
    let outcome = drive();
    finish(py, &mut sched, sink, outcome, Vec::new(), &mut results)?;
    let count = sched.succeeded() as usize;
    summary(py, &sched, results.finish(py, count)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn fast_records_read_the_clock_rarely_and_slow_ones_every_time() {
        let clock = MonoClock(Instant::now());
        let mut pacer = ProgressPacer::new(clock.now());
        // A deadline already past: every clock read says so (false); between reads, true.
        let reads = (0..20_000).filter(|_| !pacer.before(&clock, -1.0)).count();
        assert!(reads < 20_000 / 16, "{reads} clock reads for 20k fast records");
        assert!(reads >= 20_000 / ProgressPacer::MAX_STRIDE as usize, "the stride is capped: {reads}");
        // Records slow down: the next read (within a stride) drops the stride to 1...
        std::thread::sleep(Duration::from_millis(2));
        let until_read = (0..=ProgressPacer::MAX_STRIDE).take_while(|_| pacer.before(&clock, -1.0)).count();
        assert!(until_read < ProgressPacer::MAX_STRIDE as usize);
        // ...and from then on every slow record reads the clock.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(!pacer.before(&clock, -1.0), "a slow record reads the clock each time");
        }
    }
}
