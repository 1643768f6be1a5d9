//! Classification of the user's exceptions (DESIGN §4) with the classifier's rules resolved
//! once per exception type, and the readers of what a failure carries: its HTTP status, its
//! `Retry-After`. The rules themselves are plain Rust (`crate::classify`); this file reads the
//! Python objects they look at.

use std::collections::HashMap;

use parking_lot::Mutex;
use pyo3::exceptions::{PyAttributeError, PyException};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::wait::wall_now;
use super::Obj;
use crate::classify::{
    delta_seconds, ClientTables, ErrorClass, Inspector, MroClass, PolicyKeys, Rules, TypeVerdict, Verdict,
};
use crate::engine::Failure;

/// An exception type (kept alive, so its address stays its own) and what its MRO resolves to.
type CachedType = (Py<PyType>, TypeVerdict);

/// Exception types each per-type cache holds at most (`batchguard._classifier.MAX_CACHED_TYPES`).
/// A cached type is kept alive, so a run raising ever new types (classes made at run time)
/// would keep them all; a full cache is emptied and refilled instead.
const MAX_CACHED_TYPES: usize = 1024;

/// `cache[key] = value`, emptying `cache` first when it is full ([`MAX_CACHED_TYPES`]).
fn insert_bounded<V>(cache: &Mutex<HashMap<usize, V>>, key: usize, value: V) {
    let evicted = {
        let mut cache = cache.lock();
        let evicted = if cache.len() >= MAX_CACHED_TYPES { std::mem::take(&mut *cache) } else { HashMap::new() };
        cache.insert(key, value);
        evicted
    };
    // The evicted types are released after the lock: freeing a type may run Python code (a
    // metaclass's finalizer) that raises and so classifies again.
    drop(evicted);
}

/// The user's classifier, with its type rules resolved per exception type once and cached.
/// Only the few types with an inspector (`batchguard._clients`) look at the instance again.
pub(super) struct NativeClassifier {
    rules: Rules<usize>,
    /// The client knowledge the inspectors use (read only when the classifier has inspectors).
    tables: ClientTables,
    /// Message rules as the Classifier compiled them (Python `re`, so both engines agree on
    /// every pattern; this is the slow path, taken only when no type or status rule matched).
    message_rules: Vec<(Obj, ErrorClass)>,
    /// Keeps the rule types (whose addresses are the rule keys) alive.
    _rule_types: Vec<Py<PyType>>,
    func: Option<Obj>,
    /// type address -> (the type, kept alive so the address stays its own; its verdict)
    cache: Mutex<HashMap<usize, CachedType>>,
    /// type address -> (the type, kept alive; may its instances carry a Retry-After?)
    retry_hint_types: Mutex<HashMap<usize, (Py<PyType>, bool)>>,
    /// The type and class keys of `RetryPolicies.by_error` (the classifier's `retry_table`);
    /// a type's policy is resolved with its classification and cached in its verdict.
    policy_keys: PolicyKeys<usize>,
    /// The predicate keys, called in order on each failure (only when there are some).
    predicates: Vec<(Obj, u16)>,
    /// Keeps the policy key types (whose addresses are the keys) alive.
    _policy_types: Vec<Py<PyType>>,
}

impl NativeClassifier {
    pub(super) fn from_py(classifier: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = classifier.py();
        let default = ErrorClass::parse(&classifier.getattr("default_class")?.str()?.to_cow()?)?;
        let mut rules = Rules::new(default, classifier.getattr("http_status")?.is_truthy()?);
        let mut rule_types = Vec::new();
        for rule in classifier.getattr("type_rules")?.try_iter()? {
            let (ty, class): (Bound<'_, PyType>, Bound<'_, PyAny>) = rule?.extract()?;
            rules = rules.with_type(ty.as_ptr() as usize, ErrorClass::parse(&class.str()?.to_cow()?)?);
            rule_types.push(ty.unbind());
        }
        for rule in classifier.getattr("name_rules")?.try_iter()? {
            let (name, class): (String, Bound<'_, PyAny>) = rule?.extract()?;
            rules = rules.with_name(name, ErrorClass::parse(&class.str()?.to_cow()?)?);
        }
        let mut has_inspectors = false;
        for rule in classifier.getattr("inspect_rules")?.try_iter()? {
            let (qualified, inspector): (String, String) = rule?.extract()?;
            rules = rules.with_inspector(qualified, Inspector::parse(&inspector)?);
            has_inspectors = true;
        }
        let tables = if has_inspectors { client_tables(py)? } else { ClientTables::default() };
        let mut message_rules = Vec::new();
        for rule in classifier.getattr("_compiled")?.try_iter()? {
            let (pattern, class): (Bound<'_, PyAny>, Bound<'_, PyAny>) = rule?.extract()?;
            message_rules.push((pattern.unbind(), ErrorClass::parse(&class.str()?.to_cow()?)?));
        }
        let func = classifier.getattr("func")?;
        let (policy_keys, predicates, policy_types) = policy_keys(&classifier.getattr("retry_table")?)?;
        Ok(Self {
            rules,
            tables,
            message_rules,
            _rule_types: rule_types,
            func: (!func.is_none()).then(|| func.unbind()),
            cache: Mutex::new(HashMap::new()),
            retry_hint_types: Mutex::new(HashMap::new()),
            policy_keys,
            predicates,
            _policy_types: policy_types,
        })
    }

    /// The retry policy a failure with `exc` of `class` is under: the first predicate key that
    /// holds, else its type's (cached), else its class's, else the default (0).
    fn policy_for(&self, py: Python<'_>, exc: &Bound<'_, PyAny>, class: ErrorClass) -> PyResult<u16> {
        for (predicate, policy) in &self.predicates {
            // A SafePredicate: a plain bool, its own errors handled in Python.
            if predicate.bind(py).call1((exc,))?.is_truthy()? {
                return Ok(*policy);
            }
        }
        if self.policy_keys.is_empty() {
            return Ok(0);
        }
        let by_type = self.type_verdict(&exc.get_type())?.policy;
        Ok(self.policy_keys.resolve(by_type, class))
    }

    /// The wait a retryable failure asks for ([`retry_after_of`]), without its three attribute
    /// reads when the exception cannot carry one: each absent attribute costs an
    /// AttributeError, ~1 µs a failure, a quarter of the engine's whole cost in a run where 5%
    /// of the records fail once.
    pub(super) fn retry_after(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        if self.may_carry_retry_after(py, exc) {
            retry_after_of(py, exc)
        } else {
            Ok(None)
        }
    }

    /// False only when neither the exception's type (through its MRO: attributes, descriptors,
    /// slots, a `__getattr__`) nor its instance dict has `retry_after`, `headers` or `response`.
    fn may_carry_retry_after(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> bool {
        let names = [intern!(py, "retry_after"), intern!(py, "headers"), intern!(py, "response")];
        let ty = exc.get_type();
        let key = ty.as_ptr() as usize;
        let cached = self.retry_hint_types.lock().get(&key).map(|entry| entry.1);
        let by_type = cached.unwrap_or_else(|| {
            let may = names.iter().chain([&intern!(py, "__getattr__")]).any(|name| ty.hasattr(name).unwrap_or(true));
            insert_bounded(&self.retry_hint_types, key, (ty.clone().unbind(), may));
            may
        });
        if by_type {
            return true;
        }
        match exc.getattr(intern!(py, "__dict__")) {
            Ok(attrs) => match attrs.cast::<PyDict>() {
                Ok(attrs) => names.iter().any(|name| attrs.contains(name).unwrap_or(true)),
                Err(_) => true,
            },
            Err(_) => true,
        }
    }

    /// DESIGN §4, first match wins. A classifier that raises an Exception makes the record
    /// PERMANENT (and is reported), exactly as the reference engine does; anything else it
    /// raises (KeyboardInterrupt, SystemExit) stops the run: it comes back as the Err.
    /// The verdict names the retry policy the failure is under too.
    pub(super) fn classify(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
        sink: &Bound<'_, PyAny>,
    ) -> PyResult<Verdict> {
        let class = match self.try_classify(py, exc) {
            Ok(class) => class,
            Err(err) if err.is_instance_of::<PyException>(py) => {
                sink.call_method1(intern!(py, "classifier_error"), (exc, err.value(py)))?;
                ErrorClass::Permanent
            }
            Err(err) => return Err(err),
        };
        Ok(Verdict { class, policy: self.policy_for(py, exc, class)? })
    }

    fn try_classify(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<ErrorClass> {
        if let Some(func) = &self.func {
            let verdict = func.bind(py).call1((exc,))?;
            if !verdict.is_none() {
                return Ok(ErrorClass::parse(&verdict.str()?.to_cow()?)?);
            }
        }
        if let Some(class) = self.by_type_and_inspectors(py, exc, 0)? {
            return Ok(class);
        }
        if self.rules.uses_http_status() {
            if let Some(class) = self.rules.by_status(http_status_of(py, exc)?) {
                return Ok(class);
            }
        }
        if !self.message_rules.is_empty() {
            let message = exc.str()?;
            for (pattern, class) in &self.message_rules {
                if pattern.bind(py).call_method1(intern!(py, "search"), (&message,))?.is_truthy()? {
                    return Ok(*class);
                }
            }
        }
        Ok(self.rules.default_class())
    }

    /// The type's inspectors (each may decide this instance; one that raises an Exception does
    /// not), then its type and name rules. `depth` counts wrapped errors followed so far.
    fn by_type_and_inspectors(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
        depth: usize,
    ) -> PyResult<Option<ErrorClass>> {
        let verdict = self.type_verdict(&exc.get_type())?;
        for inspector in &verdict.inspectors {
            match self.inspect(py, *inspector, exc, depth) {
                Ok(Some(class)) => return Ok(Some(class)),
                Ok(None) => {}
                Err(err) if err.is_instance_of::<PyException>(py) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(verdict.class)
    }

    fn type_verdict(&self, ty: &Bound<'_, PyType>) -> PyResult<TypeVerdict> {
        let key = ty.as_ptr() as usize;
        // Cloning a verdict without inspectors (nearly every type's) allocates nothing.
        if let Some(entry) = self.cache.lock().get(&key) {
            return Ok(entry.1.clone());
        }
        let verdict = self.resolve_type(ty)?;
        insert_bounded(&self.cache, key, (ty.clone().unbind(), verdict.clone()));
        Ok(verdict)
    }

    fn resolve_type(&self, ty: &Bound<'_, PyType>) -> PyResult<TypeVerdict> {
        let mro = ty.getattr(intern!(ty.py(), "__mro__"))?;
        let mro = mro.cast::<PyTuple>()?;
        let mut entries = Vec::with_capacity(mro.len());
        for klass in mro.iter() {
            let klass = klass.cast_into::<PyType>()?;
            entries.push((klass.as_ptr() as usize, klass.name()?.to_string(), qualified_name(&klass)?));
        }
        let mut verdict = self.rules.by_mro(entries.iter().map(|(key, name, qualified)| MroClass {
            key: *key,
            name,
            qualified: qualified.as_deref(),
        }));
        verdict.policy = self.policy_keys.by_mro(entries.iter().map(|(key, _, _)| *key));
        Ok(verdict)
    }

    /// One inspector on one instance, as `batchguard._clients` defines it.
    fn inspect(
        &self,
        py: Python<'_>,
        inspector: Inspector,
        exc: &Bound<'_, PyAny>,
        depth: usize,
    ) -> PyResult<Option<ErrorClass>> {
        match inspector {
            Inspector::AwsErrorCode => {
                let Some(response) = optional_attr(exc, intern!(py, "response"))? else { return Ok(None) };
                let Ok(response) = response.cast::<PyDict>() else { return Ok(None) };
                let code = dict_item(response, intern!(py, "Error"))?
                    .map(|error| dict_item(&error, intern!(py, "Code")))
                    .transpose()?
                    .flatten();
                let code = match code.as_ref().map(|c| c.cast::<PyString>()) {
                    Some(Ok(code)) => Some(code.to_cow()?.into_owned()),
                    _ => None,
                };
                let status = match dict_item(response, intern!(py, "ResponseMetadata"))? {
                    Some(metadata) => status_value(dict_item(&metadata, intern!(py, "HTTPStatusCode"))?),
                    None => None,
                };
                Ok(self.tables.aws_error(code.as_deref(), status))
            }
            Inspector::GrpcStatus => {
                let Some(code) = optional_attr(exc, intern!(py, "code"))? else { return Ok(None) };
                if !code.is_callable() {
                    return Ok(None);
                }
                let Some(name) = optional_attr(&code.call0()?, intern!(py, "name"))? else { return Ok(None) };
                match name.cast::<PyString>() {
                    Ok(name) => Ok(self.tables.grpc_status(&name.to_cow()?)),
                    Err(_) => Ok(None),
                }
            }
            Inspector::TlsVerification => Ok(self.tables.tls_verification(&exc.str()?.to_cow()?)),
            Inspector::WrappedDbapiError => {
                if let Some(orig) = optional_attr(exc, intern!(py, "orig"))? {
                    if orig.is_instance_of::<pyo3::exceptions::PyBaseException>()
                        && !orig.is(exc)
                        && depth < self.tables.max_wrapped_depth
                    {
                        if let Some(class) = self.by_type_and_inspectors(py, &orig, depth + 1)? {
                            return Ok(Some(class));
                        }
                    }
                }
                match optional_attr(exc, intern!(py, "connection_invalidated"))? {
                    Some(flag) if flag.is(PyBool::new(py, true).as_any()) => Ok(Some(ErrorClass::Recoverable)),
                    _ => Ok(None),
                }
            }
        }
    }
}

/// The wait a retryable failure asks for, in seconds: its numeric `retry_after`, else a
/// `Retry-After` header it carries (as `batchguard._clients.retry_after_of`; the scheduler
/// caps it at the policy's `max_retry_after`). Reading either never fails the record; a
/// KeyboardInterrupt on the way stops the run.
fn retry_after_of(py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    match numeric_retry_after(py, exc)? {
        Some(seconds) => Ok(Some(seconds)),
        None => match header_retry_after(py, exc) {
            Ok(seconds) => Ok(seconds),
            Err(err) if err.is_instance_of::<PyException>(py) => Ok(None),
            Err(err) => Err(err),
        },
    }
}

/// A policy table's type and class keys, its predicates, and the key types (kept alive).
type PolicyLookup = (PolicyKeys<usize>, Vec<(Obj, u16)>, Vec<Py<PyType>>);

/// The keys of a `batchguard._retry_table.PolicyTable` (None: one policy, no keys): types by
/// address (and the types, kept alive), classes, and the predicates.
fn policy_keys(table: &Bound<'_, PyAny>) -> PyResult<PolicyLookup> {
    let mut keys = PolicyKeys::default();
    let (mut predicates, mut types) = (Vec::new(), Vec::new());
    if table.is_none() {
        return Ok((keys, predicates, types));
    }
    for key in table.getattr("type_keys")?.try_iter()? {
        let (ty, policy): (Bound<'_, PyType>, u16) = key?.extract()?;
        keys = keys.with_type(ty.as_ptr() as usize, policy);
        types.push(ty.unbind());
    }
    let classes: Vec<Option<u16>> = table.getattr("class_keys")?.extract()?;
    for (class, policy) in ErrorClass::ALL.into_iter().zip(classes) {
        if let Some(policy) = policy {
            keys = keys.with_class(class, policy);
        }
    }
    for key in table.getattr("predicates")?.try_iter()? {
        let (predicate, policy): (Bound<'_, PyAny>, u16) = key?.extract()?;
        predicates.push((predicate.unbind(), policy));
    }
    Ok((keys, predicates, types))
}

/// `batchguard._clients`' tables, for the inspectors.
fn client_tables(py: Python<'_>) -> PyResult<ClientTables> {
    let clients = py.import(intern!(py, "batchguard._clients"))?;
    let classes = |name: &str| -> PyResult<HashMap<String, ErrorClass>> {
        let mut table = HashMap::new();
        for (key, class) in clients.getattr(name)?.cast_into::<PyDict>()?.iter() {
            table.insert(key.extract::<String>()?, ErrorClass::parse(&class.str()?.to_cow()?)?);
        }
        Ok(table)
    };
    Ok(ClientTables {
        aws_error_codes: classes("AWS_ERROR_CODES")?,
        grpc_status_codes: classes("GRPC_STATUS_CODES")?,
        tls_verification_marker: clients.getattr("TLS_VERIFICATION_MARKER")?.extract()?,
        max_wrapped_depth: clients.getattr("MAX_WRAPPED_DEPTH")?.extract()?,
    })
}

/// `"module.qualname"` of a class, or None when either is not a str (as the Classifier).
fn qualified_name(klass: &Bound<'_, PyType>) -> PyResult<Option<String>> {
    let py = klass.py();
    let module = optional_attr(klass.as_any(), intern!(py, "__module__"))?;
    let qualname = optional_attr(klass.as_any(), intern!(py, "__qualname__"))?;
    match (module.as_ref().map(|m| m.cast::<PyString>()), qualname.as_ref().map(|q| q.cast::<PyString>())) {
        (Some(Ok(module)), Some(Ok(qualname))) => Ok(Some(format!("{}.{}", module.to_cow()?, qualname.to_cow()?))),
        _ => Ok(None),
    }
}

/// `d.get(key)` on a dict.
fn dict_item<'py>(d: &Bound<'py, PyAny>, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    match d.cast::<PyDict>() {
        Ok(d) => d.get_item(key),
        Err(_) => Ok(None),
    }
}

/// `getattr(obj, name, None)`: only AttributeError means "absent".
pub(super) fn optional_attr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match obj.getattr(name) {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_instance_of::<PyAttributeError>(obj.py()) => Ok(None),
        Err(err) => Err(err),
    }
}

fn status_value(value: Option<Bound<'_, PyAny>>) -> Option<u16> {
    let value = value?;
    if !value.is_exact_instance_of::<PyInt>() && !value.is_instance_of::<PyInt>()
        || value.is_instance_of::<pyo3::types::PyBool>()
    {
        return None;
    }
    value.extract::<i64>().ok().filter(|s| (100..=599).contains(s)).map(|s| s as u16)
}

/// `status_code`, `status` or `response.status_code`, as `batchguard.policies.http_status_of`.
fn http_status_of(py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<u16>> {
    let response = optional_attr(exc, intern!(py, "response"))?;
    if let Some(status) = status_value(optional_attr(exc, intern!(py, "status_code"))?) {
        return Ok(Some(status));
    }
    if let Some(status) = status_value(optional_attr(exc, intern!(py, "status"))?) {
        return Ok(Some(status));
    }
    match response {
        Some(r) if !r.is_none() => Ok(status_value(optional_attr(&r, intern!(py, "status_code"))?)),
        _ => Ok(None),
    }
}

/// An exception's numeric `retry_after` in seconds. A broken attribute (an Exception), a
/// bool, or anything but a finite, non-negative number (an int beyond a float's range too) is
/// ignored.
fn numeric_retry_after(py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let value = match exc.getattr(intern!(py, "retry_after")) {
        Ok(value) => value,
        Err(err) if err.is_instance_of::<PyException>(py) => return Ok(None),
        Err(err) => return Err(err),
    };
    if value.is_instance_of::<PyBool>() || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Ok(None);
    }
    Ok(value.extract::<f64>().ok().filter(|seconds| seconds.is_finite() && *seconds >= 0.0))
}

/// The `Retry-After` header a failure carries, in seconds: in `exc.headers` (aiohttp), else
/// in the response's headers (requests, httpx; botocore's response metadata).
fn header_retry_after(py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let mut holders = vec![optional_attr(exc, intern!(py, "headers"))?];
    if let Some(response) = optional_attr(exc, intern!(py, "response"))? {
        if response.is_instance_of::<PyDict>() {
            holders.push(match dict_item(&response, intern!(py, "ResponseMetadata"))? {
                Some(metadata) => dict_item(&metadata, intern!(py, "HTTPHeaders"))?,
                None => None,
            });
        } else if !response.is_none() {
            holders.push(optional_attr(&response, intern!(py, "headers"))?);
        }
    }
    for headers in holders.into_iter().flatten() {
        if headers.is_none() {
            continue;
        }
        let mut value = headers.call_method1(intern!(py, "get"), (intern!(py, "Retry-After"),))?;
        if value.is_none() {
            // a plain dict (botocore lowercases its header names)
            value = headers.call_method1(intern!(py, "get"), (intern!(py, "retry-after"),))?;
        }
        if let Ok(text) = value.cast::<PyString>() {
            let text = text.to_cow()?;
            if let Some(seconds) = delta_seconds(&text) {
                return Ok(Some(seconds));
            }
            // An HTTP-date: Python's email.utils reads it, as in the reference engine.
            let parse = py.import(intern!(py, "batchguard._clients"))?.getattr(intern!(py, "http_date_delay"))?;
            return parse.call1((text.trim_matches([' ', '\t']), wall_now()))?.extract();
        }
    }
    Ok(None)
}

/// A failed call as the scheduler takes it: classified, with the wait it asks for; a
/// KeyboardInterrupt (any BaseException that is not an Exception), here or while classifying,
/// is marked `interrupted`: it stops the run.
#[cold]
#[inline(never)]
pub(super) fn failure_of(
    py: Python<'_>,
    err: PyErr,
    classifier: &NativeClassifier,
    sink: &Bound<'_, PyAny>,
) -> Failure<Obj> {
    let wall = wall_now();
    if !err.is_instance_of::<PyException>(py) {
        let error = err.into_value(py).into_any();
        return Failure { class: ErrorClass::Fatal.into(), error, retry_after: None, wall, interrupted: true };
    }
    let error = err.into_value(py).into_any();
    let bound = error.bind(py);
    let classified = classifier.classify(py, bound, sink).and_then(|class| {
        let retry_after = if class.retryable() { classifier.retry_after(py, bound)? } else { None };
        Ok((class, retry_after))
    });
    match classified {
        Ok((class, retry_after)) => Failure { class, error, retry_after, wall, interrupted: false },
        // Classifying raised a KeyboardInterrupt (or the like): that stops the run.
        Err(stop) => Failure {
            class: ErrorClass::Fatal.into(),
            error: stop.into_value(py).into_any(),
            retry_after: None,
            wall,
            interrupted: true,
        },
    }
}

impl NativeClassifier {
    /// The Python objects the classifier holds, for `AsyncRun`'s `__traverse__`.
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(func) = &self.func {
            visit.call(func)?;
        }
        for (pattern, _) in &self.message_rules {
            visit.call(pattern)?;
        }
        for (predicate, _) in &self.predicates {
            visit.call(predicate)?;
        }
        Ok(())
    }

    /// Drops the user's callable and patterns (`__clear__`); the run cannot classify again.
    pub(super) fn clear(&mut self) {
        self.func = None;
        self.message_rules.clear();
        self.predicates.clear();
    }
}
