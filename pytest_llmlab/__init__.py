"""pytest-llmlab: LLM behaviour and energy tests for pytest.

The public API is exactly `__all__`: import it from here. Besides the package root,
`pytest_llmlab.hookspecs` documents the hooks a plugin or ``conftest.py`` implements.
Every other submodule is internal: names may move between releases.
"""

from __future__ import annotations

from pytest_llmlab.config import SettingsError
from pytest_llmlab.energy.base import CounterSample, Meter, MeterUnavailable, TokenSegment
from pytest_llmlab.energy.meters import EnergyMeter, MeterSelectionError, OpenWindow
from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.energy.timeline import NoSamples
from pytest_llmlab.errors import (
    CassetteError,
    CassetteMiss,
    EndpointUnreachable,
    FormatError,
    GenerationError,
    GenerationTimeout,
    HistoryError,
    HTTPStatusError,
    LLMLabError,
    MissingAPIKey,
    ModelNotFound,
    ModelUnavailable,
    ReportFolderError,
    StreamError,
    SuiteError,
    TemplateError,
)
from pytest_llmlab.expect import ExpectationFailed, confidence_of, expect, parse
from pytest_llmlab.extract import JSONExtractionError, SchemaValidationError, extract_json, validate
from pytest_llmlab.generation_stats import PassRate, Samples
from pytest_llmlab.llm import LLM, Chat, GenerationStream
from pytest_llmlab.models.base import (
    Generation,
    Message,
    Request,
    Timings,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from pytest_llmlab.models.spec import ModelSpec, SpecError, parse_spec
from pytest_llmlab.results import Record
from pytest_llmlab.stats import MetricStats

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "CassetteError",
    "CassetteMiss",
    "Chat",
    "CounterSample",
    "EndpointUnreachable",
    "EnergyMeter",
    "EnergyReading",
    "ExpectationFailed",
    "FormatError",
    "Generation",
    "GenerationError",
    "GenerationStream",
    "GenerationTimeout",
    "HTTPStatusError",
    "HistoryError",
    "JSONExtractionError",
    "LLMLabError",
    "Message",
    "Meter",
    "MeterSelectionError",
    "MeterUnavailable",
    "MetricStats",
    "MissingAPIKey",
    "ModelNotFound",
    "ModelSpec",
    "ModelUnavailable",
    "NoSamples",
    "OpenWindow",
    "PassRate",
    "Record",
    "ReportFolderError",
    "Request",
    "Samples",
    "SchemaValidationError",
    "SettingsError",
    "SpecError",
    "StreamError",
    "SuiteError",
    "TemplateError",
    "Timings",
    "TokenLogprob",
    "TokenSegment",
    "ToolCall",
    "TopLogprob",
    "Usage",
    "__version__",
    "confidence_of",
    "expect",
    "extract_json",
    "parse",
    "parse_spec",
    "validate",
]
