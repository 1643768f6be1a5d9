//! Bulk mode on the threaded driver: a sync fn that takes a list of records (`bulk=True`)
//! runs on the same worker threads as a per-record fn, one group (a batch, or a retry) per
//! call, instead of going through asyncio.
//!
//! The semantics are `batchguard._async._bisect`'s: a group runs in one call; when the call
//! raises, its halves run, and so on, until each failing record stands alone and is
//! classified by itself (about 2·k·log2(n) + 1 calls for k bad records in n). A call that
//! returns anything but a list or tuple with one result per record fails every record of the
//! group with `batchguard.errors.BulkResultError`. Once the run is stopping, no new call
//! starts: the rest of the group stays pending.
//!
//! With a breaker that counts slow calls (`slow_call_s`), each call is timed, and each record
//! whose outcome a call decides (its value, or its failure once it stands alone) is a slow call
//! when that call took longer than `slow_call_s`: a failed call's time is not held against the
//! halves that run after it.

use std::time::Instant;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::classify::failure_of;
use super::exceptions::BulkResultError;
use super::ffi::{strip_traceback, FastCall};
use super::run::call_timed;
use super::threaded::{handed_back, park, park_for_input, pass_on_wake, stop_with, store, WorkerContext};
use super::PyWork;
use crate::engine::{Next, NextGroup};

/// One worker of a bulk run: takes groups of up to `limit` records until the run is done.
pub(super) fn worker_loop(py: Python<'_>, ctx: &WorkerContext, limit: usize) -> PyResult<()> {
    let shared = &*ctx.shared;
    let func = &FastCall::new(ctx.func.bind(py));
    // A breaker that counts slow calls (`slow_call_s`): each call is timed only then.
    let slow_call_s = shared.state.lock().sched.slow_call_s();
    loop {
        let mut st = shared.state.lock();
        let group = match st.sched.next_group(limit) {
            NextGroup::Run(group) => {
                ctx.holding.set(group.len());
                st.input_asked = false;
                pass_on_wake(shared, &mut st);
                group
            }
            NextGroup::Other(Next::Done) => return Ok(()),
            NextGroup::Other(Next::Feed) => {
                // At concurrency 1 the coordinator reads only when asked (threaded.rs).
                park_for_input(py, shared, st, &ctx.clock)?;
                continue;
            }
            NextGroup::Other(Next::Wait(until)) => {
                let seen = st.version;
                park(py, shared, st, seen, until, &ctx.clock)?;
                continue;
            }
            NextGroup::Other(Next::Run(_)) => unreachable!("next_group hands work out as a group"),
        };
        drop(st);
        if let Err(stop) = bisect(py, ctx, func, slow_call_s, group) {
            // A KeyboardInterrupt (any BaseException that is not an Exception): the group's
            // unfinished records are pending, and the run stops and re-raises it.
            let mut st = shared.state.lock();
            let surplus = stop_with(&mut st, stop);
            handed_back(shared, st);
            drop(surplus);
        }
    }
}

/// Run `group` in one call, bisecting on failure. Every record of the group is handed back
/// to the scheduler before this returns; `Err` is an interrupt that stops the run.
fn bisect(
    py: Python<'_>,
    ctx: &WorkerContext,
    func: &FastCall<'_>,
    slow_call_s: Option<f64>,
    group: Vec<PyWork>,
) -> PyResult<()> {
    let records = PyList::new(py, group.iter().map(|work| work.record.bind(py)))?;
    let started = slow_call_s.map(|_| Instant::now());
    let called = call_timed(func, records.as_any(), ctx.timeout);
    let slow = started.is_some_and(|at| slow_call_s.is_some_and(|limit| at.elapsed().as_secs_f64() > limit));
    let err = match called {
        Ok(values) => return hand_back_values(py, ctx, group, &values, slow),
        Err(err) => err,
    };
    if !err.is_instance_of::<PyException>(py) {
        abandon(ctx, group);
        return Err(err);
    }
    if group.len() == 1 {
        return fail_each(py, ctx, group, err.into_value(py).into_bound(py).as_any(), slow);
    }
    if stopping(ctx) {
        abandon(ctx, group);
        return Ok(());
    }
    let mut first = group;
    let second = first.split_off(first.len() / 2);
    if let Err(stop) = bisect(py, ctx, func, slow_call_s, first) {
        abandon(ctx, second); // never started: pending, not in flight
        return Err(stop);
    }
    if stopping(ctx) {
        abandon(ctx, second);
        return Ok(());
    }
    bisect(py, ctx, func, slow_call_s, second)
}

/// The call returned (`slow`: past `slow_call_s`): one value per record, in order, or every
/// record fails with `BulkResultError`.
fn hand_back_values(
    py: Python<'_>,
    ctx: &WorkerContext,
    group: Vec<PyWork>,
    returned: &Bound<'_, PyAny>,
    slow: bool,
) -> PyResult<()> {
    let len = if let Ok(list) = returned.cast::<PyList>() {
        Some(list.len())
    } else {
        returned.cast::<PyTuple>().ok().map(PyTupleMethods::len)
    };
    if len != Some(group.len()) {
        let got = match len {
            Some(len) => format!("{len} results"),
            None => returned.get_type().name()?.to_string(),
        };
        let error = BulkResultError::new_err(format!(
            "the bulk fn returned {got} for {} records; it must return a list with one result per record, in order",
            group.len()
        ));
        return fail_each(py, ctx, group, error.into_value(py).into_bound(py).as_any(), slow);
    }
    let values = returned.try_iter()?.collect::<PyResult<Vec<_>>>()?;
    let shared = &*ctx.shared;
    let mut st = shared.state.lock();
    let mut done = Vec::with_capacity(group.len());
    ctx.holding.set(ctx.holding.get() - group.len());
    for (work, value) in group.into_iter().zip(values) {
        store(&mut st.results, work.index, value.unbind());
        if slow {
            // Each record of a slow call is a slow call of the breaker's window.
            st.sched.slow_call();
        }
        done.push(st.sched.succeed(work));
    }
    handed_back(shared, st);
    drop(done);
    Ok(())
}

/// Every record of `group` failed with `error` in one call (`slow`: past `slow_call_s`): each
/// is classified and handed back (retried or dead-lettered) on its own, as `AsyncRun.fail` does
/// for each. A classifier interrupted by a KeyboardInterrupt stops the run: that record and the
/// rest of the group are pending.
fn fail_each(
    py: Python<'_>,
    ctx: &WorkerContext,
    group: Vec<PyWork>,
    error: &Bound<'_, PyAny>,
    slow: bool,
) -> PyResult<()> {
    let sink = ctx.sink.bind(py);
    let mut group = group.into_iter();
    while let Some(work) = group.next() {
        let failure = failure_of(py, PyErr::from_value(error.clone()), &ctx.classifier, sink);
        let shared = &*ctx.shared;
        let mut st = shared.state.lock();
        ctx.holding.set(ctx.holding.get() - 1);
        if failure.interrupted {
            st.sched.abandon(work);
            drop(st);
            abandon(ctx, group.collect());
            return Err(PyErr::from_value(failure.error.into_bound(py)));
        }
        let keep_traceback = st.sched.keep_tracebacks();
        if !keep_traceback {
            // Stripped outside the lock: freeing frames may run `__del__`.
            drop(st);
            strip_traceback(failure.error.bind(py));
            st = shared.state.lock();
        }
        if slow {
            st.sched.slow_call();
        }
        st.sched.fail(work, failure.class, failure.error, failure.retry_after, failure.wall);
        handed_back(shared, st);
    }
    Ok(())
}

/// Records that never ran (or whose call was interrupted) stay pending.
fn abandon(ctx: &WorkerContext, group: Vec<PyWork>) {
    if group.is_empty() {
        return;
    }
    let shared = &*ctx.shared;
    let mut st = shared.state.lock();
    ctx.holding.set(ctx.holding.get() - group.len());
    for work in group {
        st.sched.abandon(work);
    }
    handed_back(shared, st);
}

fn stopping(ctx: &WorkerContext) -> bool {
    ctx.shared.state.lock().sched.stop_reason().is_some()
}
