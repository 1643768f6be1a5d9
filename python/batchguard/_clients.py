"""What batchguard knows about the client libraries people call from a batch callback.

The default :class:`~batchguard.Classifier` recognises their errors without importing any of
them: by the module and qualified name of a class in the exception's MRO
(``"requests.exceptions.ConnectionError"``), and, for the few errors whose meaning is in the
instance rather than in the type (an AWS error code, a gRPC status, the driver error an
SQLAlchemy wrapper holds, a certificate that did not verify), by a named *inspector* that reads
it. An inspector runs only for the types that need one; every other type keeps its per-type
cached verdict.

Both engines use these tables: the native engine reads ``AWS_ERROR_CODES``,
``GRPC_STATUS_CODES`` and ``TLS_VERIFICATION_MARKER`` when a run starts, and implements each
inspector the way this module does (the reference engine runs the functions below).

``Retry-After`` lives here too: an HTTP client error carries it in its response headers, in
delta-seconds or as an HTTP-date.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Callable
from typing import Any

from ._error_class import ErrorClass, class_of_http_status, qualified_name, status_value

__all__ = [
    "AWS_ERROR_CODES",
    "CLIENT_INSPECT_RULES",
    "CLIENT_NAME_RULES",
    "GRPC_STATUS_CODES",
    "INSPECTORS",
    "INSPECTOR_NAMES",
    "MAX_WRAPPED_DEPTH",
    "TLS_VERIFICATION_MARKER",
    "WRAPPED",
    "http_date_delay",
    "parse_retry_after",
    "retry_after_of",
]

_R, _T, _P = ErrorClass.RECOVERABLE, ErrorClass.TRANSIENT, ErrorClass.PERMANENT

# Type-level knowledge, "module.qualname" -> class; a rule covers the class and its subclasses
# (the most specific rule in the MRO wins). Base classes of the libraries' HTTP *status* errors
# (requests.RequestException, httpx.HTTPError, aiohttp.ClientError) deliberately have no rule:
# those errors carry a status, and the HTTP status rule decides them.
CLIENT_NAME_RULES: tuple[tuple[str, ErrorClass], ...] = (
    # requests: refused, reset, DNS failure, proxy, ConnectTimeout (a ConnectionError too)
    ("requests.exceptions.ConnectionError", _R),
    ("requests.exceptions.Timeout", _R),  # ReadTimeout
    ("requests.exceptions.ChunkedEncodingError", _R),  # the body was cut off mid-stream
    ("requests.exceptions.RetryError", _R),  # urllib3's own retries ran out
    # urllib3 (TimeoutError covers ConnectTimeoutError, ReadTimeoutError, NewConnectionError and
    # NameResolutionError)
    ("urllib3.exceptions.TimeoutError", _R),
    ("urllib3.exceptions.ProtocolError", _R),  # connection aborted or reset mid-response
    ("urllib3.exceptions.MaxRetryError", _R),
    ("urllib3.exceptions.IncompleteRead", _R),
    ("urllib3.exceptions.ProxyError", _R),
    # httpx: TransportError's families, except the caller's own mistakes (LocalProtocolError,
    # UnsupportedProtocol); HTTPStatusError carries response.status_code
    ("httpx.TimeoutException", _R),  # ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout
    ("httpx.NetworkError", _R),  # ConnectError, ReadError, WriteError, CloseError
    ("httpx.RemoteProtocolError", _R),  # the server hung up without an answer
    ("httpx.ProxyError", _R),
    # aiohttp: ClientResponseError carries .status
    ("aiohttp.client_exceptions.ClientConnectionError", _R),  # connector, OS, disconnect, timeouts
    ("aiohttp.client_exceptions.ClientPayloadError", _R),  # the body was cut off
    ("aiohttp.client_exceptions.ClientConnectorCertificateError", _P),
    ("aiohttp.client_exceptions.ServerFingerprintMismatch", _P),
    # botocore (ClientError: see the aws_error_code inspector); the same families botocore's own
    # retry handler treats as transient
    ("botocore.exceptions.ConnectionError", _R),  # EndpointConnectionError, ConnectTimeoutError
    ("botocore.exceptions.HTTPClientError", _R),  # ReadTimeoutError, ConnectionClosedError
    # psycopg 3 and psycopg2: a lost or refused connection, a cancelled statement, a server
    # shutting down are worth another try later; a serialization failure (40001) or a deadlock
    # (40P01) is another transaction's doing, retried at once; IntegrityError is the default
    # rule's (PERMANENT, by name, for every driver)
    ("psycopg.OperationalError", _R),
    ("psycopg.errors.SerializationFailure", _T),
    ("psycopg.errors.DeadlockDetected", _T),
    ("psycopg2.OperationalError", _R),
    ("psycopg2.errors.SerializationFailure", _T),
    ("psycopg2.errors.DeadlockDetected", _T),
    # SQLAlchemy's wrappers (the wrapped driver error decides first: wrapped_dbapi_error)
    ("sqlalchemy.exc.OperationalError", _R),
    ("sqlalchemy.exc.DisconnectionError", _R),
    ("sqlalchemy.exc.TimeoutError", _R),  # the pool had no connection to give in time
    # redis-py (BusyLoadingError and MaxConnectionsError are ConnectionErrors; a wrong password
    # is one too, and no retry fixes it)
    ("redis.exceptions.ConnectionError", _R),
    ("redis.exceptions.TimeoutError", _R),
    ("redis.exceptions.AuthenticationError", _P),
    ("redis.exceptions.AuthorizationError", _P),
    ("redis.exceptions.ReadOnlyError", _R),  # a replica is being promoted (failover)
    ("redis.exceptions.TryAgainError", _R),  # a cluster slot is migrating
    ("redis.exceptions.ClusterDownError", _R),
    # ssl: a handshake cut short is the network's doing; a certificate that does not verify is
    # a configuration problem no retry fixes
    ("ssl.SSLError", _R),
    ("ssl.SSLCertVerificationError", _P),
    # socket: a name that does not resolve is as often DNS having a bad moment as a typo; it is
    # retried with backoff, as requests and httpx do with the ConnectionError they wrap it in.
    # (socket.timeout is TimeoutError, a default rule.)
    ("socket.gaierror", _R),
    ("socket.herror", _R),
)

# Instance-level knowledge, "module.qualname" -> inspector. Where a class in the MRO has both
# an inspector and a rule, the inspector is asked first and the rule is its fallback.
CLIENT_INSPECT_RULES: tuple[tuple[str, str], ...] = (
    ("botocore.exceptions.ClientError", "aws_error_code"),
    ("grpc.RpcError", "grpc_status"),
    ("sqlalchemy.exc.DBAPIError", "wrapped_dbapi_error"),
    ("sqlalchemy.exc.OperationalError", "wrapped_dbapi_error"),
    ("requests.exceptions.SSLError", "tls_verification"),
    ("urllib3.exceptions.SSLError", "tls_verification"),
    ("httpx.ConnectError", "tls_verification"),
    ("aiohttp.client_exceptions.ClientSSLError", "tls_verification"),
    ("botocore.exceptions.SSLError", "tls_verification"),
)

# AWS error codes (``exc.response["Error"]["Code"]``) that mean "slow down" or "try again":
# botocore's own throttled and transient lists (botocore/retries/standard.py), and the 5xx
# codes services send. Any other code is decided by the response's HTTP status.
AWS_ERROR_CODES: dict[str, ErrorClass] = {code: _R for code in (
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
)}

# gRPC status codes (``exc.code().name``): the ones gRPC's retry guidance calls retryable wait
# and retry; ABORTED is a concurrency conflict (like a serialization failure), retried at once;
# the rest describe the request or the caller, and no retry changes them.
GRPC_STATUS_CODES: dict[str, ErrorClass] = {
    "UNAVAILABLE": _R,
    "DEADLINE_EXCEEDED": _R,
    "RESOURCE_EXHAUSTED": _R,
    "ABORTED": _T,
    **{name: _P for name in (
        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
        "DATA_LOSS", "UNAUTHENTICATED",
    )},
}

# OpenSSL's reason code for a certificate that did not verify (bad chain, expired, wrong host):
# every client library that wraps the ssl error keeps it in its message.
TLS_VERIFICATION_MARKER = "CERTIFICATE_VERIFY_FAILED"

# Each SQLAlchemy wrapper holds the driver's error; a wrapper of a wrapper is followed this far.
MAX_WRAPPED_DEPTH = 4


# ------------------------------------------------------------------------------- inspectors


def aws_error_code(exc: BaseException) -> tuple[ErrorClass, str] | None:
    """botocore's ClientError: its error code, else the HTTP status in its response metadata."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, dict) else None
    if isinstance(code, str) and code in AWS_ERROR_CODES:
        return AWS_ERROR_CODES[code], f"AWS error code {code}"
    metadata = response.get("ResponseMetadata")
    status = status_value(metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None)
    verdict = class_of_http_status(status)
    if verdict is None:
        return None
    return verdict, f"AWS error code {code} with HTTP status {status}"


def grpc_status(exc: BaseException) -> tuple[ErrorClass, str] | None:
    """A gRPC RpcError: the name of the status its ``code()`` returns."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    name = getattr(code(), "name", None)
    if not isinstance(name, str) or name not in GRPC_STATUS_CODES:
        return None
    return GRPC_STATUS_CODES[name], f"gRPC status {name}"


def tls_verification(exc: BaseException) -> tuple[ErrorClass, str] | None:
    """A TLS error that a client library wrapped: PERMANENT when a certificate did not verify."""
    if TLS_VERIFICATION_MARKER in str(exc):
        return _P, f"TLS certificate verification failed ({TLS_VERIFICATION_MARKER})"
    return None


Resolve = Callable[[BaseException, int], "tuple[ErrorClass, str] | None"]


def wrapped_dbapi_error(exc: BaseException, resolve: Resolve, depth: int) -> tuple[ErrorClass, str] | None:
    """An SQLAlchemy DBAPIError: the driver error it wraps (``.orig``) decides, by the same
    classifier's type rules and inspectors; else a connection SQLAlchemy invalidated is
    RECOVERABLE."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and orig is not exc and depth < MAX_WRAPPED_DEPTH:
        verdict = resolve(orig, depth + 1)
        if verdict is not None:
            cls, why = verdict
            return cls, f"wrapped {qualified_name(type(orig))}: {why}"
    if getattr(exc, "connection_invalidated", False) is True:
        return _R, "the connection was invalidated"
    return None


# Inspectors that only need the exception; wrapped_dbapi_error also needs the classifier.
INSPECTORS: dict[str, Callable[[BaseException], tuple[ErrorClass, str] | None]] = {
    "aws_error_code": aws_error_code,
    "grpc_status": grpc_status,
    "tls_verification": tls_verification,
}
WRAPPED = "wrapped_dbapi_error"
INSPECTOR_NAMES = (*INSPECTORS, WRAPPED)


# ------------------------------------------------------------------------------- Retry-After

_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def retry_after_of(exc: BaseException, now: float) -> float | None:
    """The wait ``exc`` asks for, in seconds; None when it asks for none. The engines cap it
    at ``RetryPolicy.max_retry_after`` (default ``max_delay``).

    A numeric ``retry_after`` attribute comes first; else a ``Retry-After`` header, in
    ``exc.headers`` (aiohttp) or the response's headers (requests, httpx; botocore's response
    metadata). Only a finite, non-negative number of seconds counts: an infinite, NaN, negative
    or unreadable value (or an int beyond a float's range) is ignored. ``now``
    (``time.time()``) dates an HTTP-date.
    """
    value = _numeric_retry_after(exc)
    if value is None:
        header = _retry_after_header(exc)
        if header is not None:
            value = parse_retry_after(header, now)
    return value


def _numeric_retry_after(exc: BaseException) -> float | None:
    try:
        value = getattr(exc, "retry_after", None)
    except Exception:  # noqa: BLE001 - a broken property is no reason to lose the record
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except Exception:  # noqa: BLE001 - an int beyond a float's range, a subclass whose __float__ raises
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _retry_after_header(exc: BaseException) -> str | None:
    """The ``Retry-After`` header an HTTP client error carries, if any. Reading it never fails
    the record: an object that breaks on the way is as good as no header."""
    try:
        for headers in _header_holders(exc):
            if headers is None:
                continue
            value = headers.get("Retry-After")
            if value is None:
                value = headers.get("retry-after")  # a plain dict (botocore lowercases its keys)
            if isinstance(value, str):
                return value
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    return None


def _header_holders(exc: BaseException) -> list[Any]:
    holders = [getattr(exc, "headers", None)]
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        metadata = response.get("ResponseMetadata")
        holders.append(metadata.get("HTTPHeaders") if isinstance(metadata, dict) else None)
    elif response is not None:
        holders.append(getattr(response, "headers", None))
    return holders


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait for a ``Retry-After`` value: delta-seconds (``"120"``; a decimal
    fraction is accepted) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, relative to
    ``now``; a date in the past is 0). Anything else is None."""
    text = value.strip(" \t")
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None  # 400 digits are no number of seconds
    return http_date_delay(text, now)


def http_date_delay(value: str, now: float) -> float | None:
    """Seconds from ``now`` (``time.time()``) until the HTTP-date ``value`` (0 when it has
    passed), or None when ``value`` is not a date. A date without a zone is UTC (RFC 9110)."""
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now)
    except Exception:  # noqa: BLE001 - a header that cannot be read is no header, never a lost record
        return None
