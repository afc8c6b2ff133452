"""Records (one generation plus its test outcome) and the crash-safe JSONL writer.

A record is a dict of JSON types: it rides on the test report (an attribute xdist
serializes) from a worker to the controller unchanged, and is one line of
``results.jsonl``.
Documented fields are listed in `RECORD_FIELDS`; the README shows one line.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.models.base import Generation

__all__ = ["RECORD_FIELDS", "JsonlWriter", "record_from_generation"]

#: Every key of a record, in file order.
RECORD_FIELDS: tuple[str, ...] = (
    "test_id",
    "outcome",
    "model",
    "spec",
    "alias",
    "provider",
    "temperature",
    "prompt_tokens",
    "completion_tokens",
    "ttft_s",
    "total_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "tokens_per_s",
    "finish_reason",
    "error",
    "prompt",
    "output",
    "reasoning",
    "seed",
    "max_tokens",
    "usage_reported",
    "energy",
    "worker",
    "host",
    "finished_at",
    "run",
    "run_passed",
    "sampling",
    "confidence",
    "fingerprint",
    "cpu_model",
    "failure",
)


def record_from_generation(
    generation: Generation,
    *,
    test_id: str,
    alias: str | None,
    worker: str,
) -> dict[str, Any]:
    """The record of one generation; ``outcome`` is filled in when the test reports."""
    timings = generation.timings
    tokens_per_s = (
        generation.usage.completion_tokens / timings.total_s if timings.total_s > 0 else None
    )
    record = {
        "test_id": test_id,
        "outcome": None,
        "model": generation.model,
        "spec": generation.spec,
        "alias": alias,
        "provider": generation.provider,
        "temperature": generation.temperature,
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
        # Filled by the repeated-sampling runner: run index, that run's verdict, and
        # the test's k/n summary.
        "run": None,
        "run_passed": None,
        "sampling": None,
        # Token-confidence metrics (None without logprobs) and the hardware.
        "confidence": _confidence(generation),
        "fingerprint": hardware_fingerprint(),
        "cpu_model": hardware()["cpu"],
        # The test's failure text (first 2000 characters) when it failed.
        "failure": None,
    }
    assert tuple(record) == RECORD_FIELDS
    return record


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


def _dumps(record: dict[str, Any]) -> str:
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

    def write(self, record: dict[str, Any]) -> None:
        line = _dumps(record)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("w", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.count += 1

    def rewrite(self, records: list[dict[str, Any]]) -> None:
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
                    out.write(_dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)
            self._handle = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
