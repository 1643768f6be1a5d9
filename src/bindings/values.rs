//! Where a run's successful values wait before they reach Python: all of them until the run
//! ends, for the list `run_batches` returns (`results="keep"`, the default), or each batch's
//! only until that batch's end is handed to the recorder (`EngineConfig.values_per_batch`: a
//! results sink, `"drop"`, `iter_batches`), so that a run's memory does not grow with its input.
//!
//! Each driver keeps one [`Values`] and calls [`Values::store`] per success; the per-batch
//! variant costs a run that keeps its values nothing but the variant's (always taken) branch.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::ffi::{list_of, OrderedResults};
use super::Obj;
use crate::engine::Event;

/// A run's successful values (see the module doc).
pub(super) enum Values {
    /// By record index, since workers finish out of order (the threaded and async drivers).
    Indexed(Vec<Option<Obj>>),
    /// In arrival order, which at concurrency 1 is input order but for retried records (the
    /// inline driver).
    Ordered(OrderedResults),
    /// Each open batch's values, handed over with the batch's end.
    PerBatch(PerBatch),
}

impl Values {
    /// For a driver whose successes arrive out of order; `size_hint`: the input's length.
    pub(super) fn indexed(per_batch: bool, batch_size: usize, size_hint: Option<usize>) -> Self {
        if per_batch {
            Self::PerBatch(PerBatch::new(batch_size))
        } else {
            Self::Indexed(Vec::with_capacity(size_hint.unwrap_or(0).min(1 << 28)))
        }
    }

    /// For the inline driver, whose successes arrive nearly in input order.
    pub(super) fn ordered(per_batch: bool, batch_size: usize, size_hint: Option<usize>) -> Self {
        if per_batch {
            Self::PerBatch(PerBatch::new(batch_size))
        } else {
            Self::Ordered(OrderedResults::with_capacity(size_hint.unwrap_or(0).min(1 << 28)))
        }
    }

    /// Record `index` succeeded with `value`.
    #[inline(always)]
    pub(super) fn store(&mut self, index: u64, value: Obj) {
        match self {
            Self::Indexed(slots) => slots[index as usize] = Some(value),
            Self::Ordered(ordered) => ordered.push(index, value),
            Self::PerBatch(open) => open.store(index, value),
        }
    }

    /// The records before `records_read` have been read: an indexed store makes room for them.
    pub(super) fn read_to(&mut self, records_read: u64) {
        if let Self::Indexed(slots) = self {
            slots.resize_with(records_read as usize, || None);
        }
    }

    /// Hand each finished batch among `events` its values (per batch only; a run that keeps
    /// its values hands them over at its end, in [`Values::finish`]).
    pub(super) fn attach<E>(&mut self, events: &mut [Event<Obj, E>]) {
        if let Self::PerBatch(open) = self {
            for event in events {
                // An event handed over before (and interrupted) has its values already.
                if let Event::Batch(done @ crate::engine::BatchDone { values: None, .. }) = event {
                    done.values = Some(open.take(done.index));
                }
            }
        }
    }

    /// The values kept, in input order: the list `run_batches` returns as
    /// `report.successful` (empty when they went out per batch). `count`: the successes.
    pub(super) fn finish(self, py: Python<'_>, count: usize) -> PyResult<Bound<'_, PyList>> {
        match self {
            Self::Indexed(slots) => list_of(py, slots.into_iter().flatten(), count),
            Self::Ordered(ordered) => ordered.finish(py),
            Self::PerBatch(_) => Ok(PyList::empty(py)),
        }
    }

    /// Every value held, for a garbage collector's traversal.
    pub(super) fn visit<X>(&self, mut visit: impl FnMut(&Obj) -> Result<(), X>) -> Result<(), X> {
        match self {
            Self::Indexed(slots) => slots.iter().flatten().try_for_each(visit),
            // Only the inline driver orders, and it is no Python object: nothing traverses it.
            Self::Ordered(_) => Ok(()),
            Self::PerBatch(open) => open.batches.values().flatten().try_for_each(|(_, value)| visit(value)),
        }
    }

    /// Let every value go (a garbage collector breaking a cycle).
    pub(super) fn clear(&mut self) {
        match self {
            Self::Indexed(slots) => slots.clear(),
            Self::Ordered(ordered) => *ordered = OrderedResults::with_capacity(0),
            Self::PerBatch(open) => open.batches.clear(),
        }
    }
}

/// The values of the open batches, by batch. Every batch but the last holds `batch_size`
/// records (`RunOptions::read`), skipped ones included, so record `i` is in batch
/// `i / batch_size`; only batches with a success so far have an entry, and a batch's entry
/// leaves with its end, so this holds no more than the open batches' values.
pub(super) struct PerBatch {
    batch_size: u64,
    batches: HashMap<u64, Vec<(u64, Obj)>, BuildHasherDefault<BatchHasher>>,
}

impl PerBatch {
    fn new(batch_size: usize) -> Self {
        Self { batch_size: batch_size as u64, batches: HashMap::default() }
    }

    #[inline]
    fn store(&mut self, index: u64, value: Obj) {
        self.batches.entry(index / self.batch_size).or_default().push((index, value));
    }

    /// Batch `batch`'s values, in record order (retried records arrive late), leaving none.
    fn take(&mut self, batch: u64) -> Vec<(u64, Obj)> {
        let mut values = self.batches.remove(&batch).unwrap_or_default();
        if !values.is_sorted_by_key(|(index, _)| *index) {
            values.sort_unstable_by_key(|(index, _)| *index);
        }
        values
    }
}

/// Batch indices are small consecutive integers: a multiplicative hash spreads them over the
/// table for a few cycles, where the default SipHash would cost more than the store itself.
#[derive(Default)]
pub(super) struct BatchHasher(u64);

impl Hasher for BatchHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BatchDone;

    fn done(index: u64) -> Event<Obj, Obj> {
        Event::Batch(BatchDone {
            index,
            size: 0,
            succeeded: 0,
            failed: 0,
            retries: 0,
            duration: 0.0,
            pending: 0,
            dead: Vec::new(),
            values: None,
        })
    }

    fn indices(event: &Event<Obj, Obj>) -> Vec<u64> {
        match event {
            Event::Batch(b) => b.values.as_ref().expect("values attached").iter().map(|(i, _)| *i).collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn per_batch_values_leave_with_their_batch_in_record_order() {
        Python::initialize();
        Python::attach(|py| {
            let mut values = Values::indexed(true, 3, None);
            // Batch 0 is records 0..3, batch 1 records 3..6; record 1 is a late retry.
            for index in [0, 2, 3, 1, 5] {
                values.store(index, py.None());
            }
            let mut events = vec![done(1)];
            values.attach(&mut events);
            assert_eq!(indices(&events[0]), vec![3, 5]);
            let Values::PerBatch(open) = &values else { unreachable!() };
            assert_eq!(open.batches.len(), 1, "only batch 0 is still held");
            let mut events = vec![done(0), done(7)];
            values.attach(&mut events);
            assert_eq!(indices(&events[0]), vec![0, 1, 2]);
            assert!(indices(&events[1]).is_empty(), "a batch without successes gets an empty list");
            let Values::PerBatch(open) = &values else { unreachable!() };
            assert!(open.batches.is_empty());
            assert_eq!(values.finish(py, 5).unwrap().len(), 0);
        });
    }

    #[test]
    fn kept_values_are_not_attached_to_batches() {
        Python::initialize();
        Python::attach(|py| {
            let mut values = Values::indexed(false, 3, None);
            values.read_to(2);
            values.store(1, py.None());
            values.store(0, py.None());
            let mut events = vec![done(0)];
            values.attach(&mut events);
            assert!(matches!(&events[0], Event::Batch(b) if b.values.is_none()));
            assert_eq!(values.finish(py, 2).unwrap().len(), 2);
        });
    }
}
