"""POSTing alerts as JSON: :class:`Webhook` (what to call) and :class:`WebhookSender` (one
run's background thread that calls it, with retries).

The URL of a webhook usually carries its credential (Slack, Teams and Discord put a token in
the path, others in the query), so it is never shown whole: :func:`redact_webhook` keeps the
scheme, host and port, and every message, ``repr`` and saved setting goes through it.
"""

from __future__ import annotations

import base64
import collections
import http.client
import importlib.metadata
import json
import logging
import math
import re
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from .._checks import check_count, check_duration
from ..errors import ConfigError, ConfigTypeError

__all__ = ["Webhook", "WebhookError", "WebhookSender", "redact_webhook"]

logger = logging.getLogger("batchguard")

_USER_AGENT: Final = f"batchguard/{importlib.metadata.version('batchguard')}"
MAX_QUEUED: Final = 1000
"""Notices a sender holds at once; more are dropped (and counted): a receiver that cannot keep up
with a few notices per rule and episode is down, and holding more would only grow memory."""
DRAIN_QUIET_S: Final = 1.0
"""How long the end-of-run drain waits before it logs that it is waiting."""
MAX_RETRY_AFTER_S: Final = 60.0
"""The longest ``Retry-After`` of a 429 or 503 a sender waits: longer, and the notice is stale."""
_URL_CHARS: Final = re.compile(r"[!-~]+")
"""What a request line can carry: printable ASCII, no space (anything else percent-encoded)."""
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110's token)."""
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
"""What http.client sends as a header value: Latin-1 text without CR, LF or other controls."""


def redact_webhook(url: str) -> str:
    """``url`` with its credential hidden: the scheme, host and port, then ``/***`` for any path
    or query (where webhook tokens live) and ``***@`` for any user info.

    >>> redact_webhook("https://hooks.slack.com/services/T0/B0/XXXX")
    'https://hooks.slack.com/***'
    >>> redact_webhook("http://user:pw@127.0.0.1:8080/")
    'http://***@127.0.0.1:8080/'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    userinfo = "***@" if "@" in parts.netloc else ""
    rest = "/***" if parts.path.strip("/") or parts.query or parts.fragment else "/"
    return f"{parts.scheme}://{userinfo}{host}{port}{rest}"


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its user info, and that user info as an ``Authorization: Basic`` header
    (urllib would take ``user:pw@host`` for the host's name and fail every request)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=hostport)), {"Authorization": f"Basic {token}"}


class WebhookError(Exception):
    """One POST that did not succeed: ``retryable`` says whether trying again may help (a
    connection error, a timeout, 408, 429 or a 5xx), ``retry_after`` what the receiver asked."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 connection: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.connection = connection
        """The receiver could not be reached at all (refused, unknown host): it is down."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib follows a 301/302/303 of a POST as a GET without the body: the alert would be lost
    # while the call "succeeded". A redirect is an answer the sender reports instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirects())  # honours the *_proxy variables


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # the HTTP-date form: the backoff decides
    return None if seconds is None or not math.isfinite(seconds) or seconds < 0 else seconds


class Webhook:
    """POST each alert's JSON (:meth:`batchguard.alerts.Alert.to_dict`) to ``url``.

    ``headers`` are added to each request (an ``Authorization`` header, say; user info in the
    URL, ``https://user:password@host/...``, is sent as Basic authentication unless ``headers``
    has its own ``Authorization``); ``timeout``
    bounds one request in seconds. A failed POST (no connection, a timeout, 408, 429, a 5xx) is
    tried again up to ``retries`` times, ``backoff_s`` after the first failure and twice as long
    after each next one (or the receiver's ``Retry-After``, up to 60 s); a 3xx or another 4xx is
    not retried. It all happens on a thread of its own: the run never waits for a receiver.
    When the run ends, notices not delivered yet get ``drain_s`` more seconds (but one attempt
    each, at once, when the receiver cannot be reached at all); what is still undelivered then
    is logged and counted in ``report.alert_failures``. That drain, and a request still in
    flight (up to ``timeout``), is the one wait a receiver can cause: at the run's end, on the
    thread that called ``run_batches`` (for ``arun_batches``, the event loop's).

    Delivery is at least once: a POST retried after a timeout may have arrived the first time
    (``run_id``, ``rule``, ``name``, ``episode`` and ``state`` identify a notice).

    The URL is a secret (webhook tokens live in it): ``repr`` and every log line show it
    through :func:`redact_webhook`.
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0,
                 retries: int = 3, backoff_s: float = 0.5, drain_s: float = 2.0) -> None:
        if not isinstance(url, str):
            raise ConfigTypeError(f"Webhook.url must be a str, got {type(url).__name__}")
        try:
            parts = urlsplit(url.strip())
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:  # a bad port, an unclosed "[" of an IPv6 literal
            usable = False
        if not usable:
            raise ConfigError(f"Webhook.url must be an http:// or https:// URL with a host, got "
                              f"{redact_webhook(url)!r}")
        # Checked here rather than failing at each POST: http.client's error would quote the
        # path (the token) into the log, and every notice of the run would be lost.
        if not _URL_CHARS.fullmatch(url.strip()):
            raise ConfigError(f"Webhook.url may hold only printable ASCII without spaces (percent-encode "
                              f"the rest, e.g. with urllib.parse.quote): {redact_webhook(url)!r} does not")
        if headers is not None and not (isinstance(headers, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise ConfigTypeError(f"Webhook.headers must be a mapping of str to str, got {type(headers).__name__}")
        for name, value in (headers or {}).items():
            # The value is often a credential (Authorization): named by its header, never shown.
            if not _HEADER_NAME.fullmatch(name):
                raise ConfigError(f"Webhook.headers: {name[:40]!r} is not an HTTP header name (letters, "
                                  f"digits and !#$%&'*+-.^_`|~ only)")
            if not _HEADER_VALUE.fullmatch(value):
                raise ConfigError(f"Webhook.headers: the value of {name!r} holds a line break, a control "
                                  f"character or a character outside Latin-1, which no request can carry")
        # Set once, here, past the checks: a field changed later would skip them.
        setattr_ = super().__setattr__
        setattr_("_url", url.strip())
        setattr_("_headers", dict(headers or {}))
        target, auth = _split_credentials(self._url)
        setattr_("_target", target)
        setattr_("_auth", auth)
        setattr_("timeout", check_duration("Webhook.timeout", timeout, positive=True))
        setattr_("retries", check_count("Webhook.retries", retries, minimum=0, maximum=100))
        setattr_("backoff_s", check_duration("Webhook.backoff_s", backoff_s))
        setattr_("drain_s", check_duration("Webhook.drain_s", drain_s))

    timeout: float
    retries: int
    backoff_s: float
    drain_s: float
    _url: str
    _target: str
    _auth: dict[str, str]
    _headers: dict[str, str]

    @property
    def headers(self) -> Mapping[str, str]:
        """Added to each request (a read-only view)."""
        return types.MappingProxyType(self._headers)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Webhook is read-only: make a new one to change {name}")

    @property
    def url(self) -> str:
        """The URL itself (a secret: show :attr:`shown_url`)."""
        return self._url

    @property
    def shown_url(self) -> str:
        """The URL as it may be printed or logged."""
        return redact_webhook(self._url)

    def __repr__(self) -> str:
        return f"Webhook({self.shown_url!r}, timeout={self.timeout:g}, retries={self.retries})"

    def _scrubbed(self, text: str) -> str:
        """``text`` (an error's message) without the URL, its path and query, or a header's
        value: what a library's error may quote."""
        parts = urlsplit(self._url)
        text = text.replace(self._url, self.shown_url)
        for secret in (parts.path + (f"?{parts.query}" if parts.query else ""), parts.path, parts.query,
                       parts.netloc, *self.headers.values(), *self._auth.values()):
            if len(secret) > 1:  # a bare "/" hides nothing and would garble the message
                text = text.replace(secret, "***")
        return text

    def post(self, payload: Mapping[str, Any]) -> None:
        """One POST of ``payload`` as JSON; raises :class:`WebhookError` unless it got a 2xx."""
        body = json.dumps(payload, default=str, allow_nan=False).encode()
        request = urllib.request.Request(self._target, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": _USER_AGENT, **self._auth, **self.headers})
        try:
            # The status is the answer: the body is never read, so a receiver sending a huge
            # or endless one costs neither memory nor time (the connection is closed unread).
            _OPENER.open(request, timeout=self.timeout).close()
        except urllib.error.HTTPError as exc:
            code = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            # The Location is not shown: it may carry a token as the URL does.
            what = (f"HTTP {code} (a redirect, not followed: a POST would reach the new place without "
                    f"its body; give the webhook the URL it points to)") if 300 <= code < 400 else f"HTTP {code}"
            raise WebhookError(what, retryable=code in (408, 429) or code >= 500,
                               retry_after=retry_after) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            timed_out = isinstance(reason, TimeoutError)
            raise WebhookError(self._scrubbed(f"{type(reason).__name__}: {reason}"), retryable=True,
                               connection=not timed_out) from None
        except TimeoutError:
            raise WebhookError(f"no answer within {self.timeout:g}s", retryable=True) from None
        except (OSError, http.client.HTTPException) as exc:  # a reset, a garbled status line, ...
            raise WebhookError(self._scrubbed(f"{type(exc).__name__}: {exc}"), retryable=True) from None


class WebhookSender:
    """One run's deliveries to a :class:`Webhook`, on a thread of its own.

    :meth:`send` never blocks; :meth:`close` lets the queue drain for the webhook's
    ``drain_s`` and joins the thread. ``delivered`` and ``failed`` count notices.
    """

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        self.delivered = 0
        self.failed = 0
        self._queue: collections.deque[Mapping[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._deadline = math.inf
        self._down = False  # the last attempt could not reach the receiver at all
        self._dropped_logged = False
        self._in_flight = False  # a notice taken off the queue and not settled yet
        self._join_until = math.inf  # set by begin_close
        self.join_s = webhook.drain_s + webhook.timeout + 1.0
        """How long :meth:`close` waits for the thread: the drain, a request in flight, a margin."""
        self._thread = threading.Thread(target=self._loop, name="batchguard-alert-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, payload: Mapping[str, Any]) -> None:
        """Queue ``payload`` for delivery (dropped, logged and counted past MAX_QUEUED)."""
        with self._cond:
            if len(self._queue) >= MAX_QUEUED:
                self.failed += 1
                if not self._dropped_logged:
                    self._dropped_logged = True
                    logger.error("alert webhook %s: %d notices wait already; dropping new ones (counted in "
                                 "report.alert_failures)", self.webhook.shown_url, MAX_QUEUED)
                return
            self._queue.append(payload)
            self._cond.notify()

    def begin_close(self) -> None:
        """Start the drain: what is queued gets the webhook's ``drain_s`` from now (once)."""
        with self._cond:
            if not self._closing.is_set():
                now = time.monotonic()
                self._deadline = now + self.webhook.drain_s
                self._join_until = now + self.join_s  # close() waits until then, whenever called
                self._closing.set()
                self._cond.notify()

    def close(self) -> None:
        """Deliver what is queued for at most the webhook's ``drain_s`` more seconds (plus a
        request in flight), then stop; what is left is counted as failed."""
        self.begin_close()
        self._thread.join(max(0.0, min(DRAIN_QUIET_S, self._join_until - time.monotonic())))
        if self._thread.is_alive():  # a person waits for the program to end: say why, and how not to
            with self._cond:
                pending = len(self._queue) + self._in_flight
            left = max(0.0, self._join_until - time.monotonic())
            logger.warning("alert webhook %s: still delivering %d notice(s), for up to %.0fs more (Ctrl-C to "
                           "skip)", self.webhook.shown_url, pending, left)
            self._thread.join(left)
        with self._cond:
            if self._thread.is_alive() and self._in_flight:
                # A request that outlives its timeout (a DNS lookup that hangs, an answer
                # dripping in a byte at a time): left behind, and counted as not delivered.
                self._in_flight = False
                self._give_up(1, "still sending when the run ended; left behind")
            if self._queue:
                self._give_up(len(self._queue), "the run ended first")
                self._queue.clear()

    def abandon(self) -> None:
        """Stop at once, whatever is queued (counted as failed): the end of a run interrupted
        during the drain. A request in flight finishes within its timeout, then the thread ends."""
        with self._cond:
            self._deadline = -math.inf
            self._closing.set()
            self._cond.notify()
            if self._queue:
                self._give_up(len(self._queue), "the run was interrupted first")
                self._queue.clear()

    def _give_up(self, count: int, why: str) -> None:
        self.failed += count
        logger.error("alert webhook %s: %d notice(s) not delivered: %s (counted in report.alert_failures)",
                     self.webhook.shown_url, count, why)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                if self._closing.is_set() and time.monotonic() >= self._deadline:
                    return  # close() counts what is left
                payload = self._queue.popleft()
                self._in_flight = True
            self._deliver(payload)

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        hook = self.webhook
        what = f"{payload.get('state')} notice of {payload.get('name')!r}"
        for attempt in range(1, hook.retries + 2):
            try:
                hook.post(payload)
            except WebhookError as exc:
                self._down = exc.connection
                last = attempt > hook.retries or not exc.retryable or (self._closing.is_set() and self._down)
                delay = hook.backoff_s * 2 ** (attempt - 1)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER_S))
                if not last and self._closing.is_set() and time.monotonic() + delay >= self._deadline:
                    last = True  # the run has ended and the next try would come too late
                if last:
                    self._settle(f"the {what} failed {attempt} time(s), last: {exc}")
                    return
                logger.warning("alert webhook %s: the %s failed (%s); trying again in %.1fs",
                               hook.shown_url, what, exc, delay)
                self._pause(delay)
            except Exception as exc:  # noqa: BLE001 - a payload JSON cannot hold is a bug, never the run's
                self._settle(f"the {what} could not be sent: {type(exc).__name__}: {hook._scrubbed(str(exc))}")
                return
            else:
                self._down = False
                self._settle(None)
                return

    def _settle(self, failure: str | None) -> None:
        """The notice in flight was delivered (``failure`` None) or given up; unless close()
        already counted it as left behind."""
        with self._cond:
            if not self._in_flight:
                return
            self._in_flight = False
            if failure is None:
                self.delivered += 1
            else:
                self._give_up(1, failure)

    def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until close() when the run ends first (then the drain
        deadline bounds the rest)."""
        end = time.monotonic() + delay
        if not self._closing.wait(delay) or self._down:
            return  # a receiver that cannot be reached gets one more try at once, not a wait
        remaining = min(end, self._deadline) - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
