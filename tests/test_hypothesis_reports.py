"""A failing property test must show its falsifying example, under this suite's own pytest
configuration (warnings are errors): hypothesis imports libcst while it writes the report, and
libcst's mypy_extensions.TypedDict DeprecationWarning once turned every such failure into an
INTERNALERROR that hid the example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAILING = '''
from hypothesis import given, settings, strategies as st

@settings(max_examples=5, database=None)
@given(st.integers())
def test_fails(x):
    assert x < 0
'''


def test_a_failing_property_shows_its_example(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "test_failing_property.py").write_text(FAILING, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(tmp_path), "-c", str(tmp_path / "pyproject.toml"), "--timeout", "120",
         str(tmp_path / "test_failing_property.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=180, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "INTERNALERROR" not in output, output
    # hypothesis words it "Failing test case" (older releases: "Falsifying example")
    assert "x=0" in output, output
