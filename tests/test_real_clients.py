"""The default classifier knows real client libraries' errors, on both engines (issue 7).

Every exception here is the library's own: raised by a real call against 127.0.0.1 (a scripted
HTTP server, a TLS server with a self-signed certificate, a gRPC server, a port with nothing
listening, one that never answers, PostgreSQL) where that is cheap, else constructed the way
the library constructs it. Each is classified by ``Classifier.default()`` and raised from a
run on both engines, which must agree on the class and on the number of tries.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import batchguard
from batchguard import Classifier, ErrorClass, MemoryDLQ, RetryPolicy
from helpers_client_server import ScriptedServer, backlogged_port, dead_port, silent_port
from helpers_contract import ENGINES

R, T, P = ErrorClass.RECOVERABLE, ErrorClass.TRANSIENT, ErrorClass.PERMANENT

# The certificate failure message as OpenSSL words it (what ssl raises, and what the client
# libraries keep in theirs).
CERT_FAILED = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"


def caught(call: Callable[[], Any]) -> BaseException:
    """The exception ``call`` raises (it must raise)."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - that is the point
        return exc
    raise AssertionError(f"{call} did not raise")


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def http() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An HTTPS server with a self-signed certificate: no client verifies it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (.ci/services.sh installs it) to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the client rejects the certificate mid-handshake: expected

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Server(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def grpc_target() -> Iterator[str]:
    """A gRPC server whose one method aborts with the status named in the request (or sleeps
    past the deadline for b"SLEEP")."""
    grpc = pytest.importorskip("grpc")

    def handle(request: bytes, context: Any) -> bytes:
        if request == b"SLEEP":
            time.sleep(1.0)
            return b"late"
        context.abort(getattr(grpc.StatusCode, request.decode()), f"scripted {request.decode()}")
        raise AssertionError("abort returns by raising")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Scripted", {"Call": grpc.unary_unary_rpc_method_handler(handle)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(5)


# --------------------------------------------------------------------------- the real errors


def requests_errors(http: ScriptedServer, tls_port: int, full: int) -> dict[str, BaseException]:
    requests = pytest.importorskip("requests")
    import urllib3

    def get(url: str, **kwargs: Any) -> Any:
        with requests.Session() as session:
            session.trust_env = False  # loopback only, whatever *_proxy says
            response = session.get(url, **kwargs)
            with response:
                response.raise_for_status()

    pool = urllib3.HTTPConnectionPool("127.0.0.1", dead_port())
    reason = urllib3.exceptions.ConnectTimeoutError(pool, "Connection to 127.0.0.1 timed out. (connect timeout=0.1)")
    ssl_reason = urllib3.exceptions.SSLError(ssl.SSLCertVerificationError(1, CERT_FAILED))
    return {
        "requests-refused": caught(lambda: get(f"http://127.0.0.1:{dead_port()}/", timeout=2)),
        "requests-read-timeout": caught(lambda: get(f"{http.url}/slow/rq?sleep=1", timeout=0.2)),
        "requests-dropped": caught(lambda: get(f"{http.url}/drop/rq", timeout=2)),
        "requests-503": caught(lambda: get(f"{http.url}/status/503/rq", timeout=2)),
        "requests-429": caught(lambda: get(f"{http.url}/status/429/rq", timeout=2)),
        "requests-404": caught(lambda: get(f"{http.url}/status/404/rq", timeout=2)),
        "requests-certificate": caught(lambda: get(f"https://127.0.0.1:{tls_port}/", timeout=2)),
        "requests-tls-to-plain-http": caught(lambda: get(f"https://{http.url[7:]}/ok/rq", timeout=2)),
        "requests-connect-timeout": caught(lambda: get(f"http://127.0.0.1:{full}/", timeout=(0.2, 2))),
        # as requests.adapters.HTTPAdapter.send raises them
        "requests-connect-timeout-constructed": requests.exceptions.ConnectTimeout(
            urllib3.exceptions.MaxRetryError(pool, "/", reason=reason)),
        "requests-chunked": requests.exceptions.ChunkedEncodingError(
            urllib3.exceptions.ProtocolError("Response ended prematurely")),
        "requests-certificate-constructed": requests.exceptions.SSLError(
            urllib3.exceptions.MaxRetryError(pool, "/", reason=ssl_reason)),
    }


def urllib3_errors(http: ScriptedServer) -> dict[str, BaseException]:
    urllib3 = pytest.importorskip("urllib3")

    def get(url: str, **kwargs: Any) -> None:
        with urllib3.PoolManager() as pool:
            pool.request("GET", url, **kwargs)

    return {
        "urllib3-new-connection": caught(lambda: get(f"http://127.0.0.1:{dead_port()}/", retries=False)),
        "urllib3-max-retry": caught(lambda: get(f"http://127.0.0.1:{dead_port()}/", retries=0)),
        "urllib3-read-timeout": caught(lambda: get(f"{http.url}/slow/u3?sleep=1", retries=False, timeout=0.2)),
        "urllib3-protocol": caught(lambda: get(f"{http.url}/drop/u3", retries=False)),
    }


def httpx_errors(http: ScriptedServer, tls_port: int, full: int) -> dict[str, BaseException]:
    httpx = pytest.importorskip("httpx")

    def get(url: str, timeout: float = 2.0) -> None:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            client.get(url).raise_for_status()

    return {
        "httpx-connect-error": caught(lambda: get(f"http://127.0.0.1:{dead_port()}/")),
        "httpx-read-timeout": caught(lambda: get(f"{http.url}/slow/hx?sleep=1", timeout=0.2)),
        "httpx-remote-protocol": caught(lambda: get(f"{http.url}/drop/hx")),
        "httpx-503": caught(lambda: get(f"{http.url}/status/503/hx")),
        "httpx-429": caught(lambda: get(f"{http.url}/status/429/hx")),
        "httpx-404": caught(lambda: get(f"{http.url}/status/404/hx")),
        "httpx-certificate": caught(lambda: get(f"https://127.0.0.1:{tls_port}/")),
        "httpx-connect-timeout": caught(lambda: get(f"http://127.0.0.1:{full}/", timeout=0.2)),
        "httpx-pool-timeout": httpx.PoolTimeout("no connection available"),
        "httpx-local-protocol": httpx.LocalProtocolError("Illegal header value b' x'"),
        "httpx-unsupported-protocol": caught(lambda: get("ftp://127.0.0.1/")),
    }


def aiohttp_errors(http: ScriptedServer, tls_port: int, full: int) -> dict[str, BaseException]:
    aiohttp = pytest.importorskip("aiohttp")

    async def get(url: str, **timeouts: float) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(**timeouts or {"total": 2})) as session:
            async with session.get(url) as response:
                response.raise_for_status()

    async def collect() -> dict[str, BaseException]:
        calls = {
            "aiohttp-refused": get(f"http://127.0.0.1:{dead_port()}/"),
            "aiohttp-read-timeout": get(f"{http.url}/slow/ah?sleep=1", sock_read=0.2),
            "aiohttp-total-timeout": get(f"{http.url}/slow/ah2?sleep=1", total=0.2),
            "aiohttp-disconnected": get(f"{http.url}/drop/ah?times=5"),
            "aiohttp-503": get(f"{http.url}/status/503/ah"),
            "aiohttp-429": get(f"{http.url}/status/429/ah"),
            "aiohttp-404": get(f"{http.url}/status/404/ah"),
            "aiohttp-certificate": get(f"https://127.0.0.1:{tls_port}/"),
            "aiohttp-connect-timeout": get(f"http://127.0.0.1:{full}/", sock_connect=0.2),
        }
        out = {}
        for name, call in calls.items():
            try:
                await call
            except Exception as exc:  # noqa: BLE001
                out[name] = exc
        assert len(out) == len(calls), f"these did not raise: {sorted(set(calls) - set(out))}"
        return out

    return asyncio.run(collect())


def botocore_errors(http: ScriptedServer) -> dict[str, BaseException]:
    pytest.importorskip("botocore")
    import botocore.config
    import botocore.exceptions
    import botocore.session

    session = botocore.session.get_session()

    def s3(endpoint: str, **config: Any) -> Any:
        return session.create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
            aws_secret_access_key="test",
            config=botocore.config.Config(retries={"total_max_attempts": 1}, proxies={},
                                          s3={"addressing_style": "path"}, **config))

    def list_bucket(endpoint: str, bucket: str, **config: Any) -> Callable[[], Any]:
        return lambda: s3(endpoint, **config).list_objects_v2(Bucket=bucket)

    errors = {f"botocore-{name[4:]}": caught(list_bucket(http.url, name))
              for name in ("aws-throttling", "aws-slowdown", "aws-denied", "aws-unknown-500", "aws-unknown-404")}
    errors["botocore-endpoint-connection"] = caught(list_bucket(f"http://127.0.0.1:{dead_port()}", "b"))
    errors["botocore-read-timeout"] = caught(list_bucket(f"{http.url}/slow", "bt", read_timeout=0.2))
    errors["botocore-connection-closed"] = botocore.exceptions.ConnectionClosedError(endpoint_url=http.url)
    return errors


def grpc_errors(target: str) -> dict[str, BaseException]:
    grpc = pytest.importorskip("grpc")
    errors: dict[str, BaseException] = {}
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/test.Scripted/Call")
        for code in ("RESOURCE_EXHAUSTED", "ABORTED", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED"):
            errors[f"grpc-{code}"] = caught(lambda code=code: call(code.encode(), timeout=5))
        errors["grpc-DEADLINE_EXCEEDED"] = caught(lambda: call(b"SLEEP", timeout=0.2))
    with grpc.insecure_channel(f"127.0.0.1:{dead_port()}") as channel:
        errors["grpc-UNAVAILABLE"] = caught(lambda: channel.unary_unary("/test.Scripted/Call")(b"x", timeout=5))

    async def aio_call() -> BaseException:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                await channel.unary_unary("/test.Scripted/Call")(b"INVALID_ARGUMENT", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc
        raise AssertionError("no error")

    errors["grpc-aio-INVALID_ARGUMENT"] = asyncio.run(aio_call())
    return errors


def sqlalchemy_sqlite_errors() -> dict[str, BaseException]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.pool import QueuePool

    engine = sqlalchemy.create_engine("sqlite://", poolclass=QueuePool, pool_size=1,
                                      max_overflow=0, pool_timeout=0.1)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
            integrity = caught(lambda: conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1)")))
            operational = caught(lambda: conn.execute(sqlalchemy.text("SELECT * FROM missing")))
            pool_timeout = caught(engine.connect)  # the pool's one connection is in use
    finally:
        engine.dispose()
    return {
        "sqlalchemy-integrity": integrity,
        "sqlalchemy-operational-sqlite": operational,
        "sqlalchemy-pool-timeout": pool_timeout,
        "sqlalchemy-disconnection": sqlalchemy.exc.DisconnectionError("connection invalidated"),
    }


def redis_errors() -> dict[str, BaseException]:
    redis = pytest.importorskip("redis")
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, BusyLoadingError
    from redis.retry import Retry

    def ping(port: int) -> Callable[[], Any]:
        def call() -> Any:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2, socket_connect_timeout=0.5,
                                 retry=Retry(NoBackoff(), 0))
            try:
                return client.ping()
            finally:
                client.close()
        return call

    with silent_port() as port:
        timeout = caught(ping(port))
    return {
        "redis-refused": caught(ping(dead_port())),
        "redis-timeout": timeout,
        # as redis-py's parser builds them from the server's "-LOADING ..." / "-WRONGPASS ..." replies
        "redis-busy-loading": BusyLoadingError("Redis is loading the dataset in memory"),
        "redis-auth": AuthenticationError("invalid username-password pair"),
    }


def stdlib_errors(http: ScriptedServer, tls_port: int) -> dict[str, BaseException]:
    def handshake(port: int, context: ssl.SSLContext) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass

    def read_silence() -> None:
        with silent_port() as port, socket.create_connection(("127.0.0.1", port), timeout=0.1) as conn:
            conn.recv(1)

    return {
        "ssl-certificate": caught(lambda: handshake(tls_port, ssl.create_default_context())),
        "ssl-plain-http-port": caught(lambda: handshake(int(http.url.rsplit(":", 1)[1]),
                                                        ssl.create_default_context())),
        "socket-timeout": caught(read_silence),
        # what socket.getaddrinfo raises for a name that does not resolve (no DNS in tests)
        "socket-gaierror": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    }


EXPECTED: dict[str, ErrorClass] = {
    "requests-refused": R, "requests-read-timeout": R, "requests-dropped": R, "requests-503": R,
    "requests-429": R, "requests-404": P, "requests-certificate": P, "requests-tls-to-plain-http": R,
    "requests-connect-timeout": R, "requests-connect-timeout-constructed": R, "requests-chunked": R,
    "requests-certificate-constructed": P,
    "urllib3-new-connection": R, "urllib3-max-retry": R, "urllib3-read-timeout": R, "urllib3-protocol": R,
    "httpx-connect-error": R, "httpx-read-timeout": R, "httpx-remote-protocol": R, "httpx-503": R,
    "httpx-429": R, "httpx-404": P, "httpx-certificate": P, "httpx-connect-timeout": R,
    "httpx-pool-timeout": R, "httpx-local-protocol": P, "httpx-unsupported-protocol": P,
    "aiohttp-refused": R, "aiohttp-read-timeout": R, "aiohttp-total-timeout": R, "aiohttp-disconnected": R,
    "aiohttp-503": R, "aiohttp-429": R, "aiohttp-404": P, "aiohttp-certificate": P, "aiohttp-connect-timeout": R,
    "botocore-throttling": R, "botocore-slowdown": R, "botocore-denied": P, "botocore-unknown-500": R,
    "botocore-unknown-404": P, "botocore-endpoint-connection": R, "botocore-read-timeout": R,
    "botocore-connection-closed": R,
    "grpc-UNAVAILABLE": R, "grpc-DEADLINE_EXCEEDED": R, "grpc-RESOURCE_EXHAUSTED": R, "grpc-ABORTED": T,
    "grpc-INVALID_ARGUMENT": P, "grpc-NOT_FOUND": P, "grpc-PERMISSION_DENIED": P, "grpc-aio-INVALID_ARGUMENT": P,
    "sqlalchemy-integrity": P, "sqlalchemy-operational-sqlite": R, "sqlalchemy-disconnection": R,
    "sqlalchemy-pool-timeout": R,
    "redis-refused": R, "redis-timeout": R, "redis-busy-loading": R, "redis-auth": P,
    "ssl-certificate": P, "ssl-plain-http-port": R, "socket-timeout": R, "socket-gaierror": R,
}


@pytest.fixture(scope="module")
def real_errors(http: ScriptedServer, tls_port: int, grpc_target: str) -> dict[str, BaseException]:
    with backlogged_port() as full:
        errors = {
            **requests_errors(http, tls_port, full), **urllib3_errors(http),
            **httpx_errors(http, tls_port, full), **aiohttp_errors(http, tls_port, full),
            **botocore_errors(http), **grpc_errors(grpc_target), **sqlalchemy_sqlite_errors(),
            **redis_errors(), **stdlib_errors(http, tls_port),
        }
    assert set(errors) == set(EXPECTED)
    return errors


def raising(exc: BaseException) -> Callable[[Any], Any]:
    def fn(record: Any) -> Any:
        raise exc

    return fn


# Two tries, no wait between them, whatever Retry-After a real error carries.
NO_WAIT = RetryPolicy(max_attempts=2, base_delay=0.0, jitter="none", max_retry_after=0)


def assert_both_engines_agree(exc: BaseException, expected: ErrorClass) -> None:
    for engine in ENGINES:
        dlq = MemoryDLQ()
        report = batchguard.run_batches([{"id": "r"}], raising(exc), engine=engine, retry=NO_WAIT, dlq=dlq)
        [error] = report.errors
        tries = 2 if expected.retryable else 1
        assert (error.error_class, error.attempts) == (expected.value, tries), engine
        assert dlq.list()[0].error_type == type(exc).__name__


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_default_classifier_knows_the_real_error(name: str, real_errors: dict[str, BaseException]) -> None:
    exc = real_errors[name]
    expected = EXPECTED[name]
    explained = Classifier.default().explain(exc)
    assert explained.error_class is expected, f"{type(exc).__module__}.{type(exc).__qualname__}: {explained}"
    assert Classifier.default().classify(exc) is expected
    assert_both_engines_agree(exc, expected)


# --------------------------------------------------------------------------- PostgreSQL drivers

RAISE_SQLSTATE = "DO $$ BEGIN RAISE EXCEPTION 'scripted' USING ERRCODE = '{}'; END $$"

PG_EXPECTED = {"40001": T, "40P01": T, "23505": P, "57014": R}


def _psycopg_errors(postgres_url: str) -> dict[str, BaseException]:
    psycopg = pytest.importorskip("psycopg")
    out: dict[str, BaseException] = {}
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for state in PG_EXPECTED:
            out[f"psycopg-{state}"] = caught(lambda state=state: conn.execute(RAISE_SQLSTATE.format(state)))
    out["psycopg-refused"] = caught(lambda: psycopg.connect(host="127.0.0.1", port=dead_port(), connect_timeout=2))
    return out


def _psycopg2_errors(postgres_url: str) -> dict[str, BaseException]:
    psycopg2 = pytest.importorskip("psycopg2")
    out: dict[str, BaseException] = {}
    conn = psycopg2.connect(postgres_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for state in PG_EXPECTED:
                out[f"psycopg2-{state}"] = caught(lambda state=state: cur.execute(RAISE_SQLSTATE.format(state)))
    finally:
        conn.close()
    out["psycopg2-refused"] = caught(lambda: psycopg2.connect(host="127.0.0.1", port=dead_port(), connect_timeout=2))
    return out


def _sqlalchemy_postgres_errors(postgres_url: str) -> dict[str, BaseException]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    out: dict[str, BaseException] = {}
    rest = postgres_url.split("://", 1)[1]
    for dialect in ("psycopg", "psycopg2"):
        engine = sqlalchemy.create_engine(f"postgresql+{dialect}://{rest}")
        try:
            with engine.connect() as conn:
                for state in ("40001", "40P01", "23505"):
                    out[f"sqlalchemy-{dialect}-{state}"] = caught(
                        lambda state=state: conn.execute(sqlalchemy.text(RAISE_SQLSTATE.format(state))))
                    conn.rollback()
        finally:
            engine.dispose()
    return out


@pytest.fixture(scope="module")
def postgres_errors(postgres_url: str) -> dict[str, BaseException]:
    return {**_psycopg_errors(postgres_url), **_psycopg2_errors(postgres_url),
            **_sqlalchemy_postgres_errors(postgres_url)}


PG_CASES = {
    **{f"{driver}-{state}": cls for driver in ("psycopg", "psycopg2") for state, cls in PG_EXPECTED.items()},
    "psycopg-refused": R, "psycopg2-refused": R,
    **{f"sqlalchemy-{d}-{s}": c for d in ("psycopg", "psycopg2") for s, c in (("40001", T), ("40P01", T),
                                                                                ("23505", P))},
}


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(PG_CASES))
def test_the_default_classifier_knows_postgres_driver_errors(name: str,
                                                             postgres_errors: dict[str, BaseException]) -> None:
    exc = postgres_errors[name]
    expected = PG_CASES[name]
    assert Classifier.default().explain(exc).error_class is expected, str(Classifier.default().explain(exc))
    assert_both_engines_agree(exc, expected)


# --------------------------------------------------------------------------- explain


def test_explain_says_which_rule_matched(real_errors: dict[str, BaseException]) -> None:
    c = Classifier.default()
    assert str(c.explain(real_errors["requests-refused"])) == (
        "name rule requests.exceptions.ConnectionError via requests.exceptions.ConnectionError -> recoverable")
    assert str(c.explain(real_errors["requests-read-timeout"])) == (
        "name rule requests.exceptions.Timeout via requests.exceptions.ReadTimeout -> recoverable")
    assert str(c.explain(real_errors["requests-503"])) == "HTTP status 503 -> recoverable"
    assert str(c.explain(real_errors["httpx-404"])) == "HTTP status 404 -> permanent"
    assert str(c.explain(real_errors["botocore-slowdown"])) == (
        "AWS error code SlowDown (inspector aws_error_code via botocore.exceptions.ClientError) -> recoverable")
    assert str(c.explain(real_errors["grpc-INVALID_ARGUMENT"])) == (
        "gRPC status INVALID_ARGUMENT (inspector grpc_status via grpc._channel._InactiveRpcError) -> permanent")
    assert str(c.explain(TimeoutError())) == "type rule TimeoutError via builtins.TimeoutError -> recoverable"
    assert str(c.explain(RuntimeError())) == "default -> permanent"
    assert str(c.with_message_rule("boom", T).explain(RuntimeError("boom"))) == "message rule 'boom' -> transient"
    explained = c.explain(real_errors["requests-certificate"])
    assert explained.error_class is P and "CERTIFICATE_VERIFY_FAILED" in str(explained)
