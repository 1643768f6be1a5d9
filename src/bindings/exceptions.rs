//! The Python exceptions the engine raises that are batchguard's own: declared once, in
//! `batchguard.errors`, and imported here (as cryptography does), so an `except` clause
//! catches the same class whichever engine raised it. Standard exceptions (`RuntimeError` for
//! a batchguard bug, `TimeoutError` for a late attempt, `OverflowError`, `TypeError`) stay
//! standard.

use pyo3::PyErr;

pyo3::import_exception!(batchguard.errors, ConfigError);
pyo3::import_exception!(batchguard.errors, BulkResultError);

/// A value the engine cannot run with, as `batchguard.errors.ConfigError`.
impl From<crate::error::ConfigError> for PyErr {
    fn from(err: crate::error::ConfigError) -> PyErr {
        ConfigError::new_err(err.0)
    }
}
