//! Exception -> [`ErrorClass`] (DESIGN §4), as plain Rust over type keys and strings.
//!
//! The bindings walk an exception type's MRO once per type and cache the result of
//! [`Rules::by_mro`]; inspectors (only a few types have one) and status rules are per
//! exception. The user's classifier callable, which comes first, and the message rules, which
//! come last, are run by the bindings in Python (message rules with Python's `re`, so both
//! engines agree on every pattern).

use std::collections::HashMap;

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

/// A failure as the scheduler takes it: its class, and the index of the retry policy that
/// governs it (0: the run's default policy; see [`PolicyKeys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub class: ErrorClass,
    pub policy: u16,
}

impl Verdict {
    pub fn retryable(self) -> bool {
        self.class.retryable()
    }
}

impl From<ErrorClass> for Verdict {
    /// A failure under the default policy.
    fn from(class: ErrorClass) -> Self {
        Self { class, policy: 0 }
    }
}

/// Which retry policy a failure is under, from the keys of `RetryPolicies.by_error` that need
/// no Python call: exception types (the most specific in the MRO wins, cached per type with
/// the classification, [`TypeVerdict::policy`]) and error classes. Predicates, which come
/// first, are called by the bindings. Index 0 is the default policy.
#[derive(Debug)]
pub struct PolicyKeys<K> {
    types: Vec<(K, u16)>,
    classes: [Option<u16>; 4],
}

impl<K: PartialEq> Default for PolicyKeys<K> {
    fn default() -> Self {
        Self { types: Vec::new(), classes: [None; 4] }
    }
}

impl<K: PartialEq> PolicyKeys<K> {
    pub fn with_type(mut self, key: K, policy: u16) -> Self {
        self.types.push((key, policy));
        self
    }

    pub fn with_class(mut self, class: ErrorClass, policy: u16) -> Self {
        self.classes[class as usize] = Some(policy);
        self
    }

    /// No type or class key (a run with one policy, or predicates only).
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.classes.iter().all(Option::is_none)
    }

    /// The policy of the first class of an MRO (most specific first) that is a type key.
    pub fn by_mro(&self, mro: impl IntoIterator<Item = K>) -> Option<u16> {
        if self.types.is_empty() {
            return None;
        }
        mro.into_iter().find_map(|key| self.types.iter().find(|(k, _)| *k == key).map(|(_, p)| *p))
    }

    /// A failure's policy once no predicate matched: its type's (`by_type`, cached), else its
    /// class's, else the default (0).
    pub fn resolve(&self, by_type: Option<u16>, class: ErrorClass) -> u16 {
        by_type.or(self.classes[class as usize]).unwrap_or(0)
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

/// An instance-level rule: for a few types the meaning is in the instance (an AWS error code,
/// a gRPC status, the driver error an SQLAlchemy wrapper holds, a certificate that did not
/// verify). The bindings read the instance; the knowledge is in [`ClientTables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inspector {
    AwsErrorCode,
    GrpcStatus,
    WrappedDbapiError,
    TlsVerification,
}

impl Inspector {
    pub const ALL: [Inspector; 4] =
        [Self::AwsErrorCode, Self::GrpcStatus, Self::WrappedDbapiError, Self::TlsVerification];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsErrorCode => "aws_error_code",
            Self::GrpcStatus => "grpc_status",
            Self::WrappedDbapiError => "wrapped_dbapi_error",
            Self::TlsVerification => "tls_verification",
        }
    }

    pub fn parse(value: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == value).map_or_else(
            || config_error(format!("{value:?} is not an inspector (aws_error_code, grpc_status, wrapped_dbapi_error, tls_verification)")),
            Ok,
        )
    }
}

/// What an exception type resolves to (cached per type): the inspectors to ask an instance,
/// in MRO order (empty for nearly every type), then the class its type and name rules give,
/// and the retry policy its type keys give ([`PolicyKeys::by_mro`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeVerdict {
    pub inspectors: Vec<Inspector>,
    pub class: Option<ErrorClass>,
    pub policy: Option<u16>,
}

/// One class of an exception type's MRO: its key, `__name__` and `"module.qualname"`.
pub struct MroClass<'a, K> {
    pub key: K,
    pub name: &'a str,
    pub qualified: Option<&'a str>,
}

/// The rule tables of one classifier. `K` identifies an exception type (a pointer in the
/// bindings, anything comparable in tests).
#[derive(Debug)]
pub struct Rules<K> {
    type_rules: Vec<(K, ErrorClass)>,
    /// Qualified ("module.qualname") or bare names; a later rule for a name replaces an earlier
    /// one, as in the Classifier's dict.
    name_rules: HashMap<String, ErrorClass>,
    inspect_rules: HashMap<String, Vec<Inspector>>,
    default: ErrorClass,
    http_status: bool,
}

impl<K: PartialEq> Rules<K> {
    pub fn new(default: ErrorClass, http_status: bool) -> Self {
        Self { type_rules: Vec::new(), name_rules: HashMap::new(), inspect_rules: HashMap::new(), default, http_status }
    }

    pub fn with_type(mut self, key: K, class: ErrorClass) -> Self {
        self.type_rules.retain(|(k, _)| *k != key);
        self.type_rules.push((key, class));
        self
    }

    pub fn with_name(mut self, name: impl Into<String>, class: ErrorClass) -> Self {
        self.name_rules.insert(name.into(), class);
        self
    }

    pub fn with_inspector(mut self, qualified: impl Into<String>, inspector: Inspector) -> Self {
        let list = self.inspect_rules.entry(qualified.into()).or_default();
        if !list.contains(&inspector) {
            list.push(inspector);
        }
        self
    }

    pub fn default_class(&self) -> ErrorClass {
        self.default
    }

    pub fn uses_http_status(&self) -> bool {
        self.http_status
    }

    /// Walks the MRO, most specific first. At each class: its type rule (the user's: it beats
    /// what batchguard knows of the class), then its inspectors are noted, then its qualified
    /// and bare name rules (an inspector's fallback); the first rule decides (as
    /// `Classifier._resolve_type`).
    pub fn by_mro<'a>(&self, mro: impl IntoIterator<Item = MroClass<'a, K>>) -> TypeVerdict {
        let mut verdict = TypeVerdict::default();
        for class in mro {
            if let Some((_, c)) = self.type_rules.iter().find(|(k, _)| *k == class.key) {
                verdict.class = Some(*c);
                return verdict;
            }
            if let Some(found) = class.qualified.and_then(|q| self.inspect_rules.get(q)) {
                for inspector in found {
                    if !verdict.inspectors.contains(inspector) {
                        verdict.inspectors.push(*inspector);
                    }
                }
            }
            let by_name =
                class.qualified.and_then(|q| self.name_rules.get(q)).or_else(|| self.name_rules.get(class.name));
            if let Some(c) = by_name {
                verdict.class = Some(*c);
                return verdict;
            }
        }
        verdict
    }

    pub fn by_status(&self, status: Option<u16>) -> Option<ErrorClass> {
        if !self.http_status {
            return None;
        }
        status.and_then(class_of_http_status)
    }
}

/// What batchguard knows of client libraries' error codes (`batchguard._clients`: the Python
/// package owns the tables, both engines read them).
#[derive(Debug, Default)]
pub struct ClientTables {
    pub aws_error_codes: HashMap<String, ErrorClass>,
    pub grpc_status_codes: HashMap<String, ErrorClass>,
    pub tls_verification_marker: String,
    /// How many wrapped errors (SQLAlchemy's `.orig`) are followed, at most.
    pub max_wrapped_depth: usize,
}

impl ClientTables {
    /// botocore's ClientError: a known error code decides, else the HTTP status.
    pub fn aws_error(&self, code: Option<&str>, status: Option<u16>) -> Option<ErrorClass> {
        code.and_then(|c| self.aws_error_codes.get(c).copied()).or_else(|| status.and_then(class_of_http_status))
    }

    /// A gRPC status by name (`StatusCode.UNAVAILABLE.name`).
    pub fn grpc_status(&self, name: &str) -> Option<ErrorClass> {
        self.grpc_status_codes.get(name).copied()
    }

    /// A TLS error's message: a certificate that did not verify is PERMANENT.
    pub fn tls_verification(&self, message: &str) -> Option<ErrorClass> {
        (!self.tls_verification_marker.is_empty() && message.contains(self.tls_verification_marker.as_str()))
            .then_some(ErrorClass::Permanent)
    }
}

/// A `Retry-After` value in delta-seconds (digits, optionally a decimal fraction, as
/// `batchguard._clients.parse_retry_after` accepts), surrounded by spaces or tabs at most.
/// None for anything else (an HTTP-date is parsed by Python's `email.utils`).
pub fn delta_seconds(value: &str) -> Option<f64> {
    let text = value.trim_matches([' ', '\t']);
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    // 400 digits parse to infinity, which is no number of seconds.
    text.parse::<f64>().ok().filter(|seconds| seconds.is_finite())
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

    fn mro<'a>(classes: &[(&'a str, &'a str)]) -> Vec<MroClass<'a, &'a str>> {
        classes.iter().map(|(qualified, name)| MroClass { key: *qualified, name, qualified: Some(qualified) }).collect()
    }

    fn class_of(r: &Rules<&str>, classes: &[(&str, &str)]) -> Option<ErrorClass> {
        r.by_mro(mro(classes)).class
    }

    #[test]
    fn the_most_specific_rule_in_the_mro_wins() {
        let r = rules().with_type("ConnectionRefusedError", ErrorClass::Transient);
        let classes = [
            ("ConnectionRefusedError", "ConnectionRefusedError"),
            ("ConnectionError", "ConnectionError"),
            ("OSError", "OSError"),
        ];
        assert_eq!(class_of(&r, &classes), Some(ErrorClass::Transient));
        assert_eq!(class_of(&rules(), &classes), Some(ErrorClass::Recoverable));
    }

    #[test]
    fn a_failures_policy_is_its_most_specific_type_key_then_its_class_then_the_default() {
        let keys = PolicyKeys::default()
            .with_type("OSError", 1)
            .with_type("TimeoutError", 2)
            .with_class(ErrorClass::Recoverable, 3);
        let timeout = ["TimeoutError", "OSError", "Exception"];
        assert_eq!(keys.by_mro(timeout), Some(2));
        assert_eq!(keys.by_mro(["ConnectionError", "OSError"]), Some(1));
        assert_eq!(keys.resolve(keys.by_mro(["ValueError", "Exception"]), ErrorClass::Recoverable), 3);
        assert_eq!(keys.resolve(None, ErrorClass::Permanent), 0);
        assert!(PolicyKeys::<&str>::default().is_empty());
        assert_eq!(Verdict::from(ErrorClass::Transient), Verdict { class: ErrorClass::Transient, policy: 0 });
    }

    #[test]
    fn integrity_errors_match_by_name_whatever_the_driver() {
        let classes = [("psycopg.IntegrityError", "IntegrityError"), ("psycopg.DatabaseError", "DatabaseError")];
        assert_eq!(class_of(&rules(), &classes), Some(ErrorClass::Permanent));
    }

    #[test]
    fn qualified_names_match_before_bare_ones_and_later_rules_replace_earlier() {
        let r = rules()
            .with_name("requests.exceptions.ConnectionError", ErrorClass::Fatal)
            .with_name("requests.exceptions.ConnectionError", ErrorClass::Recoverable)
            .with_name("ConnectionError", ErrorClass::Transient);
        let requests = [("requests.exceptions.ConnectionError", "ConnectionError"), ("builtins.OSError", "OSError")];
        assert_eq!(class_of(&r, &requests), Some(ErrorClass::Recoverable));
        let other = [("other.ConnectionError", "ConnectionError")];
        assert_eq!(class_of(&r, &other), Some(ErrorClass::Transient));
    }

    #[test]
    fn inspectors_are_collected_up_to_the_deciding_rule_without_repeats() {
        let r = rules()
            .with_name("sqlalchemy.exc.OperationalError", ErrorClass::Recoverable)
            .with_inspector("sqlalchemy.exc.OperationalError", Inspector::WrappedDbapiError)
            .with_inspector("sqlalchemy.exc.DBAPIError", Inspector::WrappedDbapiError)
            .with_inspector("sqlalchemy.exc.SQLAlchemyError", Inspector::TlsVerification);
        let operational = [
            ("sqlalchemy.exc.OperationalError", "OperationalError"),
            ("sqlalchemy.exc.DBAPIError", "DBAPIError"),
            ("sqlalchemy.exc.SQLAlchemyError", "SQLAlchemyError"),
        ];
        let verdict = r.by_mro(mro(&operational));
        assert_eq!(verdict.inspectors, vec![Inspector::WrappedDbapiError]);
        assert_eq!(verdict.class, Some(ErrorClass::Recoverable));
        let interface = [
            ("sqlalchemy.exc.InterfaceError", "InterfaceError"),
            ("sqlalchemy.exc.DBAPIError", "DBAPIError"),
            ("sqlalchemy.exc.SQLAlchemyError", "SQLAlchemyError"),
        ];
        let verdict = r.by_mro(mro(&interface));
        assert_eq!(verdict.inspectors, vec![Inspector::WrappedDbapiError, Inspector::TlsVerification]);
        assert_eq!(verdict.class, None);
    }

    #[test]
    fn a_type_rule_beats_the_inspector_of_its_class() {
        let r = rules()
            .with_inspector("botocore.exceptions.ClientError", Inspector::AwsErrorCode)
            .with_type("botocore.exceptions.ClientError", ErrorClass::Fatal);
        let verdict = r.by_mro(mro(&[("botocore.exceptions.ClientError", "ClientError")]));
        assert_eq!(verdict, TypeVerdict { inspectors: vec![], class: Some(ErrorClass::Fatal), policy: None });
    }

    #[test]
    fn unknown_types_fall_through() {
        assert_eq!(rules().by_mro(mro(&[("RuntimeError", "RuntimeError")])), TypeVerdict::default());
    }

    #[test]
    fn inspectors_round_trip_through_their_names() {
        for inspector in Inspector::ALL {
            assert_eq!(Inspector::parse(inspector.as_str()).unwrap(), inspector);
        }
        assert!(Inspector::parse("psychic").unwrap_err().0.contains("psychic"));
    }

    #[test]
    fn client_tables_decide_codes_then_statuses() {
        let tables = ClientTables {
            aws_error_codes: HashMap::from([("SlowDown".to_string(), ErrorClass::Recoverable)]),
            grpc_status_codes: HashMap::from([("ABORTED".to_string(), ErrorClass::Transient)]),
            tls_verification_marker: "CERTIFICATE_VERIFY_FAILED".to_string(),
            max_wrapped_depth: 4,
        };
        assert_eq!(tables.aws_error(Some("SlowDown"), Some(400)), Some(ErrorClass::Recoverable));
        assert_eq!(tables.aws_error(Some("AccessDenied"), Some(403)), Some(ErrorClass::Permanent));
        assert_eq!(tables.aws_error(Some("Odd"), Some(503)), Some(ErrorClass::Recoverable));
        assert_eq!(tables.aws_error(None, None), None);
        assert_eq!(tables.grpc_status("ABORTED"), Some(ErrorClass::Transient));
        assert_eq!(tables.grpc_status("OK"), None);
        assert_eq!(tables.tls_verification("[SSL: CERTIFICATE_VERIFY_FAILED] x"), Some(ErrorClass::Permanent));
        assert_eq!(tables.tls_verification("[SSL: WRONG_VERSION_NUMBER]"), None);
    }

    #[test]
    fn delta_seconds_accepts_digits_and_a_fraction_only() {
        assert_eq!(delta_seconds("120"), Some(120.0));
        assert_eq!(delta_seconds(" \t1.5 "), Some(1.5));
        assert_eq!(delta_seconds("007"), Some(7.0));
        assert_eq!(delta_seconds(&"9".repeat(400)), None);
        for bad in ["", "-1", "+1", "1e3", "inf", "nan", "1.", ".5", "1_0", "1 2", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(delta_seconds(bad), None, "{bad:?}");
        }
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
    fn classes_round_trip_through_their_names() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(class.as_str()).unwrap(), class);
        }
        assert!(ErrorClass::parse("sometimes").is_err());
    }
}
