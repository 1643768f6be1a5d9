"""The package stays a house that is easy to change (issue 8): no module grows back into a
thousand-line file that holds several concerns.

A file past its limit is a sign it holds two things; split it by concern (CONTRIBUTING.md says
where each kind of change goes) rather than raising the limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON_LIMIT = 500
# Rust keeps its unit tests beside the code; a module's tests file (`tests.rs`) is not counted.
RUST_LIMIT = 700


def _lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f)


def _too_long(files: list[Path], limit: int) -> list[str]:
    return [f"{path.relative_to(ROOT)}: {n} lines" for path in files if (n := _lines(path)) > limit]


def test_no_python_module_over_the_limit() -> None:
    files = sorted((ROOT / "python" / "batchguard").rglob("*.py"))
    assert files, "the package's sources were not found"
    assert _too_long(files, PYTHON_LIMIT) == [], f"split these by concern (limit {PYTHON_LIMIT} lines)"


def test_no_rust_module_over_the_limit() -> None:
    files = sorted(path for path in (ROOT / "src").rglob("*.rs") if path.name != "tests.rs")
    assert files, "the crate's sources were not found"
    assert _too_long(files, RUST_LIMIT) == [], f"split these by concern (limit {RUST_LIMIT} lines)"


@pytest.mark.parametrize("path", ["src/lib.rs"])
def test_unsafe_code_is_denied_outside_the_ffi_module(path: str) -> None:
    """`unsafe` is confined to src/bindings/ffi.rs: the crate denies it everywhere else."""
    assert "#![deny(unsafe_code)]" in (ROOT / path).read_text(encoding="utf-8")
    allowed = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "src").rglob("*.rs"))
               if "allow(unsafe_code)" in p.read_text(encoding="utf-8")]
    assert allowed == ["src/bindings/ffi.rs"]
