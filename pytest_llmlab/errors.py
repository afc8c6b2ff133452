"""Exceptions a user of pytest-llmlab can catch, all importable from `pytest_llmlab`.

The tree (a test walks the package and fails on any exception class outside it)::

    LLMLabError                      anything this package raises on purpose
    ├── ModelUnavailable             the model cannot be used at all in this session
    │   ├── EndpointUnreachable      connection refused, DNS failure, connect timeout,
    │   │                            a server that accepts but never answers
    │   ├── MissingAPIKey            a cloud model whose key variable is not set
    │   └── ModelNotFound            no such model in the store, bad GGUF path
    ├── GenerationError              one request went wrong
    │   ├── HTTPStatusError          the server answered 4xx/5xx (status and its message)
    │   │                            or a redirect (where to)
    │   ├── GenerationTimeout        nothing arrived within --llm-timeout, or the
    │   │                            generation passed its --llm-deadline
    │   └── StreamError              the stream broke: cut before [DONE], malformed JSON,
    │                                a chunk of the wrong shape, no choice at all, an
    │                                event over 16 MiB, an error event inside the stream
    ├── ExpectationFailed            (also AssertionError) soft `expect` checks failed
    ├── SchemaValidationError        (also AssertionError) `validate` found schema errors
    ├── JSONExtractionError          (also ValueError) `extract_json` found no JSON value
    ├── SpecError                    (also ValueError) a model spec does not parse
    ├── SettingsError                (also ValueError) an option value does not parse
    ├── MeterUnavailable             a meter cannot run on this machine (and why)
    │   └── MeterSelectionError      (also ValueError) an explicit --llm-meter cannot run
    ├── NoSamples                    (also LookupError) a timeline has no samples in a span
    ├── HistoryError                 the history file is unusable or lacks that run
    ├── ReportFolderError            the report folder is not writable, or in use
    ├── CassetteError                a cassette (or a run's generations file) does not
    │   │                            read: file:line and what is wrong
    │   └── CassetteMiss             --llm-record=none (or a rescore) found no recording
    │                                of a request: the test, its key, the nearest entry
    └── SuiteError                   (also ValueError) a prompt suite or one of its cases
        │                            cannot be collected (file:line:column, the case)
        ├── TemplateError            a jinja2 template does not parse, or uses an
        │                            undefined variable
        └── FormatError              a benchmark file does not have its format's layout

`ModelUnavailable` is raised while the `llm` fixture is set up, so the test reports as
an *error* (or a skip under ``--llm-skip-unavailable``); `GenerationError` is raised by
``llm.generate`` inside the test body. Every message names the model and, where there is
one, the endpoint, and fits on one line. The classes that are also a built-in exception
keep that base, so ``except ValueError`` and pytest's assertion reporting still work.

Warnings (`pytest_llmlab.results.RecordLineWarning`, a UserWarning) are not errors
and are not in the tree.
"""

from __future__ import annotations

__all__ = [
    "CassetteError",
    "CassetteMiss",
    "EndpointUnreachable",
    "FormatError",
    "GenerationError",
    "GenerationTimeout",
    "HTTPStatusError",
    "HistoryError",
    "LLMLabError",
    "MissingAPIKey",
    "ModelNotFound",
    "ModelUnavailable",
    "ReportFolderError",
    "StreamError",
    "SuiteError",
    "TemplateError",
]


class LLMLabError(Exception):
    """Base of every error raised on purpose by pytest-llmlab."""


class ModelUnavailable(LLMLabError):
    """The model cannot be used in this session (checked once, at fixture setup)."""


class EndpointUnreachable(ModelUnavailable):
    """The model's endpoint refused or never accepted the connection."""


class MissingAPIKey(ModelUnavailable):
    """A cloud model needs an API key whose environment variable is unset."""


class ModelNotFound(ModelUnavailable):
    """A `local:` model is neither in the store, pullable, nor an existing GGUF file."""


class HistoryError(LLMLabError):
    """The history file cannot be read or written, or holds no run of that name."""


class ReportFolderError(LLMLabError):
    """The report folder cannot be used: not writable, not a folder, or held by
    another session."""


class CassetteError(LLMLabError):
    """A cassette line that is not an entry; the message starts with ``file:line``."""


class CassetteMiss(CassetteError):
    """A request that must be replayed has no recording: the message names the test,
    the request's key, and the nearest recorded request with what differs."""


class SuiteError(LLMLabError, ValueError):
    """A suite that cannot be collected; the message starts with ``file:line:column``."""


class TemplateError(SuiteError):
    """A suite template that does not parse or uses an undefined variable."""


class FormatError(SuiteError):
    """A file that cannot be read as its benchmark format; the message starts with
    ``file:line`` (or ``file`` for the file as a whole) and says what is wrong."""


class GenerationError(LLMLabError):
    """One generation request failed."""


class HTTPStatusError(GenerationError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class GenerationTimeout(GenerationError):
    """No byte arrived within the timeout, or the generation passed its deadline."""


class StreamError(GenerationError):
    """The response stream was cut short, malformed, or carried an error event."""


def hide_own_frames(excinfo: object) -> bool:
    """`__tracebackhide__` callable: hide this package's frames for its own errors.

    A user whose endpoint is down wants one line naming the model and URL under the line
    of their test that called it, not a wall of httpx and plugin frames. Unexpected
    exceptions (bugs) keep their full traceback.
    """
    errisinstance = getattr(excinfo, "errisinstance", None)
    return bool(errisinstance is not None and errisinstance(LLMLabError))
