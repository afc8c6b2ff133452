"""pytest-llmlab: LLM behaviour and energy tests for pytest.

The public API is exactly `__all__`: import it from here. Besides the package root,
`pytest_llmlab.hookspecs` documents the hooks a plugin or ``conftest.py`` implements.
Every other submodule is internal: names may move between releases.

Names are imported on first use (PEP 562): pytest imports this package at every start,
through the plugin, and a session without LLM tests should not pay for pydantic,
httpx and the rest (``bench/startup.py``).
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

if _typing.TYPE_CHECKING:
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
    from pytest_llmlab.extract import (
        JSONExtractionError,
        SchemaValidationError,
        extract_json,
        validate,
    )
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

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "CassetteError": "pytest_llmlab.errors",
    "CassetteMiss": "pytest_llmlab.errors",
    "Chat": "pytest_llmlab.llm",
    "CounterSample": "pytest_llmlab.energy.base",
    "EndpointUnreachable": "pytest_llmlab.errors",
    "EnergyMeter": "pytest_llmlab.energy.meters",
    "EnergyReading": "pytest_llmlab.energy.reading",
    "ExpectationFailed": "pytest_llmlab.expect",
    "FormatError": "pytest_llmlab.errors",
    "Generation": "pytest_llmlab.models.base",
    "GenerationError": "pytest_llmlab.errors",
    "GenerationStream": "pytest_llmlab.llm",
    "GenerationTimeout": "pytest_llmlab.errors",
    "HTTPStatusError": "pytest_llmlab.errors",
    "HistoryError": "pytest_llmlab.errors",
    "JSONExtractionError": "pytest_llmlab.extract",
    "LLM": "pytest_llmlab.llm",
    "LLMLabError": "pytest_llmlab.errors",
    "Message": "pytest_llmlab.models.base",
    "Meter": "pytest_llmlab.energy.base",
    "MeterSelectionError": "pytest_llmlab.energy.meters",
    "MeterUnavailable": "pytest_llmlab.energy.base",
    "MetricStats": "pytest_llmlab.stats",
    "MissingAPIKey": "pytest_llmlab.errors",
    "ModelNotFound": "pytest_llmlab.errors",
    "ModelSpec": "pytest_llmlab.models.spec",
    "ModelUnavailable": "pytest_llmlab.errors",
    "NoSamples": "pytest_llmlab.energy.timeline",
    "OpenWindow": "pytest_llmlab.energy.meters",
    "PassRate": "pytest_llmlab.generation_stats",
    "Record": "pytest_llmlab.results",
    "ReportFolderError": "pytest_llmlab.errors",
    "Request": "pytest_llmlab.models.base",
    "Samples": "pytest_llmlab.generation_stats",
    "SchemaValidationError": "pytest_llmlab.extract",
    "SettingsError": "pytest_llmlab.config",
    "SpecError": "pytest_llmlab.models.spec",
    "StreamError": "pytest_llmlab.errors",
    "SuiteError": "pytest_llmlab.errors",
    "TemplateError": "pytest_llmlab.errors",
    "Timings": "pytest_llmlab.models.base",
    "TokenLogprob": "pytest_llmlab.models.base",
    "TokenSegment": "pytest_llmlab.energy.base",
    "ToolCall": "pytest_llmlab.models.base",
    "TopLogprob": "pytest_llmlab.models.base",
    "Usage": "pytest_llmlab.models.base",
    "confidence_of": "pytest_llmlab.expect",
    "expect": "pytest_llmlab.expect",
    "extract_json": "pytest_llmlab.extract",
    "parse": "pytest_llmlab.expect",
    "parse_spec": "pytest_llmlab.models.spec",
    "validate": "pytest_llmlab.extract",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(_types.ModuleType):
    """This package's module type: the import system binds every imported submodule
    to its name on the package, and ``pytest_llmlab.expect`` (the module) must not
    replace `expect` (the function of that name, which the package exports)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, _types.ModuleType) and _HOMES.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
