"""A user's type checker sees the types of a run: ``report.successful`` is ``list[R]``.

Each test writes a small user script, runs ``mypy --strict`` on it (the installed package ships
``py.typed``) and reads what mypy says: the revealed types of the right uses, and an error for
each wrong one.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

pytestmark = pytest.mark.slow


def _source(body: str) -> str:
    return "from batchguard import arun_batches, run_batches\n\n" + textwrap.dedent(body)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy --strict's output lines for each script, from one run over all of them (one run,
    not one per case: mypy reads the whole package each time)."""
    root = tmp_path_factory.mktemp("user_scripts")
    names = {"right": RIGHT, **{f"wrong_{n}": _source(WRONG[case][0]) for n, case in enumerate(sorted(WRONG))}}
    for name, source in names.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(root / ".cache"),
         "--hide-error-context", "--no-error-summary", "--show-error-codes",
         *sorted(f"{name}.py" for name in names)],
        capture_output=True, text=True, cwd=root, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    return {name: [line for line in done.stdout.splitlines() if line.startswith(f"{name}.py:")]
            for name in names}


def _revealed(lines: list[str]) -> dict[int, str]:
    found = {}
    for line in lines:
        match = re.search(r":(\d+): note: Revealed type is \"(.+)\"", line)
        if match:
            found[int(match.group(1))] = match.group(2).replace("builtins.", "")
    return found


RIGHT = """\
    import asyncio
    from collections.abc import Sequence

    from batchguard import BatchReport, RetryPolicy, arun_batches, run_batches


    def parse(record: str) -> int:
        return int(record)


    async def fetch(record: int) -> bytes:
        return str(record).encode()


    def bulk_upper(batch: list[str]) -> list[str]:
        return [r.upper() for r in batch]


    async def bulk_len(batch: list[str]) -> Sequence[int]:
        return [len(r) for r in batch]


    report: BatchReport[int] = run_batches(["1", "2"], parse, batch_size=10, retry=RetryPolicy(max_attempts=1))
    reveal_type(report.successful)
    reveal_type(run_batches([1, 2], fetch, concurrency=8).successful)
    reveal_type(run_batches(["a"], bulk_upper, bulk=True).successful)
    reveal_type(run_batches(["a"], bulk_len, bulk=True).successful)
    reveal_type(run_batches(range(3), lambda x: x / 2, id_of=lambda x: x + 1, job="j").successful)


    async def main() -> None:
        reveal_type((await arun_batches([1, 2], fetch)).successful)
        reveal_type((await arun_batches(["1"], parse, job="nightly", store="sqlite:///j.db", force=True)).successful)
        reveal_type((await arun_batches(["a"], bulk_len, bulk=True)).successful)


    asyncio.run(main())
    total: int = sum(report.successful)
"""


def test_the_checker_knows_the_type_of_the_successful_values(checked: dict[str, list[str]]) -> None:
    lines = checked["right"]
    revealed = _revealed(lines)
    errors = [line for line in lines if ": error:" in line]
    assert errors == [], "\n".join(lines)
    in_order = [revealed[line] for line in sorted(revealed)]
    assert in_order == [
        "list[int]",  # parse: str -> int
        "list[bytes]",  # an async fn: the awaited value, not the coroutine
        "list[str]",  # bulk: list[str] -> list[str]
        "list[int]",  # an async bulk fn returning a Sequence[int]
        "list[float]",  # a lambda, with id_of and job
        "list[bytes]",  # arun_batches, async fn
        "list[int]",  # arun_batches, sync fn, as a job
        "list[int]",  # arun_batches, async bulk fn
    ], "\n".join(lines)


WRONG = {
    "a value used as the wrong type": (
        "report = run_batches([1, 2], lambda x: x * 2)\nreport.successful[0] + 'x'\n", "operator"),
    "fn taking another record type": (
        "def parse(record: str) -> int:\n    return int(record)\nrun_batches([1, 2], parse)\n", None),
    "an async fn's value used as the coroutine": (
        "async def f(x: int) -> int:\n    return x\nrun_batches([1], f).successful[0].send(None)\n",
        "attr-defined"),
    "a bulk fn taking one record": (
        "def one(record: int) -> int:\n    return record\nrun_batches([1], one, bulk=True)\n", None),
    "id_of taking another record type": (
        "run_batches([1], lambda x: x, id_of=lambda r: r.upper())\n", "attr-defined"),
    "a keyword of the wrong type": ("run_batches([1], lambda x: x, concurrency='8')\n", None),
    "a misspelt keyword": ("run_batches([1], lambda x: x, batchsize=8)\n", None),
    "a job name of the wrong type in arun_batches": (
        "import asyncio\nasyncio.run(arun_batches([1], lambda x: x, job=3))\n", None),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_the_checker_catches_a_wrong_use(checked: dict[str, list[str]], case: str) -> None:
    body, code_name = WRONG[case]
    lines = checked[f"wrong_{sorted(WRONG).index(case)}"]
    errors = [line for line in lines if ": error:" in line]
    assert errors, f"{case}: mypy accepted it:\n{_source(body)}"
    if code_name is not None:
        assert any(f"[{code_name}]" in line for line in errors), "\n".join(lines)
