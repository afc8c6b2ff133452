"""Shared fixtures of the plugin's own tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_llmlab.models.local import EmbeddedLlamaCpp


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
