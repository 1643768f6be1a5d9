"""``--fn MODULE:CALLABLE``: the user's callback, imported by name."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["load_callable", "portable_spec"]


def load_callable(spec: str) -> Callable[[Any], Any]:
    """The callable named by ``MODULE:CALLABLE`` (or ``path/to/file.py:CALLABLE``).

    The working directory is importable, as with ``python -m``. Errors name the spec.

    >>> load_callable("json:dumps")([1])
    '[1]'
    >>> load_callable("no_such_module_xyz:f")
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: cannot import 'no_such_module_xyz:f': No module named 'no_such_module_xyz'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:CALLABLE (e.g. mypackage.tasks:process)",
                                 param_hint="'--fn'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ImportError(f"no file {module_name}")
            unit = importlib.util.spec_from_file_location(path.stem, path)
            if unit is None or unit.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(unit)
            sys.modules.setdefault(path.stem, module)
            unit.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the module raises, the spec is at fault
        detail = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise click.BadParameter(f"cannot import {spec!r}: {detail}", param_hint="'--fn'") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(f"cannot import {spec!r}: {module_name!r} has no attribute "
                                     f"{attr!r}", param_hint="'--fn'") from None
    if not callable(target):
        raise click.BadParameter(f"{spec!r} is a {type(target).__name__}, not a callable",
                                 param_hint="'--fn'")
    return target  # type: ignore[no-any-return]


def portable_spec(spec: str) -> str:
    """``spec`` with a file path made absolute, so ``jobs resume`` finds it from anywhere."""
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        return f"{os.path.abspath(module_name)}:{attr}"
    return spec
