//! The places where the engine talks to CPython directly instead of through PyO3's generic
//! paths: three because they run once per record (calling the user's callable, reading the
//! input, building the list of results) and one PyO3 has no safe call for (dropping a
//! traceback). Each `unsafe` block states its invariant.

// The crate denies `unsafe` (lib.rs); this module is the one place it is allowed, so every
// raw CPython call can be reviewed in one file.
#![allow(unsafe_code)]

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyTuple};

/// The user's callable with its vectorcall slot looked up once: a call is then one indirect
/// jump with the argument on the stack, no tuple and no per-call slot lookup.
pub struct FastCall<'py> {
    func: Bound<'py, PyAny>,
    vectorcall: Option<ffi::vectorcallfunc>,
}

impl<'py> FastCall<'py> {
    pub fn new(func: &Bound<'py, PyAny>) -> Self {
        // SAFETY: `func` is a live object; PyVectorcall_Function only reads its type slots.
        let vectorcall = unsafe { ffi::PyVectorcall_Function(func.as_ptr()) };
        Self { func: func.clone(), vectorcall }
    }

    #[inline]
    pub fn call(&self, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.func.py();
        // SAFETY: the GIL is held (we have `py`); `args[1]` is a borrowed live reference and
        // `args[0]` is the scratch slot PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee use
        // (bound methods put `self` there instead of allocating). The result is a new
        // reference or NULL with an exception set, which from_owned_ptr_or_err turns into Err.
        unsafe {
            let mut args = [std::ptr::null_mut(), arg.as_ptr()];
            let result = match self.vectorcall {
                Some(vectorcall) => vectorcall(
                    self.func.as_ptr(),
                    args.as_mut_ptr().add(1),
                    1 | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                    std::ptr::null_mut(),
                ),
                None => ffi::PyObject_CallOneArg(self.func.as_ptr(), arg.as_ptr()),
            };
            Bound::from_owned_ptr_or_err(py, result)
        }
    }
}

/// Where records come from: lists and tuples are read by position (the common case, and
/// the cheapest), anything else through its iterator.
pub enum Source<'py> {
    List { list: Bound<'py, PyList>, pos: usize },
    Tuple { tuple: Bound<'py, PyTuple>, pos: usize },
    Iter(Bound<'py, PyIterator>),
}

impl<'py> Source<'py> {
    pub fn new(records: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(list) = records.cast_exact::<PyList>() {
            return Ok(Self::List { list: list.clone(), pos: 0 });
        }
        if let Ok(tuple) = records.cast_exact::<PyTuple>() {
            return Ok(Self::Tuple { tuple: tuple.clone(), pos: 0 });
        }
        Ok(Self::Iter(records.try_iter()?))
    }

    /// Up to `size` more records (fewer only at the end of the input).
    pub fn read(&mut self, size: usize) -> PyResult<Vec<Py<PyAny>>> {
        match self {
            Self::List { list, pos } => {
                // A list can change while the run goes on (the callback may append to it);
                // like a list iterator, read up to its length as it is now.
                let end = list.len().min(pos.saturating_add(size));
                let mut batch = Vec::with_capacity(end.saturating_sub(*pos));
                for i in *pos..end {
                    // SAFETY: i < len(list) under the GIL, so the slot holds a live object;
                    // the borrowed reference is immediately made owned.
                    let item = unsafe { ffi::PyList_GET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t) };
                    batch.push(unsafe { Bound::from_borrowed_ptr(list.py(), item) }.unbind());
                }
                *pos = end.max(*pos);
                Ok(batch)
            }
            Self::Tuple { tuple, pos } => {
                let end = tuple.len().min(pos.saturating_add(size));
                let batch = (*pos..end).map(|i| tuple.get_borrowed_item(i).map(|b| b.to_owned().unbind())).collect();
                *pos = end;
                batch
            }
            Self::Iter(iter) => {
                // The batch size is the user's; memory is reserved for what actually arrives.
                let mut batch = Vec::with_capacity(size.min(4096));
                for item in iter.clone().take(size) {
                    batch.push(item?.unbind());
                }
                Ok(batch)
            }
        }
    }
}

/// A list of exactly `len` items, filled in place from `items` (which must yield `len`).
pub fn list_of<'py>(
    py: Python<'py>,
    items: impl Iterator<Item = Py<PyAny>>,
    len: usize,
) -> PyResult<Bound<'py, PyList>> {
    // SAFETY: PyList_New(len) returns a new list whose `len` slots are NULL (or NULL + error).
    let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len as ffi::Py_ssize_t))? };
    let mut filled = 0;
    for item in items.take(len) {
        // SAFETY: `filled < len`, the slot is still NULL, and SET_ITEM steals the reference
        // that `into_ptr` gives up.
        unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), filled as ffi::Py_ssize_t, item.into_ptr()) };
        filled += 1;
    }
    if filled != len {
        // The unfilled slots are NULL, which the list's deallocator tolerates.
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "batchguard: {filled} results where {len} were counted; please report this"
        )));
    }
    Ok(list.cast_into::<PyList>()?)
}

/// Successful values in input order, at the cost of a `Vec::push` each.
///
/// At concurrency 1 values arrive in input order except for retried records. So values are
/// pushed as they come, `jumps` remembers the few places where record indices skip
/// (failures), and `late` holds values that arrived after a later record's; `finish` merges
/// them in. Memory beyond the values is proportional to the failures, not to the input.
pub struct OrderedResults {
    values: Vec<Py<PyAny>>,
    expected: u64,
    /// (position in `values`, record index) wherever the index is not the previous one + 1.
    jumps: Vec<(usize, u64)>,
    late: Vec<(u64, Py<PyAny>)>,
}

impl OrderedResults {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { values: Vec::with_capacity(capacity), expected: 0, jumps: Vec::new(), late: Vec::new() }
    }

    #[inline(always)]
    pub fn push(&mut self, index: u64, value: Py<PyAny>) {
        if index < self.expected {
            self.late.push((index, value));
            return;
        }
        if index != self.expected {
            self.jumps.push((self.values.len(), index));
        }
        self.expected = index + 1;
        self.values.push(value);
    }

    /// The values in input order, as the list `run_batches` returns.
    pub fn finish(self, py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        if self.late.is_empty() {
            let len = self.values.len();
            return list_of(py, self.values.into_iter(), len);
        }
        let mut all: Vec<(u64, Py<PyAny>)> = Vec::with_capacity(self.values.len() + self.late.len());
        let mut jumps = self.jumps.iter().peekable();
        let mut index = 0;
        for (position, value) in self.values.into_iter().enumerate() {
            if let Some(&(_, jumped_to)) = jumps.next_if(|(at, _)| *at == position) {
                index = jumped_to;
            }
            all.push((index, value));
            index += 1;
        }
        all.extend(self.late);
        all.sort_unstable_by_key(|(index, _)| *index);
        let len = all.len();
        list_of(py, all.into_iter().map(|(_, value)| value), len)
    }
}

/// Drop an exception's traceback (and the frames it keeps alive): a failure-heavy run keeps
/// only the first `traceback_limit` dead records' tracebacks.
pub fn strip_traceback(exc: &Bound<'_, PyAny>) {
    // SAFETY: `exc` is a live exception instance (it came out of a PyErr) and None is a valid
    // traceback value; PyException_SetTraceback takes new references itself.
    unsafe {
        pyo3::ffi::PyException_SetTraceback(exc.as_ptr(), pyo3::ffi::Py_None());
    }
}
