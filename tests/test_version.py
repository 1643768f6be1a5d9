"""The version is written once, in Cargo.toml: the wheel's metadata and ``batchguard.__version__``
come from it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import batchguard

CARGO_TOML = Path(__file__).resolve().parent.parent / "Cargo.toml"
PYPROJECT = CARGO_TOML.with_name("pyproject.toml")


def test_version_is_the_one_in_cargo_toml() -> None:
    cargo_version = tomllib.loads(CARGO_TOML.read_text())["package"]["version"]
    assert batchguard.__version__ == cargo_version
    assert importlib.metadata.version("batchguard") == cargo_version


def test_pyproject_declares_no_version_of_its_own() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert "version" not in project, "pyproject.toml must take its version from Cargo.toml"
    assert "version" in project["dynamic"]
