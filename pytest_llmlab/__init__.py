"""pytest-llmlab: LLM behaviour and energy tests for pytest.

Import the public API from here; submodules are internal and may move.
"""

from __future__ import annotations

from pytest_llmlab.errors import (
    EndpointUnreachable,
    GenerationError,
    GenerationTimeout,
    HTTPStatusError,
    LLMLabError,
    MissingAPIKey,
    ModelNotFound,
    ModelUnavailable,
    StreamError,
)
from pytest_llmlab.expect import ExpectationFailed, confidence_of, expect, parse
from pytest_llmlab.llm import LLM, GenerationStream
from pytest_llmlab.models.base import (
    Generation,
    Message,
    Request,
    Timings,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from pytest_llmlab.models.spec import ModelSpec, parse_spec
from pytest_llmlab.samples import PassRate, Samples
from pytest_llmlab.stats import MetricStats

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "EndpointUnreachable",
    "ExpectationFailed",
    "Generation",
    "GenerationError",
    "GenerationStream",
    "GenerationTimeout",
    "HTTPStatusError",
    "LLMLabError",
    "Message",
    "MetricStats",
    "MissingAPIKey",
    "ModelNotFound",
    "ModelSpec",
    "ModelUnavailable",
    "PassRate",
    "Request",
    "Samples",
    "StreamError",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "__version__",
    "confidence_of",
    "expect",
    "parse",
    "parse_spec",
]
