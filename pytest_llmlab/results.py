"""Records (one generation plus its test outcome) and the crash-safe JSONL writer.

`Record` is the one definition of a record's fields. A record is a dict of JSON types:
it rides on the test report (an attribute xdist serializes) from a worker to the
controller unchanged, and is one line of ``results.jsonl``. `PendingRecords` holds a
test's records until its outcome is known.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypedDict

import pytest

from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.models.base import Generation

if TYPE_CHECKING:
    from pytest_llmlab.repeat import RepeatResult

__all__ = [
    "RECORDS_ATTR",
    "RECORD_FIELDS",
    "REPEAT_ATTR",
    "JsonlWriter",
    "PendingRecords",
    "Record",
    "dumps_record",
    "record_from_generation",
    "report_outcome",
]

#: Report attributes that carry a test's records and its repeated-runs summary. Plain
#: attributes, not user_properties: pytest-xdist ships every JSON-able report attribute
#: to the controller, and JUnit XML then gets only the short properties it should show.
RECORDS_ATTR = "llmlab_records"
REPEAT_ATTR = "llmlab_sampling"


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
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    total_s: float | None
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
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
    #: The energy reading (`EnergyReading` as JSON, with its windows), or None.
    energy: dict[str, Any] | None
    #: The xdist worker id (``gw0``...) or ``main``.
    worker: str
    host: str
    finished_at: float
    #: For repeated tests: the run index, that run's verdict, the test's summary.
    run: int | None
    run_passed: bool | None
    sampling: dict[str, Any] | None
    #: Token-confidence metrics (None without logprobs).
    confidence: dict[str, float | None] | None
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
) -> Record:
    """The record of one generation; ``outcome`` is filled in when the test reports."""
    timings = generation.timings
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
        "prompt_tokens": generation.usage.prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
        "ttft_s": timings.ttft_s,
        "total_s": timings.total_s,
        "prefill_tokens_per_s": timings.prefill_tokens_per_s,
        "decode_tokens_per_s": timings.decode_tokens_per_s,
        "tokens_per_s": tokens_per_s,
        "finish_reason": generation.finish_reason,
        "error": generation.error,
        "prompt": generation.request.prompt,
        "output": generation.text,
        "reasoning": generation.reasoning,
        "seed": generation.request.seed,
        "max_tokens": generation.request.max_tokens,
        "usage_reported": generation.usage.reported,
        "energy": (
            generation.energy.model_dump(mode="json") if generation.energy is not None else None
        ),
        "worker": worker,
        "host": socket.gethostname(),
        "finished_at": time.time(),
        "run": None,
        "run_passed": None,
        "sampling": None,
        "confidence": _confidence(generation),
        "fingerprint": hardware_fingerprint(),
        "cpu_model": str(hardware()["cpu"]),
        "failure": None,
    }
    assert tuple(record) == RECORD_FIELDS
    return record


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
        failure = report.longreprtext[:2000] if report.failed else None
        finished: list[Record] = []
        for record in self.pending:
            done = record.copy()
            done["outcome"], done["failure"] = outcome, failure
            finished.append(done)
        self.pending.clear()
        self._marked = 0
        return finished


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _confidence(generation: Generation) -> dict[str, float | None] | None:
    from pytest_llmlab.expect import confidence_of

    conf = confidence_of(generation)
    if conf is None:
        return None
    return {
        "mean_prob": conf.mean_prob,
        "min_prob": conf.min_prob,
        "first_token_prob": conf.first_token_prob,
        "perplexity": conf.perplexity,
        "entropy": conf.entropy,
    }


def dumps_record(record: Mapping[str, Any]) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # NaN/inf are not JSON: write null rather than lose the record
        return json.dumps(_finite(record), ensure_ascii=False, default=str)


class JsonlWriter:
    """Appends one JSON line per record, flushed and fsynced as it is written.

    The file is opened (and truncated: it holds the latest run) on the first record,
    so a session that generates nothing leaves no file behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        line = dumps_record(record)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("w", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.count += 1

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

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
