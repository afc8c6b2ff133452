"""Shared fixtures of the plugin's own tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpcore  # noqa: F401  (see below)
import httpx  # noqa: F401  (see below)
import pandas  # type: ignore[import-untyped]  # noqa: F401  (see below)
import pytest
from loopback import LoopbackServer, serve_loopback
from suite_runs import SuiteLab

from pytest_llmlab import redact
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.store import store_home

# pytester's in-process runs drop the modules a run imported; numpy (under pandas, which
# the CSV report loads at session end) cannot be imported twice in one process, and a
# second copy of httpcore raises exceptions that httpx (imported once) cannot map, so
# they are imported here, before any inner run, and stay.

# pytester points HOME at each test's temporary folder: pin the model store to the
# user's real one first, or every inner run would pull its own copy of the model.
os.environ.setdefault("LLMLAB_HOME", str(store_home()))


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedLlamaCpp]:
    """The real default model served by in-process llama.cpp, shared by the session."""
    provider = EmbeddedLlamaCpp(
        model="smollm2-135m",
        display="local:smollm2-135m",
        threads=os.cpu_count() or 1,
        ctx=2048,
        timeout_s=120.0,
    )
    provider.ensure_available()
    yield provider
    provider.close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A running loopback protocol double (stopped, threads joined, at teardown)."""
    with serve_loopback() as double:
        yield double


@pytest.fixture
def fresh_process_redactor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test starts with no secret installed and no provider key in the environment."""
    for info in PROVIDERS.values():
        for name in info.key_envs:
            monkeypatch.delenv(name, raising=False)
    redact.reset()
    yield
    redact.reset()


@pytest.fixture(autouse=True)
def no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs must not append tables to a real GitHub job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def lab(
    pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> SuiteLab:
    """A pytester folder for prompt suites, answered by the loopback double."""
    return SuiteLab(pytester, server, monkeypatch)
