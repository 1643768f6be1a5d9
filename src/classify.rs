//! Exception -> [`ErrorClass`] (DESIGN §4), as plain Rust over type keys and strings.
//!
//! The bindings walk an exception type's MRO once per type and cache the result of
//! [`Rules::by_mro`]; status and message rules are per exception. The user's classifier
//! callable, which comes first, is called by the bindings.

use regex::Regex;

use crate::error::{config_error, Result};

/// What a failure means. The discriminants index per-class tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Transient = 0,
    Recoverable = 1,
    Permanent = 2,
    Fatal = 3,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] = [Self::Transient, Self::Recoverable, Self::Permanent, Self::Fatal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Recoverable => "recoverable",
            Self::Permanent => "permanent",
            Self::Fatal => "fatal",
        }
    }

    pub fn parse(value: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value).map_or_else(
            || config_error(format!("{value:?} is not an ErrorClass (transient, recoverable, permanent, fatal)")),
            Ok,
        )
    }

    pub fn retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Recoverable)
    }
}

/// 408, 425, 429 and 5xx are RECOVERABLE; every other 4xx is PERMANENT.
pub fn class_of_http_status(status: u16) -> Option<ErrorClass> {
    match status {
        408 | 425 | 429 | 500..=599 => Some(ErrorClass::Recoverable),
        400..=499 => Some(ErrorClass::Permanent),
        _ => None,
    }
}

/// The rule tables of one classifier. `K` identifies an exception type (a pointer in the
/// bindings, anything comparable in tests).
#[derive(Debug)]
pub struct Rules<K> {
    type_rules: Vec<(K, ErrorClass)>,
    name_rules: Vec<(String, ErrorClass)>,
    message_rules: Vec<(Regex, ErrorClass)>,
    default: ErrorClass,
    http_status: bool,
}

impl<K: PartialEq> Rules<K> {
    pub fn new(default: ErrorClass, http_status: bool) -> Self {
        Self { type_rules: Vec::new(), name_rules: Vec::new(), message_rules: Vec::new(), default, http_status }
    }

    pub fn with_type(mut self, key: K, class: ErrorClass) -> Self {
        self.type_rules.retain(|(k, _)| *k != key);
        self.type_rules.push((key, class));
        self
    }

    pub fn with_name(mut self, name: impl Into<String>, class: ErrorClass) -> Self {
        self.name_rules.push((name.into(), class));
        self
    }

    /// Message rules use the `regex` crate's syntax, which covers the common subset of
    /// Python's `re`; a pattern outside it is a configuration error, not a silent mismatch.
    pub fn with_message(mut self, pattern: &str, class: ErrorClass) -> Result<Self> {
        match Regex::new(pattern) {
            Ok(re) => {
                self.message_rules.push((re, class));
                Ok(self)
            }
            Err(err) => config_error(format!(
                "Classifier message rule {pattern:?} is not supported by the native engine's regex syntax: {err}"
            )),
        }
    }

    pub fn default_class(&self) -> ErrorClass {
        self.default
    }

    pub fn uses_http_status(&self) -> bool {
        self.http_status
    }

    pub fn has_message_rules(&self) -> bool {
        !self.message_rules.is_empty()
    }

    /// The most specific class in the MRO (most specific first) that has a rule.
    pub fn by_mro<'a>(&self, mro: impl IntoIterator<Item = (K, &'a str)>) -> Option<ErrorClass> {
        for (key, name) in mro {
            if let Some((_, class)) = self.type_rules.iter().find(|(k, _)| *k == key) {
                return Some(*class);
            }
            if let Some((_, class)) = self.name_rules.iter().find(|(n, _)| n == name) {
                return Some(*class);
            }
        }
        None
    }

    pub fn by_status(&self, status: Option<u16>) -> Option<ErrorClass> {
        if !self.http_status {
            return None;
        }
        status.and_then(class_of_http_status)
    }

    pub fn by_message(&self, message: &str) -> Option<ErrorClass> {
        self.message_rules.iter().find(|(re, _)| re.is_match(message)).map(|(_, c)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules<&'static str> {
        Rules::new(ErrorClass::Permanent, true)
            .with_type("ConnectionError", ErrorClass::Recoverable)
            .with_type("ValueError", ErrorClass::Permanent)
            .with_type("MemoryError", ErrorClass::Fatal)
            .with_name("IntegrityError", ErrorClass::Permanent)
    }

    #[test]
    fn the_most_specific_rule_in_the_mro_wins() {
        let r = rules().with_type("ConnectionRefusedError", ErrorClass::Transient);
        let mro = [
            ("ConnectionRefusedError", "ConnectionRefusedError"),
            ("ConnectionError", "ConnectionError"),
            ("OSError", "OSError"),
        ];
        assert_eq!(r.by_mro(mro), Some(ErrorClass::Transient));
        assert_eq!(rules().by_mro(mro), Some(ErrorClass::Recoverable));
    }

    #[test]
    fn integrity_errors_match_by_name_whatever_the_driver() {
        let mro = [("psycopg.IntegrityError", "IntegrityError"), ("psycopg.DatabaseError", "DatabaseError")];
        assert_eq!(rules().by_mro(mro), Some(ErrorClass::Permanent));
    }

    #[test]
    fn unknown_types_fall_through() {
        assert_eq!(rules().by_mro([("RuntimeError", "RuntimeError")]), None);
    }

    #[test]
    fn http_statuses_follow_the_contract() {
        for status in [408, 425, 429, 500, 503, 599] {
            assert_eq!(class_of_http_status(status), Some(ErrorClass::Recoverable), "{status}");
        }
        for status in [400, 401, 404, 422] {
            assert_eq!(class_of_http_status(status), Some(ErrorClass::Permanent), "{status}");
        }
        assert_eq!(class_of_http_status(302), None);
        assert_eq!(Rules::<u8>::new(ErrorClass::Permanent, false).by_status(Some(503)), None);
    }

    #[test]
    fn message_rules_apply_in_order() {
        let r = rules()
            .with_message("(?i)deadlock", ErrorClass::Transient)
            .unwrap()
            .with_message("lock", ErrorClass::Fatal)
            .unwrap();
        assert_eq!(r.by_message("DEADLOCK detected"), Some(ErrorClass::Transient));
        assert_eq!(r.by_message("lock wait timeout"), Some(ErrorClass::Fatal));
        assert_eq!(r.by_message("fine"), None);
    }

    #[test]
    fn unsupported_regex_is_a_config_error() {
        let err = rules().with_message("(?<=x)y", ErrorClass::Fatal).unwrap_err();
        assert!(err.0.contains("(?<=x)y"));
    }

    #[test]
    fn classes_round_trip_through_their_names() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(class.as_str()).unwrap(), class);
        }
        assert!(ErrorClass::parse("sometimes").is_err());
    }
}
