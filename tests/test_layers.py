"""The package's layering: no import cycle between its parts, settings import no feature.

Imports are read from the source (every ``import`` statement, inside functions too, but
not those under ``if TYPE_CHECKING:``, which never run). A part is a top-level module
(``config``) or subpackage (``models``).
"""

from __future__ import annotations

import ast
import graphlib
from collections import defaultdict
from pathlib import Path

import pytest_llmlab

PACKAGE = Path(pytest_llmlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(source: str) -> set[str]:
    tree = ast.parse(source)
    type_only: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            type_only.update(id(sub) for sub in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("pytest_llmlab.")}


def _imports() -> dict[str, set[str]]:
    return {
        _module_name(path): _runtime_imports(path.read_text(encoding="utf-8"))
        for path in PACKAGE.rglob("*.py")
    }


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_between_parts() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imported in _imports().items():
        if not _part(module):
            continue  # the package root re-exports the public API from everywhere
        graph[_part(module)].update(
            _part(name) for name in imported if _part(name) not in ("", _part(module))
        )
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_settings_import_no_feature_module() -> None:
    allowed = {
        "pytest_llmlab.errors",
        "pytest_llmlab.models.providers",
        "pytest_llmlab.models.spec",
        "pytest_llmlab.option_values",
        "pytest_llmlab.stats",
    }
    assert _imports()["pytest_llmlab.config"] <= allowed


def test_models_do_not_import_settings_or_pytest_wiring() -> None:
    for module, imported in _imports().items():
        if _part(module) == "models":
            wiring = {n for n in imported if _part(n) in {"config", "plugin", "cases", "report"}}
            assert not wiring, f"{module} imports {sorted(wiring)}"
