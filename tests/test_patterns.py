"""Failure patterns and the recommendation rule table (issue 9 item 3): batchguard.triage.

Templates mask what varies from record to record and nothing else; the counter is exact and
bounded; every default rule fires on a real exception of the library it names.
"""

from __future__ import annotations

import doctest
import json
import shlex
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchguard import RetryPolicy, run_batches, triage
from batchguard._report import patterns as patterns_module
from batchguard._report import rules as rules_module
from batchguard.triage import (
    DEFAULT_RULES,
    PatternCounter,
    PatternKey,
    Recommendation,
    RecommendationRule,
    fill,
    message_template,
    recommend,
    when,
)
from helpers_client_server import ScriptedServer, dead_port, silent_port
from helpers_contract import ENGINES


@pytest.mark.parametrize("module", [patterns_module, rules_module, triage])
def test_the_docstring_examples_hold(module: object) -> None:
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert failed == 0


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(("message", "template"), [
    ("user 42 not found", "user <n> not found"),
    ("price 19.99 is below 20", "price <n> is below <n>"),
    ("order 20240117 failed", "order <id> failed"),
    ("entity 550e8400-e29b-41d4-a716-446655440000 is locked", "entity <id> is locked"),
    ("<Obj object at 0x7f3a9c00b2d0> broke", "<Obj object at <id>> broke"),
    ("commit 9f86d081884c7d65 missing", "commit <id> missing"),
    ("cannot mail alice.smith+x@mail.example.co.uk", "cannot mail <email>"),
    ("KeyError 'email'", "KeyError '<v>'"),
    ('field "name" is required', 'field "<v>" is required'),
    ("can't parse 'x'", "can't parse '<v>'"),
    ("Error 111 connecting to 127.0.0.1:6379. Connection refused.",
     "Error <n> connecting to <ip>:<n>. Connection refused."),
    ("503 Server Error: Service Unavailable for url: http://127.0.0.1:8080/status/503/rq",
     "<n> Server Error: Service Unavailable for url: http://<ip>:<n>/<path>"),
    ("  many\n\tspaces   here ", "many spaces here"),
    ("plain words stay", "plain words stay"),
    ("", ""),
])
def test_a_template_masks_what_varies(message: str, template: str) -> None:
    assert message_template(message) == template


def test_records_of_one_shape_share_a_template() -> None:
    messages = [f"record {n} of user '{name}' <{name}@x.io> at https://api.x.io/u/{n}?t={n * 7} failed after {n}.5 s"
                for n, name in ((1, "ann"), (22, "bob"), (333333, "carol-c"))]
    assert len({message_template(m) for m in messages}) == 2  # 333333 is an id, not a number
    assert message_template(messages[0]) == message_template(messages[1])


def test_a_url_in_a_message_never_shows_its_password() -> None:
    template = message_template("cannot reach postgresql://app:s3cret@db.internal:5432/jobs?sslmode=require")
    assert "s3cret" not in template and "app" not in template
    assert template == "cannot reach postgresql://db.internal:<n>/<path>"


def test_a_template_is_capped_however_long_the_message() -> None:
    template = message_template("word " * 100_000)
    assert len(template) <= patterns_module.MAX_TEMPLATE_CHARS
    assert template.endswith("…")


# --------------------------------------------------------------------------- the counter


def test_the_counter_is_exact_and_orders_by_count_then_first_record() -> None:
    counter = PatternCounter()
    for n in range(10):
        counter.add(n, "ValueError", "permanent", None, f"bad value {n}", order=n)
    for n in range(10, 20):
        counter.add(n, "ReadTimeout", "recoverable", None, "timed out", order=n)
    counter.add(99, "HTTPError", "recoverable", 503, "503 Server Error", order=99)
    found = counter.patterns()
    assert [(p.error_type, p.count) for p in found] == [("ValueError", 10), ("ReadTimeout", 10), ("HTTPError", 1)]
    assert [p.share for p in found] == [10 / 21, 10 / 21, 1 / 21]
    assert found[2].http_status == 503 and found[2].recommendation.kind == "server_error"
    assert len(counter) == 21


def test_examples_are_the_first_records_whatever_order_they_arrive_in() -> None:
    counter = PatternCounter()
    for n in (9, 3, 7, 1, 8, 2):
        counter.add(f"r{n}", "KeyError", "permanent", None, "'id'", order=n)
    [pattern] = counter.patterns()
    assert pattern.example_ids == ("r1", "r2", "r3")


def test_the_same_type_with_another_status_or_class_is_another_pattern() -> None:
    counter = PatternCounter()
    counter.add(1, "HTTPError", "recoverable", 503, "server error")
    counter.add(2, "HTTPError", "recoverable", 502, "server error")
    counter.add(3, "HTTPError", "permanent", 404, "server error")
    assert len(counter.patterns()) == 3


def test_memory_stays_bounded_with_100k_distinct_messages() -> None:
    counter = PatternCounter()
    tracemalloc.start()
    try:
        for n in range(1_000):  # warm up: the caches and the first patterns
            counter.add(n, f"Error{n % 7}", "permanent", None, f"unmaskable {chr(65 + n % 26) * (n % 50 + 1)}")
        before, _ = tracemalloc.get_traced_memory()
        for n in range(1_000, 100_000):
            # letters the template cannot mask: every message its own template
            word = "".join(chr(97 + int(d)) for d in str(n))
            counter.add(n, f"Error{n % 300}", "permanent", None, f"unmaskable {word} in row {n}")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    found = counter.patterns()
    assert sum(p.count for p in found) == 100_000  # exact, however many were folded
    assert len(found) <= 2 * patterns_module.MAX_PATTERNS + 1
    assert all(len(p.example_ids) <= patterns_module.MAX_EXAMPLES for p in found)
    assert after - before < 1_000_000, f"grew by {after - before} bytes"
    other = [p for p in found if p.error_type == patterns_module.OTHER_TYPE]
    assert other and other[0].count > 0


def test_an_error_type_past_its_template_cap_folds_into_its_other_messages() -> None:
    counter = PatternCounter(max_templates=3)
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        counter.add(word, "ValueError", "permanent", None, f"unknown name {word}")
    templates = {p.template: p.count for p in counter.patterns()}
    assert templates == {"unknown name alpha": 1, "unknown name beta": 1, "unknown name gamma": 1,
                         patterns_module.OTHER_MESSAGES: 2}


# --------------------------------------------------------------------------- rules


def test_fill_quotes_every_value_and_redacts_urls() -> None:
    command = fill("batchguard dlq review --error-type {error_type}{job}{dlq}{store}{fn} {unknown} {{x}}",
                   error_type="Odd Error", dlq="redis://:pw@cache:6379/0", store="sqlite:///my jobs.db",
                   job="nightly; rm -rf /", fn=None)
    assert "pw" not in command
    words = shlex.split(command)
    assert words[:5] == ["batchguard", "dlq", "review", "--error-type", "Odd Error"]
    assert words[5:] == ["--job", "nightly; rm -rf /", "--dlq", "redis://:***@cache:6379/0", "--store",
                         "sqlite:///my jobs.db", "--fn", "MODULE:CALLABLE", "{unknown}", "{{x}}"]


def test_user_rules_go_first_and_a_broken_rule_is_skipped() -> None:
    def broken(pattern: object) -> bool:
        raise RuntimeError("bug in a user's rule")

    quota = RecommendationRule("quota", when(message="quota exceeded"),
                               Recommendation("quota", "the billing console", "raise the quota"))
    rules = (RecommendationRule("broken", broken, quota.recommendation), quota, *DEFAULT_RULES)
    assert recommend(PatternKey("HTTPError", "recoverable", 429, "daily quota exceeded"), rules).kind == "quota"
    assert recommend(PatternKey("HTTPError", "recoverable", 429, "slow down"), rules).kind == "rate_limit"
    counter = PatternCounter()
    counter.add(1, "HTTPError", "recoverable", 429, "daily quota exceeded")
    assert counter.patterns(rules=rules)[0].recommendation.kind == "quota"
    assert counter.patterns()[0].recommendation.kind == "rate_limit"


def test_a_table_without_a_catch_all_still_recommends() -> None:
    assert recommend(PatternKey("Odd", "permanent", None, "odd"), ()).kind == "unknown"


def test_every_default_rule_says_what_to_check_change_and_run() -> None:
    names = [rule.name for rule in DEFAULT_RULES]
    assert names == ["retry_budget", "timeout", "rate_limit", "server_error", "connection", "integrity", "blocked",
                     "validation", "unknown"]
    for rule in DEFAULT_RULES:
        r = rule.recommendation
        assert r.check and r.change and r.command and r.command.startswith("batchguard dlq ")
        assert "{error_type}" in r.command and "{dlq}" in r.command


# --------------------------------------------------------------------------- real client errors
#
# Every rule fires on a real exception of the library it names, raised by a real call against
# 127.0.0.1 (a scripted HTTP server, a port with nothing listening or one that never answers,
# PostgreSQL, Redis), then dead-lettered by a run on both engines: the report's pattern carries
# the HTTP status the exception held and the rule's recommendation.

ONCE = RetryPolicy(max_attempts=1)


def caught(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - that is the point
        return exc
    raise AssertionError(f"{call} did not raise")


def raising(exc: BaseException) -> Callable[[Any], Any]:
    def fn(record: Any) -> Any:
        raise exc

    return fn


def assert_recommended(exc: BaseException, kind: str, status: int | None = None) -> None:
    """``exc``, dead-lettered on both engines, makes one pattern: the rule ``kind``, ``status``."""
    for engine in ENGINES:
        report = run_batches([{"id": "r1"}, {"id": "r2"}], raising(exc), engine=engine, retry=ONCE)
        [pattern] = report.patterns()
        assert (pattern.error_type, pattern.count, pattern.example_ids) == (type(exc).__name__, 2, ("r1", "r2"))
        assert pattern.http_status == status, (engine, exc)
        assert pattern.recommendation.kind == kind, (engine, type(exc), pattern.template)


@pytest.fixture(scope="module")
def http() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def test_requests_errors_get_their_rules(http: ScriptedServer) -> None:
    requests = pytest.importorskip("requests")

    def get(url: str, **kwargs: Any) -> None:
        with requests.Session() as session:
            session.trust_env = False  # loopback only, whatever *_proxy says
            with session.get(url, **kwargs) as response:
                response.raise_for_status()

    assert_recommended(caught(lambda: get(f"{http.url}/slow/p1?sleep=1", timeout=0.2)), "timeout")
    assert_recommended(caught(lambda: get(f"{http.url}/status/429/p1", timeout=2)), "rate_limit", 429)
    assert_recommended(caught(lambda: get(f"{http.url}/status/503/p1", timeout=2)), "server_error", 503)
    assert_recommended(caught(lambda: get(f"http://127.0.0.1:{dead_port()}/", timeout=2)), "connection")
    assert_recommended(caught(lambda: get(f"{http.url}/status/422/p1", timeout=2)), "validation", 422)
    assert_recommended(caught(lambda: get(f"{http.url}/status/409/p1", timeout=2)), "integrity", 409)


def test_httpx_errors_get_their_rules(http: ScriptedServer) -> None:
    httpx = pytest.importorskip("httpx")

    def get(url: str, timeout: float = 2.0) -> None:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            client.get(url).raise_for_status()

    assert_recommended(caught(lambda: get(f"{http.url}/slow/h1?sleep=1", timeout=0.2)), "timeout")
    assert_recommended(caught(lambda: get(f"{http.url}/status/429/h1")), "rate_limit", 429)
    assert_recommended(caught(lambda: get(f"{http.url}/status/502/h1")), "server_error", 502)
    assert_recommended(caught(lambda: get(f"{http.url}/status/504/h1")), "timeout", 504)
    assert_recommended(caught(lambda: get(f"http://127.0.0.1:{dead_port()}/")), "connection")
    assert_recommended(caught(lambda: get(f"{http.url}/status/400/h1")), "validation", 400)
    assert_recommended(caught(lambda: get(f"{http.url}/status/404/h1")), "unknown", 404)


@pytest.mark.postgres
def test_psycopg_errors_get_their_rules(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE triage_t (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO triage_t VALUES (1, 'a')")
        duplicate = caught(lambda: conn.execute("INSERT INTO triage_t VALUES (1, 'b')"))
        not_null = caught(lambda: conn.execute("INSERT INTO triage_t VALUES (2, NULL)"))
        bad_text = caught(lambda: conn.execute("SELECT 'abc'::int"))
        conn.execute("SET statement_timeout = 50")
        slow = caught(lambda: conn.execute("SELECT pg_sleep(2)"))
    refused = caught(lambda: psycopg.connect(host="127.0.0.1", port=dead_port(), connect_timeout=2))
    assert [type(e).__name__ for e in (duplicate, not_null, bad_text, slow)] == [
        "UniqueViolation", "NotNullViolation", "InvalidTextRepresentation", "QueryCanceled"]
    assert_recommended(duplicate, "integrity")
    assert_recommended(not_null, "integrity")
    assert_recommended(bad_text, "validation")
    assert_recommended(slow, "timeout")
    assert_recommended(refused, "connection")


def redis_client(port: int) -> Any:
    redis = pytest.importorskip("redis")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))


def test_redis_errors_get_their_rules() -> None:
    refused = caught(lambda: redis_client(dead_port()).ping())
    with silent_port() as port:
        timeout = caught(lambda: redis_client(port).ping())
    assert (type(refused).__name__, type(timeout).__name__) == ("ConnectionError", "TimeoutError")
    assert_recommended(refused, "connection")
    assert_recommended(timeout, "timeout")


def test_stdlib_and_pydantic_errors_get_their_rules() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert_recommended(caught(lambda: conn.execute("INSERT INTO t VALUES (1)")), "integrity")
    conn.close()
    assert_recommended(caught(lambda: json.loads("{not json")), "validation")
    assert_recommended(caught(lambda: {"id": 1}["email"]), "validation")
    pydantic = pytest.importorskip("pydantic")

    class Order(pydantic.BaseModel):
        amount: int

    assert_recommended(caught(lambda: Order.model_validate({"amount": "many"})), "validation")
    assert_recommended(caught(lambda: 1 / 0), "unknown")
