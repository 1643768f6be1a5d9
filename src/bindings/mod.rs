//! The Python-facing driver: converts configuration, calls the user's callable, classifies its
//! exceptions, and reports to the Python recorder. Every decision is the scheduler's
//! (`engine.rs`); this file only moves values between it and Python.
//!
//! Two drivers share one contract:
//! * concurrency 1 runs inline on the calling thread, holding the GIL, with no locks at all;
//! * concurrency N runs N worker loops on the Tokio runtime's blocking pool. A worker holds
//!   the GIL from one call to the next (one GIL hand-off per record, taken inside the callback
//!   when it blocks), and the calling thread reads input and handles every event, so the
//!   input iterator, the DLQ and the user's progress callback only ever see one thread.
//!
//! Lock discipline (the reason this cannot deadlock): the scheduler's mutex is never held
//! while running Python code or while waiting for the GIL, and no Python object is dropped
//! while it is held — the scheduler hands back everything it lets go of.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyAttributeError, PyException, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::backoff::{Jitter, RetryPolicy};
use crate::breaker::BreakerPolicy;
use crate::classify::{delta_seconds, ClientTables, ErrorClass, Inspector, MroClass, Rules, TypeVerdict};
use crate::engine::{Budget, Clock, Config, Counters, Event, Failure, Key, Next, Scheduler, Streamed, Work};
use crate::ratelimit::RateLimit;

mod asyncio;
mod events;
mod ffi;

use events::RunSummary;
use ffi::{list_of, FastCall, OrderedResults, Source};

pyo3::import_exception!(batchguard.errors, ConfigError);

impl From<crate::error::ConfigError> for PyErr {
    fn from(err: crate::error::ConfigError) -> PyErr {
        ConfigError::new_err(err.0)
    }
}

type Obj = Py<PyAny>;
type PyWork = Work<Obj, Obj>;
type PyScheduler = Scheduler<Obj, Obj, MonoClock>;

/// Most records the inline driver runs between looks at events, progress and signals.
const STREAM_LIMIT: usize = 256;

/// Longest a waiting thread sleeps before it looks again (and checks for Ctrl-C).
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Times an interrupt may cut one delivery of events short before it is given up (as
/// `batchguard._outcome.DELIVERY_ATTEMPTS`): the first Ctrl-C still flushes what was
/// dead-lettered, a user who keeps pressing it (a DLQ that hangs) gets out.
const DELIVERY_ATTEMPTS: usize = 4;

/// `seconds` as a Duration, saturating: a negative or NaN value is zero, an overflowing or
/// infinite one is `Duration::MAX` ("never"). `Duration::from_secs_f64` panics on those, and a
/// user's value (a timeout, a delay, a `retry_after`) must never become a PanicException.
fn saturating_secs(seconds: f64) -> Duration {
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) => duration,
        Err(_) if seconds > 0.0 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

/// How long to sleep now to wake at `until` (monotonic seconds of `clock`, None: no timer),
/// never more than MAX_WAIT: computed in seconds, so no far-future Instant is ever built.
fn wait_for(clock: &MonoClock, until: Option<f64>) -> Duration {
    match until {
        // A NaN deadline is no deadline: napping 0 s would spin on it.
        Some(at) if !at.is_nan() => saturating_secs(at - clock.now()).min(MAX_WAIT),
        _ => MAX_WAIT,
    }
}

#[derive(Clone, Copy)]
struct MonoClock(Instant);

impl Clock for MonoClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    fn wall(&self) -> f64 {
        wall_now()
    }
}

fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The process-wide runtime whose blocking pool hosts the workers, built on first use.
///
/// Fork safety (what tokenizers' at-fork hook is for): a forked child inherits the runtime's
/// memory but none of its threads, so its blocking pool would queue work for threads that do
/// not exist, and a threaded run would hang. The runtime is therefore the *process's*: keyed
/// by pid, a forked child builds its own on first use. The parent's copy is leaked in the
/// child, never dropped (dropping it would wait for those threads). The lock cannot be held
/// across a fork: it is only taken with the GIL held, and `os.fork` holds the GIL.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = RUNTIME.lock();
    if let Some((owner, runtime)) = *slot {
        if owner == pid {
            return Ok(runtime);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(crate::MAX_CONCURRENCY)
        .thread_name("batchguard")
        .enable_time()
        .build()
        .map_err(|err| PyRuntimeError::new_err(format!("batchguard could not start its worker threads: {err}")))?;
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

// ------------------------------------------------------------------------ configuration

fn engine_config(cfg: &Bound<'_, PyAny>) -> PyResult<Config> {
    let retry = cfg.getattr("retry")?;
    let jitter: String = retry.getattr("jitter")?.extract()?;
    let policy = RetryPolicy::new(
        retry.getattr("max_attempts")?.extract()?,
        retry.getattr("base_delay")?.extract()?,
        retry.getattr("multiplier")?.extract()?,
        retry.getattr("max_delay")?.extract()?,
        jitter.parse::<Jitter>()?,
    )?;
    // The cap on an exception's `retry_after` is the policy's own `retry_after_cap`
    // (`max_retry_after`, else `max_delay`): one rule, in Python, for both engines.
    let policy = policy.with_max_retry_after(retry.getattr(intern!(cfg.py(), "retry_after_cap"))?.extract()?)?;
    let breaker = cfg.getattr("breaker")?;
    let breaker = if breaker.is_none() {
        None
    } else {
        let counts = breaker
            .getattr("counts")?
            .try_iter()?
            .map(|c| Ok(ErrorClass::parse(&c?.str()?.to_cow()?)?))
            .collect::<PyResult<Vec<_>>>()?;
        Some(BreakerPolicy::new(
            breaker.getattr("failure_rate_threshold")?.extract()?,
            breaker.getattr("window")?.extract()?,
            breaker.getattr("minimum_calls")?.extract()?,
            breaker.getattr("open_duration")?.extract()?,
            breaker.getattr("half_open_calls")?.extract()?,
            breaker.getattr("abort_failure_rate")?.extract()?,
            counts,
        )?)
    };
    let budget = cfg.getattr("max_failures")?;
    let max_failures = if budget.is_none() {
        None
    } else if budget.is_instance_of::<PyInt>() {
        Some(Budget::Count(budget.extract()?))
    } else {
        Some(Budget::Rate(budget.extract()?))
    };
    let concurrency: usize = cfg.getattr("concurrency")?.extract()?;
    let batch_size: usize = cfg.getattr("batch_size")?.extract()?;
    // `api` checks both; the engine must not loop on empty batches or run with no worker
    // whatever it is given.
    if batch_size == 0 || concurrency == 0 {
        let (name, value) = if batch_size == 0 { ("batch_size", batch_size) } else { ("concurrency", concurrency) };
        return Err(ConfigError::new_err(format!("{name} must be >= 1, got {value}")));
    }
    Ok(Config {
        batch_size,
        concurrency,
        retry: policy,
        breaker,
        max_failures,
        seed: cfg.getattr("seed")?.extract()?,
        traceback_limit: cfg.getattr("traceback_limit")?.extract()?,
        progress_interval: cfg.getattr("progress_interval")?.extract()?,
        rate_limit: match cfg.getattr("rate_per_second")?.extract::<Option<f64>>()? {
            Some(rate) => Some(RateLimit::new(rate, cfg.getattr("rate_burst")?.extract()?)?),
            None => None,
        },
        delay_between_batches: cfg.getattr("delay_between_batches")?.extract()?,
    })
}

// ------------------------------------------------------------------------ classification

/// An exception type (kept alive, so its address stays its own) and what its MRO resolves to.
type CachedType = (Py<PyType>, TypeVerdict);

/// The user's classifier, with its type rules resolved per exception type once and cached.
/// Only the few types with an inspector (`batchguard._clients`) look at the instance again.
struct NativeClassifier {
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
}

impl NativeClassifier {
    fn from_py(classifier: &Bound<'_, PyAny>) -> PyResult<Self> {
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
        Ok(Self {
            rules,
            tables,
            message_rules,
            _rule_types: rule_types,
            func: (!func.is_none()).then(|| func.unbind()),
            cache: Mutex::new(HashMap::new()),
            retry_hint_types: Mutex::new(HashMap::new()),
        })
    }

    /// The wait a retryable failure asks for ([`retry_after_of`]), without its three attribute
    /// reads when the exception cannot carry one: each absent attribute costs an
    /// AttributeError, ~1 µs a failure, a quarter of the engine's whole cost in a run where 5%
    /// of the records fail once.
    fn retry_after(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
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
            self.retry_hint_types.lock().insert(key, (ty.clone().unbind(), may));
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
    fn classify(&self, py: Python<'_>, exc: &Bound<'_, PyAny>, sink: &Bound<'_, PyAny>) -> PyResult<ErrorClass> {
        match self.try_classify(py, exc) {
            Ok(class) => Ok(class),
            Err(err) if err.is_instance_of::<PyException>(py) => {
                sink.call_method1(intern!(py, "classifier_error"), (exc, err.value(py)))?;
                Ok(ErrorClass::Permanent)
            }
            Err(err) => Err(err),
        }
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
        self.cache.lock().insert(key, (ty.clone().unbind(), verdict.clone()));
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
        Ok(self.rules.by_mro(entries.iter().map(|(key, name, qualified)| MroClass {
            key: *key,
            name,
            qualified: qualified.as_deref(),
        })))
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
fn optional_attr<'py>(obj: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
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

fn strip_traceback(exc: &Bound<'_, PyAny>) {
    // SAFETY: `exc` is a live exception instance (it came out of a PyErr) and None is a valid
    // traceback value; PyException_SetTraceback takes new references itself.
    unsafe {
        pyo3::ffi::PyException_SetTraceback(exc.as_ptr(), pyo3::ffi::Py_None());
    }
}

/// What one call of the user's callable came to (threaded workers).
enum Outcome {
    Value(Obj),
    Failed(Failure<Obj>),
}

#[cold]
#[inline(never)]
fn failure_of(py: Python<'_>, err: PyErr, classifier: &NativeClassifier, sink: &Bound<'_, PyAny>) -> Failure<Obj> {
    let wall = wall_now();
    if !err.is_instance_of::<PyException>(py) {
        let error = err.into_value(py).into_any();
        return Failure { class: ErrorClass::Fatal, error, retry_after: None, wall, interrupted: true };
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
            class: ErrorClass::Fatal,
            error: stop.into_value(py).into_any(),
            retry_after: None,
            wall,
            interrupted: true,
        },
    }
}

/// Report a failure to the scheduler, or stop the run if it was an interrupt.
fn report_failure(py: Python<'_>, sched: &mut PyScheduler, work: PyWork, failure: Failure<Obj>) -> PyResult<()> {
    if failure.interrupted {
        sched.abandon(work);
        return Err(PyErr::from_value(failure.error.into_bound(py)));
    }
    if !sched.keep_tracebacks() {
        strip_traceback(failure.error.bind(py));
    }
    sched.fail(work, failure.class, failure.error, failure.retry_after, failure.wall);
    Ok(())
}

// ------------------------------------------------------------------------ events for Python

/// Hand events to the recorder, which removes each one from the list once it is handled.
///
/// DESIGN §4: an interrupt flushes what was dead-lettered. A KeyboardInterrupt (any
/// BaseException that is not an Exception) raised while the recorder persists a batch leaves
/// that batch and the later ones in the list: they are handed over again, then the interrupt
/// is returned. An Exception (a broken DLQ) is returned at once.
fn deliver(py: Python<'_>, sink: &Bound<'_, PyAny>, events: Vec<Event<Obj, Obj>>, counters: &Counters) -> PyResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let events = events::events_list(py, events)?;
    let counters = events::counters(py, counters)?;
    let mut interrupted: Option<PyErr> = None;
    for _ in 0..DELIVERY_ATTEMPTS {
        match sink.call_method1(intern!(py, "events"), (&events, &counters)) {
            Ok(_) => break,
            Err(err) if !err.is_instance_of::<PyException>(py) && !events.is_empty() => {
                interrupted.get_or_insert(err);
            }
            Err(err) => return Err(interrupted.unwrap_or(err)),
        }
    }
    interrupted.map_or(Ok(()), Err)
}

/// Does the recorder pass progress on to anyone (`on_progress`)? A sink without that
/// attribute gets every report.
fn wants_progress(sink: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(optional_attr(sink, intern!(sink.py(), "on_progress"))?.is_none_or(|callback| !callback.is_none()))
}

fn progress(py: Python<'_>, sink: &Bound<'_, PyAny>, counters: &Counters) -> PyResult<()> {
    sink.call_method1(intern!(py, "progress"), (events::counters(py, counters)?,))?;
    Ok(())
}

/// Sleep without the GIL until `until` (capped), then let Python handle pending signals.
fn nap(py: Python<'_>, clock: &MonoClock, until: Option<f64>) -> PyResult<()> {
    let wait = wait_for(clock, until);
    if !wait.is_zero() {
        py.detach(|| std::thread::sleep(wait));
    }
    py.check_signals()
}

// ------------------------------------------------------------------------ the run

/// What `run` returns to `batchguard.api`, for a finished scheduler and its values.
fn summary<'py>(
    py: Python<'py>,
    sched: &PyScheduler,
    successful: Bound<'py, PyList>,
) -> PyResult<Bound<'py, RunSummary>> {
    let summary = RunSummary::new(
        sched.succeeded(),
        sched.failed(),
        sched.records_read(),
        sched.exhausted(),
        sched.retries(),
        successful.unbind(),
        sched.stop_reason().map(|r| PyString::intern(py, r.as_str()).unbind()),
        sched.breaker_trips(),
        sched.skipped_records(),
    );
    Bound::new(py, summary)
}

/// Run `func` over `records`; report to `sink` (a `batchguard._outcome.RunRecorder`).
///
/// Returns a `RunSummary`.
#[pyfunction]
#[pyo3(signature = (records, func, config, classifier, sink, size_hint=None))]
pub fn run<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    func: &Bound<'py, PyAny>,
    config: &Bound<'py, PyAny>,
    classifier: &Bound<'py, PyAny>,
    sink: &Bound<'py, PyAny>,
    size_hint: Option<usize>,
) -> PyResult<Bound<'py, RunSummary>> {
    let py_config = config;
    let config = engine_config(py_config)?;
    let options = RunOptions::from_config(py_config, &config, sink, size_hint)?;
    if config.concurrency > crate::MAX_CONCURRENCY {
        return Err(ConfigError::new_err(format!(
            "concurrency must be <= {} for sync callbacks (one thread each), got {}",
            crate::MAX_CONCURRENCY,
            config.concurrency
        )));
    }
    let classifier = NativeClassifier::from_py(classifier)?;
    let mut source = Source::new(records)?;
    let run = if config.concurrency == 1 {
        run_inline(py, &mut source, func, config, &classifier, sink, &options)?
    } else {
        run_threaded(py, &mut source, func, config, classifier, sink, &options)?
    };
    Ok(run)
}

fn store(results: &mut [Option<Obj>], index: u64, value: Obj) {
    results[index as usize] = Some(value);
}

/// Per-run options the drivers need besides the scheduler's [`Config`].
struct RunOptions<'py> {
    batch_size: usize,
    skip: HashSet<u64>,
    key_of: Option<Bound<'py, PyAny>>,
    timeout: Option<Duration>,
    /// Seconds between throttled progress reports.
    interval: f64,
    /// Someone listens to progress (the recorder has an `on_progress` callback): only then
    /// is the clock read between records to report it on time.
    wants_progress: bool,
    /// The input's length when known: result storage is sized once.
    size_hint: Option<usize>,
}

impl<'py> RunOptions<'py> {
    fn from_config(
        config: &Bound<'py, PyAny>,
        engine: &Config,
        sink: &Bound<'py, PyAny>,
        size_hint: Option<usize>,
    ) -> PyResult<Self> {
        let key_of = config.getattr("key_of")?;
        let timeout: Option<f64> = config.getattr("timeout")?.extract()?;
        Ok(Self {
            batch_size: engine.batch_size,
            skip: config.getattr("skip_batches")?.extract()?,
            key_of: (!key_of.is_none()).then_some(key_of),
            timeout: timeout.map(saturating_secs),
            interval: engine.progress_interval,
            wants_progress: wants_progress(sink)?,
            size_hint,
        })
    }

    /// Read the next batch and prepare it for `sched` (key_of runs here, outside any lock).
    fn read(&self, source: &mut Source<'py>, next_batch_index: u64) -> PyResult<Prepared> {
        let batch = source.read(self.batch_size)?;
        Prepared::new(batch, next_batch_index, &self.skip, self.key_of.as_ref())
    }
}

/// Each record's ordering key: `hash(key_of(record))`; a key that raises an Exception makes
/// the record fail (dead-lettered, unrun) rather than the run.
fn keys_of(key_of: &Bound<'_, PyAny>, batch: Vec<Obj>) -> PyResult<Vec<(Obj, Key<Obj>)>> {
    let py = key_of.py();
    let mut keyed = Vec::with_capacity(batch.len());
    for record in batch {
        let key = match key_of.call1((record.bind(py),)).and_then(|k| k.hash()) {
            Ok(hash) => Key::Is(hash as u64),
            Err(err) if err.is_instance_of::<PyException>(py) => Key::Failed(err.into_value(py).into_any()),
            Err(err) => return Err(err),
        };
        keyed.push((record, key));
    }
    Ok(keyed)
}

/// One batch of input, ready for the scheduler: keys computed (that runs Python, so it happens
/// before any lock is taken), or marked as finished by an earlier run of the job.
enum Prepared {
    Skipped(Vec<Obj>),
    Plain(Vec<Obj>),
    Keyed(Vec<(Obj, Key<Obj>)>),
}

impl Prepared {
    /// `batch_index` is the index the batch will get: the scheduler's `next_batch_index()`.
    fn new(
        batch: Vec<Obj>,
        batch_index: u64,
        skip: &HashSet<u64>,
        key_of: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(match key_of {
            _ if skip.contains(&batch_index) => Self::Skipped(batch),
            Some(key_of) => Self::Keyed(keys_of(key_of, batch)?),
            None => Self::Plain(batch),
        })
    }

    fn len(&self) -> usize {
        match self {
            Self::Skipped(batch) | Self::Plain(batch) => batch.len(),
            Self::Keyed(keyed) => keyed.len(),
        }
    }

    /// Hand the batch to the scheduler (a short one ends the input). Pure Rust: safe under the
    /// scheduler's lock. Returns a skipped batch's records, to be released outside it.
    fn add_to(self, sched: &mut PyScheduler, batch_size: usize) -> Vec<Obj> {
        let len = self.len();
        let mut skipped = Vec::new();
        if len > 0 {
            match self {
                Self::Skipped(batch) => {
                    sched.skip_batch(batch.len());
                    skipped = batch;
                }
                Self::Plain(batch) => sched.add_batch(batch.into_iter()),
                Self::Keyed(keyed) => sched.add_batch_keyed(keyed.into_iter()),
            }
        }
        if len < batch_size {
            sched.end_of_input();
        }
        skipped
    }
}

/// Call `func(record)`; with a timeout, an attempt that returns late counts as a TimeoutError
/// (a sync call cannot be interrupted, so its value is discarded instead).
#[inline]
fn call_timed<'py>(
    func: &FastCall<'py>,
    record: &Bound<'py, PyAny>,
    timeout: Option<Duration>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(limit) = timeout else { return func.call(record) };
    let started = Instant::now();
    let value = func.call(record)?;
    let took = started.elapsed();
    if took > limit {
        return Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
            "the attempt took {:.3} s, over the {:.3} s timeout; its result was discarded",
            took.as_secs_f64(),
            limit.as_secs_f64()
        )));
    }
    Ok(value)
}

/// When the inline stream looks at the clock for a due progress report. A clock read costs
/// ~25 ns, a third of a trivial callback's whole cost through the engine, so it is read every
/// `stride` records: the stride doubles (up to `MAX_STRIDE`) while records come faster than one
/// millisecond a stride, and falls back to 1 as soon as they don't. A report is then late by
/// about a millisecond of records, or by at most `MAX_STRIDE` records when callbacks suddenly
/// slow down.
struct ProgressPacer {
    stride: u32,
    countdown: u32,
    last_read: f64,
}

impl ProgressPacer {
    const MAX_STRIDE: u32 = 256;
    const FAST: f64 = 0.001;

    fn new(now: f64) -> Self {
        Self { stride: 1, countdown: 1, last_read: now }
    }

    /// Is `due` still ahead? (true without reading the clock between strides)
    #[inline]
    fn before(&mut self, clock: &MonoClock, due: f64) -> bool {
        self.countdown -= 1;
        if self.countdown > 0 {
            return true;
        }
        let now = clock.now();
        self.stride = if now - self.last_read < Self::FAST { (self.stride * 2).min(Self::MAX_STRIDE) } else { 1 };
        self.countdown = self.stride;
        self.last_read = now;
        now < due
    }
}

fn run_inline<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    func: &Bound<'py, PyAny>,
    config: Config,
    classifier: &NativeClassifier,
    sink: &Bound<'_, PyAny>,
    options: &RunOptions<'py>,
) -> PyResult<Bound<'py, RunSummary>> {
    let (timeout, interval) = (options.timeout, options.interval);
    let clock = MonoClock(Instant::now());
    let mut sched: PyScheduler = Scheduler::new(config, clock);
    let func = &FastCall::new(func);
    let mut results = OrderedResults::with_capacity(options.size_hint.unwrap_or(0).min(1 << 28));
    let wants_progress = options.wants_progress;
    let mut next_progress = interval;
    let mut pacer = ProgressPacer::new(clock.now());
    let mut drive = || -> PyResult<()> {
        loop {
            // With an on_progress callback, the stream pauses once a report is due; without
            // one, it never looks at the clock.
            let due = next_progress;
            let streamed =
                sched.stream(STREAM_LIMIT, |index, record| match call_timed(func, record.bind(py), timeout) {
                    Ok(value) => {
                        results.push(index, value.unbind());
                        Ok(!wants_progress || pacer.before(&clock, due))
                    }
                    Err(err) => Err(failure_of(py, err, classifier, sink)),
                });
            match streamed {
                Streamed::Paused(0) => match sched.next_work() {
                    Next::Run(work) => match call_timed(func, work.record.bind(py), timeout) {
                        Ok(value) => {
                            results.push(work.index, value.unbind());
                            drop(sched.succeed(work));
                        }
                        Err(err) => {
                            let failure = failure_of(py, err, classifier, sink);
                            report_failure(py, &mut sched, work, failure)?;
                        }
                    },
                    Next::Feed => {
                        let batch = options.read(source, sched.next_batch_index())?;
                        drop(batch.add_to(&mut sched, options.batch_size));
                    }
                    Next::Wait(until) => nap(py, &clock, until)?,
                    Next::Done => return Ok(()),
                },
                Streamed::Paused(_) => {}
                Streamed::Failed(work, failure) => report_failure(py, &mut sched, work, failure)?,
            }
            if sched.has_events() {
                let events = sched.take_events();
                deliver(py, sink, events, &sched.counters())?;
                next_progress = clock.now() + interval;
            } else if wants_progress && clock.now() >= next_progress {
                progress(py, sink, &sched.counters())?;
                next_progress = clock.now() + interval;
            }
            if sched.has_released() {
                drop(sched.take_released());
            }
        }
    };
    let outcome = drive();
    finish(py, &mut sched, sink, outcome, Vec::new())?;
    summary(py, &sched, results.finish(py)?)
}

/// However the run ended, report the unfinished batches (what was dead-lettered reaches the
/// DLQ) and release what is left. An error stops the run and is returned, unless the flush
/// fails too (see below). `undelivered`: events the driver took from the scheduler but could
/// not hand over before the run stopped.
fn finish(
    py: Python<'_>,
    sched: &mut PyScheduler,
    sink: &Bound<'_, PyAny>,
    outcome: PyResult<()>,
    mut undelivered: Vec<Event<Obj, Obj>>,
) -> PyResult<()> {
    if outcome.is_err() {
        sched.interrupt();
    }
    sched.close();
    undelivered.extend(sched.take_events());
    let flushed = deliver(py, sink, undelivered, &sched.counters());
    drop(sched.take_released());
    match (outcome, flushed) {
        // The flush failed too (the DLQ could not store what was dead-lettered): that error
        // is raised, with the one that stopped the run as its context, as a Python `finally`
        // would (and as the reference engine does) — losing dead letters must not be silent.
        (Err(stopped), Err(flush)) => {
            // The recorder raises its first DLQ error again for every later batch: that one
            // is no new error, and must not become its own context.
            if !flush.value(py).is(stopped.value(py)) {
                flush.value(py).setattr(intern!(py, "__context__"), stopped.into_value(py))?;
            }
            Err(flush)
        }
        (outcome, flushed) => outcome.and(flushed),
    }
}

// ------------------------------------------------------------------------ concurrency N

struct State {
    sched: PyScheduler,
    results: Vec<Option<Obj>>,
    live_workers: usize,
    idle_workers: usize,
    /// Bumped whenever a waiting thread may have something new to do.
    version: u64,
    error: Option<PyErr>,
}

struct Shared {
    state: Mutex<State>,
    work_ready: Condvar,
    coordinator: Condvar,
}

struct WorkerContext {
    shared: Arc<Shared>,
    func: Obj,
    sink: Obj,
    classifier: Arc<NativeClassifier>,
    clock: MonoClock,
    timeout: Option<Duration>,
    /// The worker took an attempt from the scheduler and has not handed it back yet: if it
    /// dies now, the scheduler must stop counting that attempt in flight, or the run would
    /// wait for it forever.
    holding: Cell<bool>,
}

/// Record index at which the next threaded worker panics after its call (`u64::MAX`: never).
/// Only `_panic_in_worker_for_test` arms it: it proves a dead worker cannot hang a run.
static PANIC_AFTER_RECORD: AtomicU64 = AtomicU64::new(u64::MAX);

fn run_threaded<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    func: &Bound<'_, PyAny>,
    config: Config,
    classifier: NativeClassifier,
    sink: &Bound<'_, PyAny>,
    options: &RunOptions<'py>,
) -> PyResult<Bound<'py, RunSummary>> {
    let workers = config.concurrency;
    // Workers finish out of order: each success goes to its record's slot.
    let results: Vec<Option<Obj>> = Vec::with_capacity(options.size_hint.unwrap_or(0).min(1 << 28));
    let clock = MonoClock(Instant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            sched: Scheduler::new(config, clock),
            results,
            live_workers: workers,
            idle_workers: 0,
            version: 0,
            error: None,
        }),
        work_ready: Condvar::new(),
        coordinator: Condvar::new(),
    });
    let classifier = Arc::new(classifier);
    let runtime = runtime()?;
    for _ in 0..workers {
        let ctx = WorkerContext {
            shared: Arc::clone(&shared),
            func: func.clone().unbind(),
            sink: sink.clone().unbind(),
            classifier: Arc::clone(&classifier),
            clock,
            timeout: options.timeout,
            holding: Cell::new(false),
        };
        runtime.spawn_blocking(move || worker(ctx));
    }
    let mut undelivered = Vec::new();
    let outcome = coordinate(py, source, sink, &shared, clock, options, &mut undelivered);
    // The workers are gone (coordinate waits for them); the state is ours alone now.
    let mut state = shared.state.lock();
    let error = state.error.take();
    let results = std::mem::take(&mut state.results);
    let outcome = match (outcome, error) {
        (Err(err), _) | (Ok(()), Some(err)) => Err(err),
        (Ok(()), None) => Ok(()),
    };
    finish(py, &mut state.sched, sink, outcome, undelivered)?;
    let count = state.sched.succeeded() as usize;
    summary(py, &state.sched, list_of(py, results.into_iter().flatten(), count)?)
}

/// The calling thread: feeds input, delivers events and progress, waits for the workers.
///
/// Events taken from the scheduler stay in `undelivered` until the recorder has them: when
/// reading the input fails first, they go out on the next turn (or in `finish`).
fn coordinate<'py>(
    py: Python<'py>,
    source: &mut Source<'py>,
    sink: &Bound<'_, PyAny>,
    shared: &Shared,
    clock: MonoClock,
    options: &RunOptions<'py>,
    undelivered: &mut Vec<Event<Obj, Obj>>,
) -> PyResult<()> {
    let interval = options.interval;
    let mut next_progress = interval;
    let mut failure: Option<PyErr> = None;
    loop {
        let (wants, counters, finished, released, seen) = {
            let mut st = shared.state.lock();
            let wants = failure.is_none() && st.sched.wants_input();
            if st.sched.has_events() {
                undelivered.append(&mut st.sched.take_events());
            }
            let released = st.sched.take_released();
            (wants, st.sched.counters(), st.live_workers == 0, released, st.version)
        };
        drop(released);
        let step = (|| -> PyResult<()> {
            if wants {
                // Only this thread feeds, so the next batch index cannot change in between.
                let next_batch = shared.state.lock().sched.next_batch_index();
                let batch = options.read(source, next_batch)?;
                let mut st = shared.state.lock();
                let State { sched, results, .. } = &mut *st;
                let skipped = batch.add_to(sched, options.batch_size);
                results.resize_with(sched.records_read() as usize, || None);
                drop(st);
                drop(skipped);
                let mut st = shared.state.lock();
                st.version += 1;
                drop(st);
                shared.work_ready.notify_all();
            }
            if !undelivered.is_empty() {
                deliver(py, sink, std::mem::take(undelivered), &counters)?;
                next_progress = clock.now() + interval;
            } else if clock.now() >= next_progress {
                progress(py, sink, &counters)?;
                next_progress = clock.now() + interval;
            }
            Ok(())
        })();
        if let Err(err) = step {
            stop_workers(shared);
            failure.get_or_insert(err);
        }
        if finished {
            return failure.map_or(Ok(()), Err);
        }
        if !wants {
            py.detach(|| {
                let mut st = shared.state.lock();
                if st.version == seen && !st.sched.has_events() && !st.sched.wants_input() && st.live_workers > 0 {
                    shared.coordinator.wait_for(&mut st, MAX_WAIT);
                }
            });
            if let Err(err) = py.check_signals() {
                stop_workers(shared);
                failure.get_or_insert(err);
            }
        }
    }
}

fn stop_workers(shared: &Shared) {
    let mut st = shared.state.lock();
    st.sched.interrupt();
    st.version += 1;
    drop(st);
    shared.work_ready.notify_all();
}

fn worker(ctx: WorkerContext) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| Python::attach(|py| worker_loop(py, &ctx))));
    let mut st = ctx.shared.state.lock();
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        if ctx.holding.replace(false) {
            // Its record died with it: unfinished, so the run reports it pending.
            st.sched.lose_in_flight();
        }
        st.error.get_or_insert_with(|| {
            PyRuntimeError::new_err(format!(
                "batchguard: a worker thread panicked ({message}); the run stopped, what was \
                 dead-lettered is in the DLQ and unfinished records are pending. This is a \
                 batchguard bug: please report it"
            ))
        });
        st.sched.interrupt();
    }
    st.live_workers -= 1;
    st.version += 1;
    drop(st);
    ctx.shared.work_ready.notify_all();
    ctx.shared.coordinator.notify_one();
    // The context's Python references are released by PyO3 once a thread holds the GIL.
    drop(ctx);
}

fn worker_loop(py: Python<'_>, ctx: &WorkerContext) {
    let shared = &*ctx.shared;
    let func = &FastCall::new(ctx.func.bind(py));
    let sink = ctx.sink.bind(py);
    loop {
        let mut st = shared.state.lock();
        let work: PyWork = match st.sched.next_work() {
            Next::Run(work) => {
                ctx.holding.set(true);
                work
            }
            Next::Done => return,
            Next::Feed => {
                let seen = st.version;
                park(py, shared, st, seen, None, &ctx.clock);
                continue;
            }
            Next::Wait(until) => {
                let seen = st.version;
                park(py, shared, st, seen, until, &ctx.clock);
                continue;
            }
        };
        // Read under the lock now, acted on outside it: stripping a traceback frees frames,
        // and a frame's objects may run `__del__`, which must never run under the lock.
        let keep_traceback = st.sched.keep_tracebacks();
        drop(st);
        let outcome = match call_timed(func, work.record.bind(py), ctx.timeout) {
            Ok(value) => Outcome::Value(value.unbind()),
            Err(err) => {
                let failure = failure_of(py, err, &ctx.classifier, sink);
                if !failure.interrupted && !keep_traceback {
                    strip_traceback(failure.error.bind(py));
                }
                Outcome::Failed(failure)
            }
        };
        if work.index == PANIC_AFTER_RECORD.load(Ordering::Relaxed) {
            PANIC_AFTER_RECORD.store(u64::MAX, Ordering::Relaxed);
            panic!("_panic_in_worker_for_test: record {}", work.index);
        }
        let mut st = shared.state.lock();
        ctx.holding.set(false);
        let mut done: Option<PyWork> = None;
        let mut surplus_error: Option<PyErr> = None;
        match outcome {
            Outcome::Value(value) => {
                store(&mut st.results, work.index, value);
                done = Some(st.sched.succeed(work));
            }
            Outcome::Failed(failure) if failure.interrupted => {
                st.sched.abandon(work);
                st.sched.interrupt();
                let err = PyErr::from_value(failure.error.into_bound(py));
                if st.error.is_none() {
                    st.error = Some(err);
                } else {
                    surplus_error = Some(err); // dropped after the lock is released
                }
            }
            Outcome::Failed(failure) => {
                st.sched.fail(work, failure.class, failure.error, failure.retry_after, failure.wall);
            }
        }
        let wake_coordinator = st.sched.has_events() || st.sched.wants_input() || st.sched.stop_reason().is_some();
        let wake_workers = st.idle_workers > 0;
        if wake_workers {
            st.version += 1;
        }
        let released = if st.sched.has_released() { st.sched.take_released() } else { Vec::new() };
        drop(st);
        if wake_coordinator {
            shared.coordinator.notify_one();
        }
        if wake_workers {
            shared.work_ready.notify_all();
        }
        drop(released);
        drop(done);
        drop(surplus_error);
    }
}

/// Wait, without the GIL, until the state changes, `until` passes, or MAX_WAIT elapses. The
/// worker counts itself idle before it lets the lock go, so a completion in between sees it
/// and bumps `version` (no missed wakeup).
fn park(
    py: Python<'_>,
    shared: &Shared,
    mut st: parking_lot::MutexGuard<'_, State>,
    seen: u64,
    until: Option<f64>,
    clock: &MonoClock,
) {
    st.idle_workers += 1;
    drop(st);
    let wait = wait_for(clock, until);
    py.detach(|| {
        let mut st = shared.state.lock();
        if st.version == seen {
            shared.work_ready.wait_for(&mut st, wait);
        }
        st.idle_workers -= 1;
    });
}

// ------------------------------------------------------------------------ small helpers

/// The delays `RetryPolicy.schedule` promises, computed by the engine that waits them.
#[pyfunction]
#[pyo3(signature = (max_attempts, base_delay, multiplier, max_delay, jitter, seed, record_index, n))]
#[allow(clippy::too_many_arguments)]
pub fn backoff_schedule(
    max_attempts: u32,
    base_delay: f64,
    multiplier: f64,
    max_delay: f64,
    jitter: &str,
    seed: u64,
    record_index: u64,
    n: usize,
) -> PyResult<Vec<f64>> {
    // The list is built whole: a huge n must be an error, not an allocation that panics or aborts.
    const MAX_SCHEDULE: usize = 1 << 20;
    if n > MAX_SCHEDULE {
        return Err(ConfigError::new_err(format!("n must be <= {MAX_SCHEDULE} delays, got {n}")));
    }
    let policy = RetryPolicy::new(max_attempts, base_delay, multiplier, max_delay, jitter.parse()?)?;
    Ok(policy.schedule(seed, record_index, n))
}

/// The seed's batch-size heuristic (see `batchguard.calculate_batch_size`).
#[pyfunction]
pub fn calculate_batch_size(total_items: u64, max_batch_size: u64) -> PyResult<u64> {
    if max_batch_size < 1 {
        return Err(ConfigError::new_err(format!("max_batch_size must be >= 1, got {max_batch_size}")));
    }
    Ok(crate::partition::calculate_batch_size(total_items, max_batch_size))
}

/// Panics inside the extension: proves a Rust panic reaches Python as an exception.
#[pyfunction]
pub fn _panic_for_test(message: &str) {
    panic!("{message}");
}

/// Makes the threaded worker that runs `record_index` panic once its call has returned, while
/// the record is still in flight: proves a dead worker cannot hang a run.
#[pyfunction]
pub fn _panic_in_worker_for_test(record_index: u64) {
    PANIC_AFTER_RECORD.store(record_index, Ordering::Relaxed);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(backoff_schedule, m)?)?;
    m.add_function(wrap_pyfunction!(calculate_batch_size, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_in_worker_for_test, m)?)?;
    m.add_class::<events::RunSummary>()?;
    m.add_class::<events::Counters>()?;
    m.add_class::<events::BatchEvent>()?;
    m.add_class::<events::BreakerEvent>()?;
    m.add_class::<events::DeadRecord>()?;
    m.add_class::<events::FailedAttempt>()?;
    m.add_class::<events::DeadRecords>()?;
    m.add_class::<asyncio::AsyncRun>()?;
    m.add("MAX_CONCURRENCY", crate::MAX_CONCURRENCY)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_becomes_a_duration_without_panicking() {
        assert_eq!(saturating_secs(1.5), Duration::from_millis(1500));
        for huge in [1e20, 1e300, f64::MAX, f64::INFINITY] {
            assert_eq!(saturating_secs(huge), Duration::MAX, "{huge}");
        }
        for nothing in [0.0, -0.0, -1.0, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(saturating_secs(nothing), Duration::ZERO, "{nothing}");
        }
    }

    #[test]
    fn a_far_or_odd_deadline_is_a_short_nap() {
        let clock = MonoClock(Instant::now());
        for until in [Some(1e300), Some(f64::INFINITY), Some(f64::NAN), None] {
            assert_eq!(wait_for(&clock, until), MAX_WAIT, "{until:?}");
        }
        assert_eq!(wait_for(&clock, Some(-5.0)), Duration::ZERO, "a deadline in the past");
    }

    #[test]
    fn fast_records_read_the_clock_rarely_and_slow_ones_every_time() {
        let clock = MonoClock(Instant::now());
        let mut pacer = ProgressPacer::new(clock.now());
        // A deadline already past: every clock read says so (false); between reads, true.
        let reads = (0..20_000).filter(|_| !pacer.before(&clock, -1.0)).count();
        assert!(reads < 20_000 / 16, "{reads} clock reads for 20k fast records");
        assert!(reads >= 20_000 / ProgressPacer::MAX_STRIDE as usize, "the stride is capped: {reads}");
        // Records slow down: the next read (within a stride) drops the stride to 1...
        std::thread::sleep(Duration::from_millis(2));
        let until_read = (0..=ProgressPacer::MAX_STRIDE).take_while(|_| pacer.before(&clock, -1.0)).count();
        assert!(until_read < ProgressPacer::MAX_STRIDE as usize);
        // ...and from then on every slow record reads the clock.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(!pacer.before(&clock, -1.0), "a slow record reads the clock each time");
        }
    }
}
