"""The package has no import cycle, lazy imports included, and no lazy import at all.

Every module of ``python/batchguard`` is parsed with ``ast`` (nothing is imported), and every
import of another batchguard module becomes an edge: at module level and inside functions
alike, since an import deferred into a function to dodge a cycle is still a cycle (the two
modules still need each other; only the order they load in hides it). Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "batchguard"
ROOT = Path(__file__).resolve().parent.parent / "python" / PACKAGE


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module by name: the .py files, and the compiled extension by its stub (``_native``)."""
    modules = {_module_name(path): path for path in sorted(ROOT.rglob("*.pyi"))}
    modules.update({_module_name(path): path for path in sorted(ROOT.rglob("*.py"))})
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them but those under ``if TYPE_CHECKING``
    (an ``else:`` branch of one still runs)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
             modules: dict[str, Path]) -> set[str]:
    """The batchguard modules one import statement loads (other packages are left out)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = importer.split(".")
            # `from . import x` in a package's __init__ is relative to the package itself.
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # `from pkg import name` loads pkg.name when it is a module, else pkg itself.
        names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                 for alias in node.names]
    return {name for name in names if name in modules and name != importer}


def import_graph() -> dict[str, set[str]]:
    """Module -> the batchguard modules it imports (at module level or in a function)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.suffix == ".pyi":  # a stub's imports never run: the extension imports nothing of ours
            graph[name] = set()
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, name, path.name == "__init__.py", modules)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (iterative depth-first search)."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        colour[start] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour[nxt] == grey:
                return [*path[path.index(nxt):], nxt]
            elif colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    tree = ast.parse("import os\n"
                     "from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from .jobs import JobStore\n"
                     "else:\n    from .errors import ConfigError\n"
                     "def f():\n    from .api import run_batches\n    from . import _native\n")
    modules = dict.fromkeys(["batchguard", "batchguard.api", "batchguard.errors",
                             "batchguard.jobs", "batchguard._native", "batchguard.replay"], Path())
    targets = set().union(*(_targets(node, "batchguard.replay", False, modules)
                            for node in _imports(tree)))
    assert targets == {"batchguard.errors", "batchguard.api", "batchguard._native"}


def test_find_cycle_reports_the_cycle_it_finds() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def lazy_imports() -> list[str]:
    """Every import of a batchguard module made inside a function, as ``module:line``: one
    that is not a cycle today only waits for the edge that makes it one, and hides from a
    reader which modules a module needs."""
    modules = _modules()
    found: list[str] = []
    for name, path in modules.items():
        if path.suffix == ".pyi":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in _imports(function):
                if _targets(node, name, path.name == "__init__.py", modules):
                    found.append(f"{name}:{node.lineno}")
    return sorted(set(found))


def test_lazy_imports_are_found() -> None:
    tree = ast.parse("def f():\n    from .errors import ConfigError\n")
    function = tree.body[0]
    modules = dict.fromkeys(["batchguard.errors", "batchguard.replay"], Path())
    assert [_targets(node, "batchguard.replay", False, modules) for node in _imports(function)] == [
        {"batchguard.errors"}]


def test_no_module_imports_another_inside_a_function() -> None:
    """Module-level imports only: the graph a reader sees at the top of a file is the whole graph."""
    assert lazy_imports() == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "batchguard.api" in graph and len(graph) > 20  # the walk really saw the package
    cycle = find_cycle(graph)
    if cycle is not None:
        pytest.fail("import cycle (lazy imports count, TYPE_CHECKING ones do not): "
                    + " -> ".join(cycle))
