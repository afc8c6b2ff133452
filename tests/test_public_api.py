"""The public surface: `pytest_llmlab.__all__` is complete and every error is in the tree.

Following httpx's ``test_exported_members``: every public name bound at the package
root is listed in ``__all__`` (nothing public by accident, nothing missing), and every
exception class the package defines derives from `LLMLabError` and is drawn in the
tree of `pytest_llmlab.errors`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest_llmlab
from pytest_llmlab import errors


def _package_modules() -> list[types.ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(pytest_llmlab.__path__, "pytest_llmlab.")]
    return [importlib.import_module(name) for name in names]


def test_all_lists_exactly_the_public_root_names() -> None:
    _package_modules()  # importing submodules binds them on the package: they must not count
    for name in pytest_llmlab.__all__:  # the root imports each name on first use
        getattr(pytest_llmlab, name)
    public = {
        name
        for name, value in vars(pytest_llmlab).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")  # from __future__ import annotations
    assert sorted(public | {"__version__"}) == sorted(pytest_llmlab.__all__)


def test_extension_types_are_exported() -> None:
    for name in ("EnergyReading", "Meter", "CounterSample", "EnergyMeter", "OpenWindow", "Record"):
        assert name in pytest_llmlab.__all__, name


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in _package_modules():
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and not issubclass(value, Warning)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = value
    return found


def test_every_exception_is_in_the_tree() -> None:
    classes = _exception_classes()
    assert "LLMLabError" in classes and "SettingsError" in classes
    tree = errors.__doc__ or ""
    outside = sorted(n for n, c in classes.items() if not issubclass(c, errors.LLMLabError))
    assert not outside, f"exceptions outside the LLMLabError tree: {outside}"
    undrawn = sorted(n for n in classes if f" {n} " not in tree)
    assert not undrawn, f"exceptions missing from the tree in errors.py: {undrawn}"
    unexported = sorted(n for n in classes if n not in pytest_llmlab.__all__)
    assert not unexported, f"exceptions not exported from pytest_llmlab: {unexported}"


def test_tree_parents_match_the_classes() -> None:
    """Each line of the drawn tree sits under its real base class."""
    classes = _exception_classes()
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        stripped = line.lstrip(" │├└─")
        name = stripped.split(" ", 1)[0]
        if name not in classes:
            continue
        depth = len(line) - len(stripped)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parent = classes[stack[-1][1]]
            assert parent in classes[name].__mro__[1:], f"{name} drawn under {stack[-1][1]}"
        stack.append((depth, name))
