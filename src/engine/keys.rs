//! Keyed ordering (`key_of`): records with the same key run one at a time, in input order.

use std::collections::{HashMap, VecDeque};

use super::Work;

/// The keys in progress, the records waiting for them, and the keys that could not be computed.
pub(super) struct Keys<T, E> {
    /// Keyed records whose turn came (their key's previous record is final).
    unblocked: VecDeque<Work<T, E>>,
    /// key -> records of that key waiting for the one in progress; present while active.
    active: HashMap<u64, VecDeque<Work<T, E>>>,
    /// Record index -> the error computing its key raised: that record is dead-lettered with
    /// it, never run.
    errors: HashMap<u64, E>,
}

impl<T, E> Keys<T, E> {
    pub(super) fn new() -> Self {
        Self { unblocked: VecDeque::new(), active: HashMap::new(), errors: HashMap::new() }
    }

    /// Computing the key of record `index` raised `error`.
    pub(super) fn key_failed(&mut self, index: u64, error: E) {
        self.errors.insert(index, error);
    }

    /// The error computing record `index`'s key raised, if it did.
    #[inline]
    pub(super) fn take_error(&mut self, index: u64) -> Option<E> {
        if self.errors.is_empty() {
            None
        } else {
            self.errors.remove(&index)
        }
    }

    /// Is a record with this key in progress?
    pub(super) fn is_active(&self, key: u64) -> bool {
        self.active.contains_key(&key)
    }

    /// A record of `key` starts.
    pub(super) fn activate(&mut self, key: u64) {
        self.active.insert(key, VecDeque::new());
    }

    /// Queue `work` behind the record of its (active) key in progress.
    pub(super) fn wait(&mut self, work: Work<T, E>) {
        let key = work.key.expect("keyed");
        self.active.get_mut(&key).expect("active").push_back(work);
    }

    /// A record of `key` is final: the next one of that key may run.
    pub(super) fn release(&mut self, key: u64) {
        let waiting = self.active.get_mut(&key).expect("a final record's key is active");
        match waiting.pop_front() {
            Some(next) => self.unblocked.push_back(next),
            None => {
                self.active.remove(&key);
            }
        }
    }

    pub(super) fn has_unblocked(&self) -> bool {
        !self.unblocked.is_empty()
    }

    pub(super) fn pop_unblocked(&mut self) -> Option<Work<T, E>> {
        self.unblocked.pop_front()
    }

    /// Records that wait for their key's turn, or whose turn came.
    pub(super) fn queued(&self) -> usize {
        self.unblocked.len() + self.active.values().map(VecDeque::len).sum::<usize>()
    }

    /// Every queued record, as pending work (end of run).
    pub(super) fn drain_into(&mut self, out: &mut Vec<Work<T, E>>) {
        out.extend(self.unblocked.drain(..));
        for (_, waiting) in std::mem::take(&mut self.active) {
            out.extend(waiting);
        }
    }

    pub(super) fn works(&self) -> impl Iterator<Item = &Work<T, E>> {
        self.unblocked.iter().chain(self.active.values().flatten())
    }

    pub(super) fn errors(&self) -> impl Iterator<Item = &E> {
        self.errors.values()
    }
}
