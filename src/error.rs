//! The crate's one error type, plain Rust. Python sees it as `batchguard.errors.ConfigError`
//! (converted in `bindings/exceptions.rs`, which imports the class from Python).

use std::fmt;

/// A configuration value the engine cannot run with. The message names the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

pub(crate) fn config_error<T>(message: impl Into<String>) -> Result<T> {
    Err(ConfigError(message.into()))
}
