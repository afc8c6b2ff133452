"""Records (one generation plus its test outcome) and the crash-safe JSONL writer.

`Record` is the one definition of a record's fields. A record is a dict of JSON types:
it rides on the test report (an attribute xdist serializes) from a worker to the
controller unchanged, and is one line of ``results.jsonl``. `PendingRecords` holds a
test's records until its outcome is known.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypedDict

import pytest

from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.keys import RECORDS_ATTR, REPEAT_ATTR
from pytest_llmlab.redact import redact_text, redact_value

if TYPE_CHECKING:
    from pytest_llmlab.models.base import Generation
    from pytest_llmlab.repeat import RepeatResult

__all__ = [
    "RECORDS_ATTR",
    "RECORD_FIELDS",
    "REPEAT_ATTR",
    "JsonlWriter",
    "PendingRecords",
    "Record",
    "RecordLineWarning",
    "Spool",
    "crashed_test_records",
    "dumps_record",
    "iter_json_lines",
    "record_from_generation",
    "record_key",
    "report_outcome",
    "reported_records",
]

#: Report attributes that carry a test's records and its repeated-runs summary. Plain
#: attributes, not user_properties: pytest-xdist ships every JSON-able report attribute
#: to the controller, and JUnit XML then gets only the short properties it should show.


class Record(TypedDict):
    """One generation and its test's outcome: one line of ``results.jsonl``.

    The one definition of the record's fields: `RECORD_FIELDS` (the file order) and
    the record-level columns of ``results.csv`` derive from it, and the README's list
    is checked against it by a test. Values are JSON types only, so a record rides on a
    test report from an xdist worker to the controller unchanged.
    """

    test_id: str
    #: The test's outcome (passed, failed, skipped, xfailed, xpassed, error); None
    #: until the test reports.
    outcome: str | None
    #: The display name: the alias when one is given, else the spec.
    model: str
    spec: str
    alias: str | None
    provider: str
    temperature: float
    #: The suite file's name and the case's category, for prompt suites; else None.
    suite: str | None
    category: str | None
    #: For prompt suites: the case's id, the points this generation's checks scored
    #: and the most they could, and each check's verdict (``check``, ``passed``,
    #: ``points``); else None.
    case_id: str | None
    points: float | None
    max_points: float | None
    checks: list[dict[str, Any]] | None
    #: For an LLM judge's generation: the display name of the model it judged (such
    #: records are left out of summaries, pass rates and points); else None.
    judge_for: str | None
    #: For structured-extraction suites: ``{valid, error, fields: {name: {prediction,
    #: reference, rouge1, rouge2, rougeL, bleu, chrf, exact_match}}}``; else None.
    structured: dict[str, Any] | None
    #: Prompt tokens the ``context`` and ``injections`` added (llama.cpp's tokenizer;
    #: None without them or without a tokenizer), and the share of the reading's
    #: prefill joules they cost (pro rata over the prompt tokens processed).
    injection_tokens: int | None
    injection_joules: float | None
    #: HTTP attempts the generation took: 1, or more after retried 429/503/529 answers
    #: and connection resets (``--llm-retries``).
    attempts: int
    #: What the backend reported of the model (``quantization``, ``parameter_size``,
    #: ``context_length``, ``runtime``, ``runtime_version``...); None when nothing.
    backend: dict[str, Any] | None
    prompt_tokens: int | None
    #: The part of ``prompt_tokens`` the server took from its prompt cache; None when
    #: it does not say.
    cached_prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    total_s: float | None
    #: Prefill over the prompt tokens actually processed (cached ones excluded).
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    #: Where the two rates come from: ``server`` (its own timings, llama.cpp's
    #: ``prompt_per_second``/``predicted_per_second``) or ``client`` (computed from the
    #: stream's timings); None in a record of a test that died before a generation.
    rates_from: str | None
    #: Completion tokens over the whole request.
    tokens_per_s: float | None
    finish_reason: str | None
    error: str | None
    prompt: str
    output: str
    reasoning: str
    seed: int | None
    max_tokens: int | None
    usage_reported: bool
    #: What the generation cost at token prices (USD), where the price came from
    #: (``genai-prices <version>``, ``llm_prices``; ``no price`` for a cloud model
    #: without one) and the day (UTC) whose genai-prices prices apply; all None for a
    #: local or self-hosted model, whose cost is its energy's (``energy.cost``). See
    #: `pytest_llmlab.report.prices`.
    cost: float | None
    cost_source: str | None
    price_date: str | None
    #: The energy reading (`EnergyReading` as JSON, with its windows), or None.
    energy: dict[str, Any] | None
    #: Whether the generation was played back (a cassette, ``--llm-resume``,
    #: ``llmlab rescore``) rather than generated on this run, and the file it came
    #: from; its timings and energy are the recorded ones (energy provenance
    #: ``replayed``), its ``fingerprint`` and ``cpu_model`` the recording machine's.
    replayed: bool
    cassette: str | None
    #: The xdist worker id (``gw0``...) or ``main``.
    worker: str
    host: str
    finished_at: float
    #: The id of the run (session) that made the record: every file of a run carries it.
    run_id: str | None
    #: The turn of a conversation (``llm.chat()``) the generation answered, 0 first;
    #: None outside one.
    turn: int | None
    #: For repeated tests: the run index, that run's verdict, the test's summary.
    run: int | None
    run_passed: bool | None
    sampling: dict[str, Any] | None
    #: Token-confidence metrics (None without logprobs).
    confidence: dict[str, float | None] | None
    #: The functions the model called (``id``, ``name``, ``arguments_text``,
    #: ``arguments``, ``error``, ``mean_prob``, ``min_prob``: `ToolCall`), or None when
    #: the request offered no tools (and none came); over the tokens of every call, their mean
    #: probability and the lowest (None without calls or without their logprobs).
    tool_calls: list[dict[str, Any]] | None
    avg_tool_confidence: float | None
    min_tool_confidence: float | None
    fingerprint: str
    cpu_model: str
    #: The test's failure text (first 2000 characters) when it failed.
    failure: str | None


#: Every key of a record, in file order.
RECORD_FIELDS: tuple[str, ...] = tuple(Record.__annotations__)


def record_from_generation(
    generation: Generation,
    *,
    test_id: str,
    alias: str | None,
    worker: str,
    run_id: str | None = None,
) -> Record:
    """The record of one generation; ``outcome`` is filled in when the test reports."""
    timings = generation.timings
    recorded = generation.hardware or {}  # a replay's: the machine that recorded it
    calls, avg_tool, min_tool = _tool_calls(generation)
    tokens_per_s = (
        generation.usage.completion_tokens / timings.total_s if timings.total_s > 0 else None
    )
    record: Record = {
        "test_id": test_id,
        "outcome": None,
        "model": generation.model,
        "spec": generation.spec,
        "alias": alias,
        "provider": generation.provider,
        "temperature": generation.temperature,
        "suite": None,
        "category": None,
        "case_id": None,
        "points": None,
        "max_points": None,
        "checks": None,
        "judge_for": None,
        "structured": None,
        "injection_tokens": generation.injection_tokens,
        "injection_joules": _injection_joules(generation),
        "attempts": generation.attempts,
        "backend": generation.backend or None,
        "prompt_tokens": generation.usage.prompt_tokens,
        "cached_prompt_tokens": generation.usage.cached_prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
        "ttft_s": timings.ttft_s,
        "total_s": timings.total_s,
        "prefill_tokens_per_s": timings.prefill_tokens_per_s,
        "decode_tokens_per_s": timings.decode_tokens_per_s,
        "rates_from": timings.rates_from,
        "tokens_per_s": tokens_per_s,
        "finish_reason": generation.finish_reason,
        "error": generation.error,
        "prompt": generation.request.prompt,
        "output": generation.text,
        "reasoning": generation.reasoning,
        "seed": generation.request.seed,
        "max_tokens": generation.request.max_tokens,
        "usage_reported": generation.usage.reported,
        "cost": None,  # priced by the runner (`CostBudget.charge`): it knows llm_prices
        "cost_source": None,
        "price_date": None,
        "energy": (
            generation.energy.model_dump(mode="json") if generation.energy is not None else None
        ),
        "replayed": generation.replayed,
        "cassette": generation.cassette,
        "worker": worker,
        "host": socket.gethostname(),
        "finished_at": time.time(),
        "run_id": run_id,
        "turn": generation.turn,
        "run": None,
        "run_passed": None,
        "sampling": None,
        "confidence": _confidence(generation),
        "tool_calls": calls,
        "avg_tool_confidence": avg_tool,
        "min_tool_confidence": min_tool,
        "fingerprint": recorded.get("fingerprint") or hardware_fingerprint(),
        "cpu_model": recorded.get("cpu_model") or str(hardware()["cpu"]),
        "failure": None,
    }
    assert tuple(record) == RECORD_FIELDS
    # The one redaction step: what leaves the process (JSONL, CSV, HTML, history,
    # spool) is built from records; the Generation in memory keeps the model's words.
    return redact_value(record)  # type: ignore[return-value]  # same shape, masked


def report_outcome(report: pytest.TestReport, call_outcome: str | None) -> str | None:
    """The test outcome a record carries after ``report``, or None while it is not yet
    known (a passing setup). ``call_outcome`` is what the call phase gave, if it ran."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.when == "setup":
        return "skipped" if report.skipped else None
    return call_outcome or "passed"


@dataclass
class PendingRecords:
    """One test item's records until its outcome is known (kept in ``item.stash``)."""

    pending: list[Record] = field(default_factory=list)
    call_outcome: str | None = None
    #: The repeated-runs summary (`RepeatResult.to_dict`) and its one-line text,
    #: for repeated tests.
    repeat_summary: dict[str, Any] | None = None
    repeat_text: str = ""

    _marked: int = 0

    def add(self, record: Record) -> None:
        self.pending.append(record)

    def mark_run(self, passed: bool) -> None:
        """Set ``run_passed`` on the records of the run that just ended (those added
        since the previous call)."""
        for record in self.pending[self._marked :]:
            record["run_passed"] = passed
        self._marked = len(self.pending)

    def set_repeat_result(self, result: RepeatResult) -> None:
        """Give every record of the test the summary of its repeated runs."""
        self.repeat_summary, self.repeat_text = result.to_dict(), result.summary()
        for record in self.pending:
            record["sampling"] = self.repeat_summary

    def finish(self, report: pytest.TestReport) -> list[Record]:
        """The records to ship with ``report`` (outcome and failure filled in), or none
        while the outcome is unknown; the pending list is emptied when they ship."""
        outcome = report_outcome(report, self.call_outcome)
        if report.when == "call":
            self.call_outcome = outcome
        if not self.pending or outcome is None:
            return []
        # Masked before the cut, so no part of a secret survives the cut.
        failure = redact_text(report.longreprtext)[:2000] if report.failed else None
        finished: list[Record] = []
        for record in self.pending:
            done = record.copy()
            done["outcome"], done["failure"] = outcome, failure
            finished.append(done)
        self.pending.clear()
        self._marked = 0
        return finished


def _injection_joules(generation: Generation) -> float | None:
    """The injections' share of the prefill energy: prefill joules x injection tokens
    / prompt tokens processed (cached ones cost no prefill)."""
    tokens, reading = generation.injection_tokens, generation.energy
    processed = generation.usage.processed_prompt_tokens
    if not tokens or reading is None or reading.prefill_joules is None or not processed:
        return None
    return reading.prefill_joules * min(tokens, processed) / processed


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _confidence(generation: Generation) -> dict[str, float | None] | None:
    """The record's confidence metrics; None (with a warning) when they cannot be
    computed: building a record never raises, so a record is never lost to a metric."""
    from pytest_llmlab.expect import confidence_of

    try:
        conf = confidence_of(generation)
    except Exception as exc:  # noqa: BLE001 (any bug in a metric must not lose the record)
        with contextlib.suppress(Warning):  # filterwarnings=error must not lose it either
            warnings.warn(
                f"pytest-llmlab: confidence metrics of {generation.model} not computed "
                f"({type(exc).__name__}: {exc}); recorded as null",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    if conf is None:
        return None
    return {
        "mean_prob": conf.mean_prob,
        "min_prob": conf.min_prob,
        "first_token_prob": conf.first_token_prob,
        "perplexity": conf.perplexity,
        "entropy": conf.entropy,
    }


def _tool_calls(
    generation: Generation,
) -> tuple[list[dict[str, Any]] | None, float | None, float | None]:
    """The record's ``tool_calls``, ``avg_tool_confidence`` and ``min_tool_confidence``."""
    calls = generation.tool_calls
    tokens = [token for call in calls for token in call.tokens]
    listed = [
        call.model_dump(include={"id", "name", "arguments_text", "arguments", "error"})
        | {"mean_prob": call.mean_prob, "min_prob": call.min_prob}
        for call in calls
    ]
    return (
        listed if generation.request.tools or calls else None,
        sum(token.prob for token in tokens) / len(tokens) if tokens else None,
        min((token.prob for token in tokens), default=None),
    )


def dumps_record(record: Mapping[str, Any]) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # NaN/inf are not JSON: write null rather than lose the record
        return json.dumps(_finite(record), ensure_ascii=False, default=str)


#: The least time between a `JsonlWriter`'s fsyncs. An fsync costs a millisecond or
#: more on the thread that writes, on every record (many a second under
#: ``--llm-concurrency``); a flushed line already survives its process being killed.
SYNC_INTERVAL_S = 1.0


class JsonlWriter:
    """Appends one JSON line per record, flushed as it is written (a killed process
    loses none) and fsynced with the first record, then with the first record at least
    `SYNC_INTERVAL_S` after the last fsync (everything before it with it), and on close:
    a machine that goes down loses only lines written since the last fsync.

    The file is opened (``mode`` ``"w"``: truncated, it holds the latest run) on the
    first record, so a session that generates nothing leaves no file behind.
    """

    def __init__(self, path: Path, *, mode: str = "w", fsync: bool = True) -> None:
        """``fsync=False``: flushed only, never fsynced."""
        self.path = path
        self.mode = mode
        self._fsync = fsync
        self.count = 0
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()
        self._synced_at = -math.inf
        self._unsynced = False

    def write(self, record: Mapping[str, Any]) -> None:
        line = dumps_record(record)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open(self.mode, encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()
            self._unsynced = self._fsync
            if self._fsync and time.monotonic() - self._synced_at >= SYNC_INTERVAL_S:
                self._sync()
            self.count += 1

    def _sync(self) -> None:
        """fsync the open file (under the lock)."""
        assert self._handle is not None
        os.fsync(self._handle.fileno())
        self._synced_at = time.monotonic()
        self._unsynced = False

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file's content atomically (temp file in the same folder, fsync,
        rename): a crash leaves the old file or the new one, never half of each."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with partial.open("w", encoding="utf-8") as out:
                for record in records:
                    out.write(dumps_record(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
            self._handle = self.path.open("a", encoding="utf-8")
            self._unsynced = False

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                if self._unsynced:
                    self._sync()
                self._handle.close()
                self._handle = None


class RecordLineWarning(UserWarning):
    """A line of a results file that is not a record; it was skipped."""


#: Strings up to this length are shared between the records read from one file.
_SHARED_STRING_MAX = 512


def _shared(value: Any, strings: dict[str, str]) -> Any:
    """``value`` with its dict keys and short strings replaced by one shared copy each:
    records repeat the same keys, model names, notes and hosts thousands of times, and
    a record read back this way takes under half the memory (10 KB -> 4 KB)."""
    if isinstance(value, dict):
        return {strings.setdefault(k, k): _shared(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v, strings) for v in value]
    if isinstance(value, str) and len(value) <= _SHARED_STRING_MAX:
        return strings.setdefault(value, value)
    return value


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Each JSON object line of a JSONL file, with its line number as ``__line__``;
    lines that are not JSON objects warn and are skipped. Repeated strings are shared
    between the records (see `_shared`)."""
    strings: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                warnings.warn(
                    f"{path}:{number}: skipped a line that is not JSON ({exc.msg})",
                    RecordLineWarning,
                    stacklevel=2,
                )
                continue
            if not isinstance(record, dict):
                warnings.warn(
                    f"{path}:{number}: skipped a line that is not a record (no test_id)",
                    RecordLineWarning,
                    stacklevel=2,
                )
                continue
            record = _shared(record, strings)
            record["__line__"] = number
            yield record


# -- the worker spool --------------------------------------------------------------------


class Spool:
    """A process's fsynced log of its LLM tests: a ``start`` line when a test's model
    is ready, a ``record`` line for every finished generation (before its test ends),
    and a ``report`` line with the test's finished records (outcome filled in).

    xdist workers keep one, so that when a worker dies mid-test the controller can
    still write every generation that completed and a record for the crashed test, and
    when the controller is interrupted before it processed every report it can still
    write every finished record.
    """

    def __init__(self, path: Path) -> None:
        self._writer = JsonlWriter(path, mode="a")

    @property
    def path(self) -> Path:
        return self._writer.path

    def started(self, **case: object) -> None:
        """The test ``case["test_id"]`` is about to generate with this model."""
        self._writer.write({"kind": "start", **case})

    def finished(self, record: Record) -> None:
        self._writer.write({"kind": "record", "record": record})

    def reported(self, records: list[Record]) -> None:
        self._writer.write({"kind": "report", "records": records})

    def close(self) -> None:
        self._writer.close()


def record_key(record: Mapping[str, Any]) -> tuple[object, ...]:
    """What tells one record from every other of a run."""
    return (record.get("worker"), record.get("test_id"), record.get("finished_at"))


def reported_records(spool: Path) -> Iterator[Record]:
    """Every finished record (outcome filled in) a process spooled."""
    for entry in iter_json_lines(spool):
        if entry.get("kind") == "report" and isinstance(entry.get("records"), list):
            for record in entry["records"]:
                if isinstance(record, dict):
                    yield record  # type: ignore[misc]  # written by us


def crashed_test_records(spool: Path, test_id: str, failure: str) -> list[Record]:
    """The records of ``test_id`` that a dead process spooled, marked failed with
    ``failure``; when none of its generations completed, one record built from its
    ``start`` line saying so. No spool, or no trace of the test, gives none."""
    start: dict[str, Any] | None = None
    records: list[Record] = []
    if not spool.is_file():
        return []
    for entry in iter_json_lines(spool):
        if entry.get("kind") == "start" and entry.get("test_id") == test_id:
            start = entry
        elif entry.get("kind") == "record":
            record = entry.get("record")
            if isinstance(record, dict) and record.get("test_id") == test_id:
                records.append(record)  # type: ignore[arg-type]  # written by us
    if not records and start is not None:
        records.append(_stub_record(start))
    for record in records:
        record["outcome"], record["failure"] = "failed", failure[:2000]
    return records


def _stub_record(start: Mapping[str, Any]) -> Record:
    """A record for a test that died before any generation completed."""
    return {
        "test_id": str(start.get("test_id")),
        "outcome": None,
        "model": str(start.get("model")),
        "spec": str(start.get("spec")),
        "alias": start.get("alias"),
        "provider": str(start.get("provider")),
        "temperature": float(start.get("temperature") or 0.0),
        "suite": start.get("suite"),
        "category": start.get("category"),
        "case_id": start.get("case_id"),
        "points": 0.0 if start.get("max_points") is not None else None,
        "max_points": start.get("max_points"),
        "checks": None,
        "judge_for": None,
        "structured": None,
        "injection_tokens": None,
        "injection_joules": None,
        "attempts": 0,
        "backend": None,
        "prompt_tokens": None,
        "cached_prompt_tokens": None,
        "completion_tokens": None,
        "ttft_s": None,
        "total_s": None,
        "prefill_tokens_per_s": None,
        "decode_tokens_per_s": None,
        "rates_from": None,
        "tokens_per_s": None,
        "finish_reason": "error",
        "error": "the process running the test died before a generation completed",
        "prompt": "",
        "output": "",
        "reasoning": "",
        "seed": None,
        "max_tokens": None,
        "usage_reported": False,
        "cost": None,
        "cost_source": None,
        "price_date": None,
        "energy": None,
        "replayed": False,
        "cassette": None,
        "worker": str(start.get("worker")),
        "host": socket.gethostname(),
        "finished_at": time.time(),
        "run_id": start.get("run_id"),
        "turn": None,
        "run": None,
        "run_passed": None,
        "sampling": None,
        "confidence": None,
        "tool_calls": None,
        "avg_tool_confidence": None,
        "min_tool_confidence": None,
        "fingerprint": hardware_fingerprint(),
        "cpu_model": str(hardware()["cpu"]),
        "failure": None,
    }
