"""``metrics.csv``: structured-extraction quality and cost, one row per model x field.

Built from the records of structured-extraction suites: those whose ``structured`` key
holds ``{"valid": bool, "error": str | None, "fields": {name: FieldScore.to_dict()}}``
(`pytest_llmlab.suites.structured`); every other record is ignored. Models are named
as every report names them (`pytest_llmlab.report.summary.model_name`), in the order they
first appear, and fields in the order they first appear for that model.

The columns (`METRICS_COLUMNS`):

``model``, ``field``
    The model's display name and the target column.
``n_total``, ``n_valid``
    The model's structured records that have this field, and how many of them were a
    valid answer (a JSON object that fits the schema).
``rouge1``, ``rouge2``, ``rougeL``
    Mean ROUGE F-measure (0-1) over the **valid** rows only: an invalid row counts in
    ``n_total`` and nowhere else, so quality and validity are read apart.
``bleu``, ``chrf``
    Corpus-level BLEU and chrF++ (0-100, sacrebleu through `pytest_llmlab.scoring`) over
    the valid rows' predictions against their references (a ``null`` prediction is the
    empty text). Corpus BLEU counts n-grams over all rows first, so fields of a word or
    two, with no 4-gram anywhere, score 0; chrF++ is the better guide for them.
``exact_match``
    The share (0-1) of valid rows whose prediction matches the reference
    (`pytest_llmlab.scoring.exact_match`).
``runtime_s``, ``tokens_in``, ``tokens_out``, ``tokens_per_sec``
    Per model, repeated on each of its field rows: the sum of ``total_s``, of
    ``prompt_tokens`` and of ``completion_tokens`` over its structured records (valid or
    not), and ``tokens_out / runtime_s``.
``wh``, ``wh_per_1k``
    Per model, repeated likewise: the energy of its structured records that have a
    reading (measured or estimated), ``sum(energy.joules) / 3600``, and Wh per 1000
    output tokens of those same records (records without a reading left out of both, so
    a partly metered run is not diluted).

A figure that cannot be computed (no valid row, no timing, no energy reading) is an
empty cell. Floats are written as ``repr`` writes them; text cells are defused against
spreadsheet formulas (`pytest_llmlab.redact.csv_cell`). `structured_summary` gives the
per-model figures the HTML report shows, from the same rows.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmlab.redact import csv_cell
from pytest_llmlab.report.summary import energy_of, finite_values, model_name
from pytest_llmlab.scoring import corpus_bleu, corpus_chrf

__all__ = ["METRICS_COLUMNS", "metrics_rows", "structured_summary", "write_metrics_csv"]

#: The columns of ``metrics.csv``, in order (see the module docstring).
METRICS_COLUMNS: tuple[str, ...] = (
    "model",
    "field",
    "n_total",
    "n_valid",
    "rouge1",
    "rouge2",
    "rougeL",
    "bleu",
    "chrf",
    "exact_match",
    "runtime_s",
    "tokens_in",
    "tokens_out",
    "tokens_per_sec",
    "wh",
    "wh_per_1k",
)

#: chrF++: chrF with word uni- and bigrams.
_CHRF_WORD_ORDER = 2
_ROUGE = ("rouge1", "rouge2", "rougeL")


@dataclass
class _Field:
    """One field's scores over a model's records: validity per record, and the valid
    rows' field dicts."""

    n_total: int = 0
    valid: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass
class _Model:
    records: list[Mapping[str, Any]] = field(default_factory=list)
    n_valid: int = 0
    fields: dict[str, _Field] = field(default_factory=dict)


def _structured(record: object) -> Mapping[str, Any] | None:
    """The record's structured result, or None (not a structured record, or malformed)."""
    if not isinstance(record, Mapping):
        return None
    value = record.get("structured")
    if isinstance(value, Mapping) and isinstance(value.get("fields"), Mapping):
        return value
    return None


def _groups(records: Iterable[Mapping[str, Any]]) -> dict[str, _Model]:
    models: dict[str, _Model] = {}
    for record in records:
        result = _structured(record)
        if result is None:
            continue
        model = models.setdefault(model_name(record), _Model())
        model.records.append(record)
        valid = result.get("valid") is True
        model.n_valid += valid
        for name, scores in result["fields"].items():
            entry = model.fields.setdefault(str(name), _Field())
            entry.n_total += 1
            if valid and isinstance(scores, Mapping):
                entry.valid.append(scores)
    return models


def _mean(values: Iterable[object]) -> float | None:
    numbers = finite_values(values)
    return math.fsum(numbers) / len(numbers) if numbers else None


def _count(values: Iterable[object]) -> int | None:
    """The sum of the integer values (booleans and other types ignored); None without."""
    numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return sum(numbers) if numbers else None


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _quality(scores: list[Mapping[str, Any]]) -> dict[str, float | None]:
    if not scores:
        return {name: None for name in (*_ROUGE, "bleu", "chrf", "exact_match")}
    hypotheses = [_text(s.get("prediction")) for s in scores]
    references = [_text(s.get("reference")) for s in scores]
    quality: dict[str, float | None] = {name: _mean(s.get(name) for s in scores) for name in _ROUGE}
    quality["bleu"] = corpus_bleu(hypotheses, references)
    quality["chrf"] = corpus_chrf(hypotheses, references, word_order=_CHRF_WORD_ORDER)
    quality["exact_match"] = _mean(float(s.get("exact_match") is True) for s in scores)
    return quality


def _cost(records: list[Mapping[str, Any]]) -> dict[str, float | int | None]:
    times = finite_values(r.get("total_s") for r in records)
    runtime = math.fsum(times) if times else None
    tokens_out = _count(r.get("completion_tokens") for r in records)
    metered = [
        (joules, r) for r in records if (joules := finite_values([energy_of(r).get("joules")]))
    ]
    wh = math.fsum(j[0] for j, _ in metered) / 3600.0 if metered else None
    metered_tokens = _count(r.get("completion_tokens") for _, r in metered)
    return {
        "runtime_s": runtime,
        "tokens_in": _count(r.get("prompt_tokens") for r in records),
        "tokens_out": tokens_out,
        "tokens_per_sec": (tokens_out / runtime if runtime and tokens_out is not None else None),
        "wh": wh,
        "wh_per_1k": wh / metered_tokens * 1000.0 if wh is not None and metered_tokens else None,
    }


def metrics_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` (keys `METRICS_COLUMNS`), one per model x field; none
    without a structured record. Quality figures are over valid rows only (ROUGE and
    exact match their mean, BLEU and chrF++ corpus-level); invalid rows count only in
    ``n_total``. See the module docstring for every column."""
    rows: list[dict[str, Any]] = []
    for model, group in _groups(records).items():
        cost = _cost(group.records)
        for name, entry in group.fields.items():
            rows.append(
                {
                    "model": model,
                    "field": name,
                    "n_total": entry.n_total,
                    "n_valid": len(entry.valid),
                    **_quality(entry.valid),
                    **cost,
                }
            )
    return rows


def structured_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model (in first-seen order), for the HTML report: ``model``, ``n_total``
    (structured records), ``n_valid``, ``validation_rate`` (``n_valid / n_total``) and
    ``fields``, a list of ``{"field", "n_valid", "rougeL", "chrf", "exact_match"}``
    taken from `metrics_rows` (so the page and ``metrics.csv`` agree: ROUGE-L and exact
    match are means over valid rows, chrF++ corpus-level), plus ``rougeL``, ``chrf``
    and ``exact_match`` averaged over the fields that have them (None without)."""
    records = list(records)
    groups = _groups(records)
    by_model: dict[str, list[dict[str, Any]]] = {model: [] for model in groups}
    for row in metrics_rows(records):
        by_model[row["model"]].append(
            {key: row[key] for key in ("field", "n_valid", "rougeL", "chrf", "exact_match")}
        )
    summary: list[dict[str, Any]] = []
    for model, group in groups.items():
        fields = by_model[model]
        n_total = len(group.records)
        summary.append(
            {
                "model": model,
                "n_total": n_total,
                "n_valid": group.n_valid,
                "validation_rate": group.n_valid / n_total,
                "fields": fields,
                **{key: _mean(f[key] for f in fields) for key in ("rougeL", "chrf", "exact_match")},
            }
        )
    return summary


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _cell(value: Any) -> str:
    """One CSV cell: empty for None, ``repr`` for floats, text defused (`csv_cell`) and
    quoted where it holds a comma, a quote, ``\\n`` or ``\\r`` (the csv module leaves a
    lone ``\\r`` unquoted, which reads back as a line break)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(csv_cell(value)) if isinstance(value, str) else str(value)
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES.search(text) else text


def write_metrics_csv(path: Path, records: Iterable[Mapping[str, Any]]) -> Path | None:
    """Write ``metrics.csv`` to ``path`` and return it; None, writing nothing, when no
    record has structured data. UTF-8, a header line, ``\\n`` line ends, quoted where a
    cell needs it; written to a temporary file and renamed over ``path``, so a reader
    never sees half a file."""
    rows = metrics_rows(records)
    if not rows:
        return None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with partial.open("x", encoding="utf-8", errors="backslashreplace", newline="") as out:
            out.write(",".join(map(_cell, METRICS_COLUMNS)) + "\n")
            out.writelines(",".join(_cell(row[c]) for c in METRICS_COLUMNS) + "\n" for row in rows)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target
