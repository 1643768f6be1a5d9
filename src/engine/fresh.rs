//! Fresh records: the input read so far, and the records of it that have not started yet.

use std::collections::VecDeque;

use super::Work;

/// The read cursor and the queue of records read but never started, in input order.
pub(super) struct Fresh<T> {
    /// Records read but never started, in input order; the first has index `index`.
    records: VecDeque<T>,
    index: u64,
    /// (batch, first index, first index past it) of the batches that still have fresh
    /// records; skipped batches leave gaps between them.
    batches: VecDeque<(u64, u64, u64)>,
    /// Ordering keys of the fresh records, parallel to `records` (empty when no record has a
    /// key; shorter when unkeyed records came last).
    keys: VecDeque<Option<u64>>,
    /// The index the next record read gets: records read so far, skipped ones included.
    next_index: u64,
    /// The index the next batch read gets.
    next_batch: u64,
    skipped: u64,
    exhausted: bool,
}

impl<T> Fresh<T> {
    pub(super) fn new() -> Self {
        Self {
            records: VecDeque::new(),
            index: 0,
            batches: VecDeque::new(),
            keys: VecDeque::new(),
            next_index: 0,
            next_batch: 0,
            skipped: 0,
            exhausted: false,
        }
    }

    /// Queue one batch of records; returns the batch's index.
    pub(super) fn push(&mut self, records: impl ExactSizeIterator<Item = T>) -> u64 {
        let batch = self.next_batch;
        self.next_batch += 1;
        let size = records.len() as u64;
        if self.records.is_empty() {
            self.index = self.next_index;
        }
        self.records.extend(records);
        let start = self.next_index;
        self.next_index += size;
        self.batches.push_back((batch, start, self.next_index));
        batch
    }

    /// The ordering keys of the records the next [`push`](Self::push) queues, in order.
    pub(super) fn push_keys(&mut self, keys: impl IntoIterator<Item = Option<u64>>) {
        // Keep `keys` parallel to `records` (earlier unkeyed records get None).
        let missing = self.records.len() - self.keys.len();
        self.keys.extend(std::iter::repeat_n(None, missing));
        self.keys.extend(keys);
    }

    /// The next batch of input was finished by an earlier run (a resumed job): account for
    /// its `size` records' indices without queueing them.
    pub(super) fn skip(&mut self, size: usize) {
        self.next_batch += 1;
        self.next_index += size as u64;
        self.skipped += size as u64;
    }

    pub(super) fn end_of_input(&mut self) {
        self.exhausted = true;
    }

    /// Is more input wanted, with `concurrency` workers to keep busy?
    pub(super) fn wants_input(&self, concurrency: usize) -> bool {
        !self.exhausted && self.records.len() < concurrency
    }

    /// Take the next fresh record as its first attempt.
    #[inline]
    pub(super) fn pop<E>(&mut self) -> Option<Work<T, E>> {
        let record = self.records.pop_front()?;
        let index = self.index;
        self.index += 1;
        let &(batch, _, end) = self.batches.front().expect("fresh records belong to a batch");
        if self.index == end {
            self.next_batch_front();
        }
        let key = if self.keys.is_empty() { None } else { self.keys.pop_front().flatten() };
        Some(Work { index, batch, attempt: 1, generation: 0, call: 0, record, key, retry: None })
    }

    /// Hand the front batch's records to `call` in input order, up to `limit` of them, until
    /// one fails (it stays queued) or `call` asks for a pause. Returns how many succeeded (they
    /// are gone) and the failure. The caller checked that a batch has fresh records.
    #[inline]
    pub(super) fn stream<X>(
        &mut self,
        limit: usize,
        mut call: impl FnMut(u64, &T) -> Result<bool, X>,
    ) -> (usize, Option<X>) {
        let &(_, _, end) = self.batches.front().expect("a batch has fresh records");
        let run = (end - self.index).min(limit as u64) as usize;
        let mut done = 0;
        let mut failure = None;
        let first = self.index;
        while done < run {
            let record = self.records.pop_front().expect("counted above");
            match call(first + done as u64, &record) {
                Ok(true) => done += 1,
                Ok(false) => {
                    done += 1;
                    break;
                }
                Err(f) => {
                    self.records.push_front(record);
                    failure = Some(f);
                    break;
                }
            }
        }
        if done > 0 {
            self.index += done as u64;
            if self.index == end {
                self.next_batch_front();
            }
        }
        (done, failure)
    }

    /// The front batch is used up: move the cursor to the next one (past any gap).
    fn next_batch_front(&mut self) {
        self.batches.pop_front();
        if let Some(&(_, start, _)) = self.batches.front() {
            self.index = start;
        }
    }

    /// Every queued record, as pending work (end of run).
    pub(super) fn drain_into<E>(&mut self, out: &mut Vec<Work<T, E>>) {
        while let Some(work) = self.pop() {
            out.push(work);
        }
        self.keys.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// The index of the next fresh record.
    pub(super) fn head_index(&self) -> u64 {
        self.index
    }

    /// The index of the first record never started: every record read before it has started.
    pub(super) fn cursor(&self) -> u64 {
        if self.records.is_empty() {
            self.next_index
        } else {
            self.index
        }
    }

    /// The ordering key of the next fresh record, if it has one.
    pub(super) fn head_key(&self) -> Option<u64> {
        self.keys.front().copied().flatten()
    }

    /// The batch of the next fresh record.
    pub(super) fn head_batch(&self) -> Option<u64> {
        self.batches.front().map(|&(batch, _, _)| batch)
    }

    /// Do any queued records carry ordering keys?
    pub(super) fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &T> {
        self.records.iter()
    }

    pub(super) fn records_read(&self) -> u64 {
        self.next_index
    }

    pub(super) fn next_batch_index(&self) -> u64 {
        self.next_batch
    }

    pub(super) fn skipped_records(&self) -> u64 {
        self.skipped
    }

    pub(super) fn exhausted(&self) -> bool {
        self.exhausted
    }
}
