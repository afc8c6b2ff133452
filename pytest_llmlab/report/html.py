"""``report.html``: one self-contained page of a run's records.

The page has a header (run time, energy meter setup, hardware), a per-model summary
table, four charts drawn here as inline SVG (total energy per model, the Wh/1k
distribution per model, pass rate against energy with the Pareto front, pass rate by
model and temperature) and a filterable, paginated table of every generation whose
rows open to show the prompt, the output, the reasoning and any error.

Everything is inline: CSS, one small script and the data, so the file works offline
and from an e-mail attachment. Record text (prompts, outputs, model names, notes,
errors) is untrusted:

* the Jinja environment autoescapes every expression, and no record value is ever
  marked safe;
* the table's data travels in one ``<script type="application/json">`` island written
  by `json_island`, with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\uXXXX``,
  read by the script with ``JSON.parse(textContent)`` and put into the page with
  ``textContent`` only;
* a Content-Security-Policy meta tag allows no network access, no plugins, and only
  our own script (by a per-render nonce), so markup that slipped through would not run.

Every credential in use is masked (`pytest_llmlab.redact.current`) in each text before
it is cut to `TEXT_LIMIT`, so no key is left half readable by the cut.

Scale: summaries and charts use every record; the table data is compact (repeated
strings are stored once) and texts are cut to `TEXT_LIMIT` characters each, with
at most `TEXT_BUDGET` bytes of text in all (failing generations first), so 100k
records make a page of well under 20 MB. The per-model figures (the summary table
and the charts) are `pytest_llmlab.report.summary.model_summary`'s, and tests are
counted by its outcome rule: bootstrap intervals share a bounded number of draws, and
a model with more than `BOOTSTRAP_MAX_N` readings gets the normal (central limit)
interval of its mean instead, which the page says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.resources
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from pytest_llmlab import __version__
from pytest_llmlab.redact import Redactor, current
from pytest_llmlab.report.leaderboard import format_points, leaderboard
from pytest_llmlab.report.metrics import structured_summary
from pytest_llmlab.report.summary import (
    BOOTSTRAP_MAX_N,
    ModelRow,
    energy_of,
    finite_values,
    model_name,
    model_summary,
    outcome_passed,
    verdicts_by_test,
)
from pytest_llmlab.stats import finite_or_none

__all__ = [
    "PAGE_SIZE",
    "TEXT_BUDGET",
    "TEXT_LIMIT",
    "json_island",
    "pareto_front",
    "render_html",
    "write_html",
]

#: Rows per page of the test table.
PAGE_SIZE = 500
#: Characters kept of each text field (prompt, output, reasoning, error ...).
TEXT_LIMIT = 2000
#: UTF-8 bytes of text embedded for the table in all; later generations show a note.
TEXT_BUDGET = 6_000_000

_NA = "–"

# Chart layout (SVG user units).
_WIDTH = 760
_LEFT = 220  # room for model names
_RIGHT = 96  # room for value labels
_TOP = 12
_ROW = 26
_AXIS = 46  # tick labels and the axis label below a plot
_LABEL_CHARS = 28  # model names longer than this are cut (the full name is a tooltip)


# --------------------------------------------------------------------------- values


def _fmt(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, no exponent for large values; ``–`` for None."""
    if value is None:
        return _NA
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    """A fraction as a whole percentage; ``–`` for None."""
    return _NA if value is None else f"{value:.0%}"


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(timestamp: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- scales


def _nice_step(span: float) -> float:
    """A 1, 2 or 5 times a power of ten close to ``span / 5``."""
    raw = span / 5 if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps data values ``lo..hi`` onto pixels ``px_lo..px_hi``, linear or log10."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False
    step: float = 1.0

    def at(self, value: float) -> float:
        """The pixel position of ``value`` (clamped to the scale)."""
        lo, hi, v = self.lo, self.hi, min(max(value, self.lo), self.hi)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        fraction = (v - lo) / (hi - lo) if hi > lo else 0.5
        return round(self.px_lo + fraction * (self.px_hi - self.px_lo), 1)

    def ticks(self) -> list[tuple[float, str]]:
        """``(pixel, label)`` of each tick: every decade (log) or every step (linear)."""
        if self.log:
            first, last = round(math.log10(self.lo)), round(math.log10(self.hi))
            values = [10.0**e for e in range(first, last + 1)]
        else:
            count = round((self.hi - self.lo) / self.step)
            values = [self.lo + i * self.step for i in range(count + 1)]
        return [(self.at(v), _fmt(v)) for v in values]


def _scale(values: Sequence[float], px_lo: float, px_hi: float) -> Scale:
    """A scale from 0 (or a decade below the least value) up to a round number above
    the largest; log10 when the values are positive and span 100x or more."""
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(values) / min(values) >= 100:
        lo = 10.0 ** math.floor(math.log10(min(values)))
        hi = 10.0 ** math.ceil(math.log10(max(values)))
        return Scale(lo, hi, px_lo, px_hi, log=True)
    top = max([0.0, *values])
    step = _nice_step(top)
    hi = max(step, math.ceil(top / step - 1e-9) * step)
    return Scale(0.0, hi, px_lo, px_hi, step=step)


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True, slots=True)
class Chart:
    """What a chart template needs: geometry, labels, the text fallback and items.

    ``items`` are chart-specific dicts of numbers and plain strings (escaped by the
    template); ``ticks`` are the x axis's ``(pixel, label)`` pairs.
    """

    key: str
    title: str
    desc: str
    width: int
    height: int
    x_label: str
    y_label: str
    items: tuple[dict[str, Any], ...] = ()
    ticks: tuple[tuple[float, str], ...] = ()
    y_ticks: tuple[tuple[float, str], ...] = ()
    lines: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def plot_bottom(self) -> int:
        """The y of the x axis."""
        return self.height - _AXIS


def _row_chart_height(rows: int) -> int:
    """Height of a chart with one row per model."""
    return _TOP + max(rows, 1) * _ROW + _AXIS


def _energy_bars(summaries: Sequence[ModelRow]) -> Chart:
    """Chart 1: total Wh per model, horizontal bars."""
    rows = [s for s in summaries if s.total_wh is not None]
    title = "Total energy per model"
    scale = _scale([s.total_wh or 0.0 for s in rows], _LEFT, _WIDTH - _RIGHT)
    items: tuple[dict[str, Any], ...] = tuple(
        {
            "label": _short(s.model),
            "name": s.model,
            "y": _TOP + i * _ROW,
            "x0": scale.at(scale.lo),
            "x1": scale.at(s.total_wh or 0.0),
            "value": f"{_fmt(s.total_wh)} Wh",
            "tip": f"{s.model}: {_fmt(s.total_wh)} Wh over {s.wh_n} readings ({s.provenance})",
        }
        for i, s in enumerate(rows)
    )
    desc = "; ".join(item["tip"] for item in items) or "No energy readings in these records."
    return Chart(
        key="energy",
        title=title,
        desc=desc,
        width=_WIDTH,
        height=_row_chart_height(len(rows)),
        x_label="Total energy (Wh)" + (", log scale" if scale.log else ""),
        y_label="Model",
        items=items,
        ticks=tuple(scale.ticks()) if rows else (),
    )


def _wh_boxes(summaries: Sequence[ModelRow]) -> Chart:
    """Chart 2: Wh/1k per model as box plots (5th-95th percentile whiskers)."""
    rows = [s for s in summaries if s.wh_per_1k_stats is not None]
    title = "Energy per 1000 output tokens, distribution per model"
    edges: list[float] = []
    for s in rows:
        assert s.wh_per_1k_stats is not None
        edges += [s.wh_per_1k_stats.p5, s.wh_per_1k_stats.p95]
    scale = _scale(edges, _LEFT, _WIDTH - _RIGHT)
    items: list[dict[str, Any]] = []
    for i, s in enumerate(rows):
        st, q1, q3 = s.wh_per_1k_stats, s.wh_per_1k_q1, s.wh_per_1k_q3
        assert st is not None and q1 is not None and q3 is not None
        items.append(
            {
                "label": _short(s.model),
                "name": s.model,
                "y": _TOP + i * _ROW,
                "p5": scale.at(st.p5),
                "q1": scale.at(q1),
                "median": scale.at(st.median),
                "q3": scale.at(q3),
                "p95": scale.at(st.p95),
                "mean": scale.at(st.mean),
                "value": f"median {_fmt(st.median)}",
                "tip": f"{s.model}: n={st.n}, p5 {_fmt(st.p5)}, p25 {_fmt(q1)}, "
                f"median {_fmt(st.median)}, p75 {_fmt(q3)}, p95 {_fmt(st.p95)}, "
                f"mean {_fmt(st.mean)} Wh/1k",
            }
        )
    desc = "; ".join(item["tip"] for item in items) or "No Wh/1k readings in these records."
    return Chart(
        key="wh1k",
        title=title,
        desc=desc,
        width=_WIDTH,
        height=_row_chart_height(len(rows)),
        x_label="Wh per 1000 output tokens" + (", log scale" if scale.log else ""),
        y_label="Model",
        items=tuple(items),
        ticks=tuple(scale.ticks()) if rows else (),
    )


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: ``(energy, pass_rate)`` with lower
    energy and higher pass rate better; ordered by rising energy."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def _pareto(summaries: Sequence[ModelRow]) -> Chart:
    """Chart 3: pass rate against mean Wh/1k per model, with the Pareto front."""
    rows = [s for s in summaries if s.wh_per_1k_mean is not None and s.pass_rate is not None]
    left_out = [s.model for s in summaries if s not in rows]
    title = "Quality against energy: pass rate vs mean Wh/1k"
    height = 380
    plot_top, plot_bottom, plot_left = 20, height - _AXIS, 70
    points = [(s.wh_per_1k_mean or 0.0, s.pass_rate or 0.0) for s in rows]
    front = pareto_front(points)
    xs = _scale([p[0] for p in points], plot_left, _WIDTH - 150)
    ys = Scale(0.0, 1.0, plot_bottom, plot_top, step=0.2)
    by_x = sorted(range(len(points)), key=lambda i: points[i])
    rank = {index: position for position, index in enumerate(by_x)}
    items: tuple[dict[str, Any], ...] = tuple(
        {
            "label": _short(s.model, 22),
            "name": s.model,
            "x": xs.at(points[i][0]),
            "y": ys.at(points[i][1]),
            "front": i in front,
            "dy": -8 if rank[i] % 2 == 0 else 16,  # alternate labels: fewer overlaps
            "tip": f"{s.model}: {_pct(s.pass_rate)} of {s.tests} tests passed, "
            f"mean {_fmt(points[i][0])} Wh/1k" + (" (Pareto front)" if i in front else ""),
        }
        for i, s in enumerate(rows)
    )
    line = " ".join(f"{items[i]['x']},{items[i]['y']}" for i in front)
    desc = "; ".join(item["tip"] for item in items) or "No model has both a pass rate and Wh/1k."
    if left_out:
        desc += f". Not shown (no energy or no tests): {', '.join(left_out)}."
    return Chart(
        key="pareto",
        title=title,
        desc=desc,
        width=_WIDTH,
        height=height,
        x_label="Mean Wh per 1000 output tokens" + (", log scale" if xs.log else ""),
        y_label="Pass rate (distinct tests)",
        items=items,
        ticks=tuple(xs.ticks()) if rows else (),
        y_ticks=tuple((ys.at(v / 5), f"{v * 20}%") for v in range(6)),
        lines=(line,) if len(front) > 1 else (),
        extra={"left": plot_left, "top": plot_top, "right": _WIDTH - 150},
    )


def _temperature_key(value: Any) -> tuple[int, float]:
    """Sort key for temperatures: numbers ascending, then the missing ones."""
    number = finite_or_none(value)
    return (1, 0.0) if number is None else (0, number)


def _temperature_label(value: Any) -> str:
    number = finite_or_none(value)
    return "T default" if number is None else f"T={number:g}"


def _heatmap(records: Sequence[Mapping[str, Any]], models: Sequence[str]) -> Chart:
    """Chart 4: pass rate over distinct tests per model (rows) and temperature."""
    groups: dict[tuple[str, tuple[int, float]], list[Mapping[str, Any]]] = {}
    labels: dict[tuple[int, float], str] = {}
    for record in records:
        temperature = record.get("temperature")
        key = _temperature_key(temperature)
        labels.setdefault(key, _temperature_label(temperature))
        groups.setdefault((model_name(record), key), []).append(record)
    cells = {cell: verdicts_by_test(group) for cell, group in groups.items()}
    columns = sorted(labels)
    cell_w = max(56, min(110, (_WIDTH - _LEFT - 20) // max(len(columns), 1)))
    top = 34
    items: list[dict[str, Any]] = []
    for row, model in enumerate(models):
        for col, key in enumerate(columns):
            verdicts = cells.get((model, key))
            if not verdicts:
                continue
            passed, tests = sum(verdicts.values()), len(verdicts)
            rate = passed / tests
            items.append(
                {
                    "x": _LEFT + col * cell_w,
                    "y": top + row * _ROW,
                    "w": cell_w - 2,
                    "fill": f"hsl({round(120 * rate)}, 62%, 72%)",
                    "text": f"{rate:.0%}",
                    "tip": f"{model}, {labels[key]}: {passed}/{tests} tests passed ({rate:.0%})",
                }
            )
    desc = "; ".join(item["tip"] for item in items) or "No records."
    return Chart(
        key="heatmap",
        title="Pass rate by model and temperature",
        desc=desc,
        width=max(_WIDTH, _LEFT + len(columns) * cell_w + 20),
        height=top + max(len(models), 1) * _ROW + 30,
        x_label="Temperature",
        y_label="Model",
        items=tuple(items),
        extra={
            "top": top,
            "columns": [
                {"x": _LEFT + i * cell_w + (cell_w - 2) / 2, "label": labels[k]}
                for i, k in enumerate(columns)
            ],
            "rows": [
                {"y": top + i * _ROW, "label": _short(m), "name": m} for i, m in enumerate(models)
            ],
        },
    )


# --------------------------------------------------------------------------- table data

#: Columns of a table row in the JSON data (the script looks them up by name).
_ROW_COLUMNS: tuple[str, ...] = (
    "n", "test", "model", "temp", "outcome", "run", "wh1k", "prov", "ttft", "dtps",
    "ptok", "ctok", "detail",
)  # fmt: skip

#: Text sections of an opened row, with their headings.
_DETAIL_SECTIONS: tuple[tuple[str, str], ...] = (
    ("prompt", "Prompt"),
    ("output", "Output"),
    ("reasoning", "Reasoning"),
    ("error", "Error"),
    ("failure", "Failed checks"),
    ("sampling", "Repeated sampling"),
    ("energy", "Energy"),
    ("facts", "Generation"),
)


def _as_text(value: Any) -> str:
    """A field as display text: strings as they are, None as ``""``, others as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def _sampling_text(record: Mapping[str, Any]) -> str:
    """The run's verdict and the test's repeated-sampling summary (empty without)."""
    parts: list[str] = []
    run = record.get("run")
    if isinstance(run, int) and not isinstance(run, bool):
        passed = record.get("run_passed")
        verdict = ": passed" if passed is True else ": failed" if passed is False else ""
        parts.append(f"run {run + 1}{verdict}")
    sampling = record.get("sampling")
    if isinstance(sampling, dict):
        low, high = finite_or_none(sampling.get("ci_low")), finite_or_none(sampling.get("ci_high"))
        rate = _pct(finite_or_none(sampling.get("pass_rate")))
        if low is not None and high is not None:
            rate += f", CI {_fmt(low)}–{_fmt(high)}"
        early = ""
        if sampling.get("stopped_early"):
            early = f", stopped early (planned {sampling.get('planned_runs')})"
        verdict_text = "met" if sampling.get("ok") else "not met"
        parts.append(
            f"test: {sampling.get('passed')}/{sampling.get('runs')} runs passed ({rate}){early}; "
            f"rule: {sampling.get('rule')} ({verdict_text})"
        )
    return "\n".join(parts)


def _energy_text(energy: Mapping[str, Any]) -> str:
    """Provenance, meters, confidence and the setup note of a reading."""
    if not energy:
        return ""
    lines = [f"provenance: {energy.get('provenance')}"]
    meters = energy.get("meter")
    if isinstance(meters, list):
        lines.append(f"meters: {', '.join(map(str, meters))}")
    elif meters:
        lines.append(f"meters: {_as_text(meters)}")
    if energy.get("low_confidence"):
        lines.append(f"low confidence: {_as_text(energy.get('low_confidence_reason'))}")
    if energy.get("note"):
        lines.append(f"note: {_as_text(energy.get('note'))}")
    return "\n".join(lines)


def _facts_text(record: Mapping[str, Any]) -> str:
    """A line of small facts: finish reason, seed, limits, confidence, worker."""
    confidence = record.get("confidence")
    mean_prob = (
        finite_or_none(confidence.get("mean_prob")) if isinstance(confidence, dict) else None
    )
    total_s = finite_or_none(record.get("total_s"))
    facts = [
        ("finish reason", record.get("finish_reason")),
        ("seed", record.get("seed")),
        ("max tokens", record.get("max_tokens")),
        ("mean token probability", None if mean_prob is None else _fmt(mean_prob)),
        ("total", None if total_s is None else f"{_fmt(total_s)} s"),
        ("worker", record.get("worker")),
        ("host", record.get("host")),
    ]
    return " · ".join(f"{name}: {value}" for name, value in facts if value not in (None, ""))


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a note of its full length."""
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n… [cut: {len(text):,} characters in all]", True


def _rounded(value: Any) -> float | int | None:
    """A float with 4 significant digits (smaller JSON), an int as it is, None for
    anything else (missing, NaN, infinities, text, booleans). Hot: 100k records
    call it 600k times, hence the exact type test first."""
    if type(value) is int:
        return value
    number = finite_or_none(value)
    return None if number is None else float(f"{number:.4g}")


@dataclass
class _Interner:
    """Stores each distinct string once; ``index`` gives its position."""

    values: list[str] = dataclasses.field(default_factory=list)
    positions: dict[str, int] = dataclasses.field(default_factory=dict)

    def index(self, text: str) -> int:
        position = self.positions.get(text)
        if position is None:
            position = self.positions[text] = len(self.values)
            self.values.append(text)
        return position


@dataclass
class _TableStats:
    embedded: int = 0
    cut: int = 0


def _details(
    record: Mapping[str, Any],
    texts: _Interner,
    limit: int,
    stats: _TableStats,
    mask: Redactor,
) -> tuple[list[int], int]:
    """One detail entry (text indices, -1 for empty) and the bytes it added.

    Credentials are masked before a text is cut: a cut key would leave half readable.
    """
    fields = {
        "prompt": _as_text(record.get("prompt")),
        "output": _as_text(record.get("output")),
        "reasoning": _as_text(record.get("reasoning")),
        "error": _as_text(record.get("error")),
        "failure": _as_text(record.get("failure")),
        "sampling": _sampling_text(record),
        "energy": _energy_text(energy_of(record)),
        "facts": _facts_text(record),
    }
    entry: list[int] = []
    added = 0
    for name, _heading in _DETAIL_SECTIONS:
        text, was_cut = _cut(mask.text(fields[name]), limit)
        stats.cut += was_cut
        if not text:
            entry.append(-1)
            continue
        if text not in texts.positions:
            added += len(text.encode("utf-8", "replace")) + 8
        entry.append(texts.index(text))
    return entry, added


def _table_data(
    records: Sequence[Mapping[str, Any]], *, page_size: int, text_limit: int, text_budget: int
) -> tuple[dict[str, Any], _TableStats]:
    """The compact table data for the script, and what was cut or left out.

    Texts go to failing generations first (failed, errored or without a known
    outcome, by `outcome_passed`), then the others, each in record order,
    until ``text_budget`` bytes are used.
    """
    keys, texts, stats = _Interner(), _Interner(), _TableStats()
    detail_of: dict[int, int] = {}
    details: list[list[int]] = []
    used = 0
    mask = current()
    failed = [outcome_passed(r.get("outcome")) is False for r in records]
    failing = [i for i, fail in enumerate(failed) if fail]
    others = [i for i, fail in enumerate(failed) if not fail]
    for index in failing + others:
        entry, added = _details(records[index], texts, text_limit, stats, mask)
        if used + added > text_budget:
            break
        used += added
        detail_of[index] = len(details)
        details.append(entry)
    stats.embedded = len(details)
    rows = []
    for index, record in enumerate(records):
        energy = energy_of(record)
        run = record.get("run")
        rows.append(
            [
                index + 1,
                keys.index(str(record.get("test_id"))),
                keys.index(model_name(record)),
                _rounded(record.get("temperature")),
                keys.index(str(record.get("outcome") or "unknown")),
                run + 1 if isinstance(run, int) and not isinstance(run, bool) else None,
                _rounded(energy.get("wh_per_1k")),
                keys.index(str(energy.get("provenance") or "unavailable")),
                _rounded(record.get("ttft_s")),
                _rounded(record.get("decode_tokens_per_s")),
                _rounded(record.get("prompt_tokens")),
                _rounded(record.get("completion_tokens")),
                detail_of.get(index, -1),
            ]
        )
    data = {
        "cols": list(_ROW_COLUMNS),
        "detail_labels": [heading for _name, heading in _DETAIL_SECTIONS],
        "page_size": page_size,
        "keys": keys.values,
        "texts": texts.values,
        "rows": rows,
        "details": details,
    }
    return data, stats


_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def json_island(value: Any) -> Markup:
    """``value`` as JSON safe to place inside ``<script type="application/json">``.

    ``<``, ``>``, ``&``, U+2028 and U+2029 become ``\\uXXXX`` escapes (inside JSON
    strings, the only place they can occur), so no ``</script>``, ``<!--`` or entity
    can end or change the element, and ``JSON.parse`` gives back the exact text.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return Markup(text)  # escaped above: no markup character is left


# --------------------------------------------------------------------------- page


@functools.cache
def _environment() -> jinja2.Environment:
    """The Jinja environment: package templates, autoescaping everything."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_llmlab.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _fmt
    environment.filters["pct"] = _pct
    environment.filters["points"] = format_points
    return environment


@functools.cache
def _static(name: str) -> Markup:
    """Our own CSS or script from the templates folder (no record data in it)."""
    text = importlib.resources.files("pytest_llmlab.report").joinpath("templates", name)
    content = text.read_text(encoding="utf-8")
    if "</script" in content.lower():
        raise ValueError(f"{name} must not contain '</script'")
    return Markup(content)  # a file of this package, not record data


def _run_window(records: Sequence[Mapping[str, Any]]) -> str:
    """``start – end`` of the records' ``finished_at`` times, or ``–``."""
    times = finite_values(r.get("finished_at") for r in records)
    if not times:
        return _NA
    start, end = _utc(min(times)), _utc(max(times))
    return start if start == end else f"{start} – {end}"


def _distinct(values: Iterable[Any]) -> list[str]:
    """The distinct non-empty values as strings, in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        if value not in (None, ""):
            seen.setdefault(str(value))
    return list(seen)


def _listing(values: Sequence[str], limit: int = 4) -> str:
    """``a; b; c`` and ``(+N more)`` beyond ``limit``."""
    text = "; ".join(values[:limit])
    return text + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _meter_line(records: Sequence[Mapping[str, Any]], meter_setup: str | None) -> str:
    """The meter setup line given, else the distinct energy notes of the records."""
    if meter_setup:
        return meter_setup
    notes = _distinct(energy_of(r).get("note") for r in records)
    return _listing(notes, 3) if notes else "not recorded"


def _hardware_lines(
    records: Sequence[Mapping[str, Any]], hardware: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """``(label, text)`` lines describing the hardware: given, else from the records."""
    fingerprints = _distinct(r.get("fingerprint") for r in records)
    lines: list[tuple[str, str]] = []
    if hardware:
        info = dict(hardware)
        cpu = str(info.pop("cpu", _NA))
        cpus = info.pop("cpus", None)
        lines.append(("CPU", f"{cpu} ({cpus} logical CPUs)" if cpus else cpu))
        gpus = info.pop("gpus", None)
        gpu_list = [str(g) for g in gpus] if isinstance(gpus, list | tuple) else []
        lines.append(("GPUs", ", ".join(gpu_list) if gpu_list else "none found"))
        system, machine = info.pop("system", None), info.pop("machine", None)
        if system or machine:
            lines.append(("Platform", " ".join(str(p) for p in (system, machine) if p)))
        given = info.pop("fingerprint", None)
        if given and str(given) not in fingerprints:
            fingerprints.insert(0, str(given))
        lines.extend((str(k), _as_text(v)) for k, v in info.items())
    else:
        cpus = _distinct(r.get("cpu_model") for r in records)
        lines.append(("CPU", _listing(cpus) if cpus else "not recorded"))
    text = _listing(fingerprints) if fingerprints else "not recorded"
    if len(fingerprints) > 1:
        text += f" (records from {len(fingerprints)} machines)"
    lines.append(("Fingerprint", text))
    return lines


def render_html(
    records: Sequence[Mapping[str, Any]],
    *,
    title: str = "pytest-llmlab report",
    meter_setup: str | None = None,
    hardware: Mapping[str, Any] | None = None,
    page_size: int = PAGE_SIZE,
    text_limit: int = TEXT_LIMIT,
    text_budget: int = TEXT_BUDGET,
) -> str:
    """The report page of ``records`` (dicts as in ``results.jsonl``).

    ``meter_setup`` is the line saying which energy meters ran (the records' notes
    when None); ``hardware`` a dict like `pytest_llmlab.fingerprint.hardware` (plus
    ``fingerprint``), or None to describe the machine from the records. Summaries
    and charts use every record; the table shows ``page_size`` rows a page, texts
    cut to ``text_limit`` characters and at most ``text_budget`` bytes of them.
    """
    records = [r for r in records if isinstance(r, Mapping)]
    summaries = model_summary(records)
    charts = [
        _energy_bars(summaries),
        _wh_boxes(summaries),
        _pareto(summaries),
        _heatmap(records, [s.model for s in summaries]),
    ]
    data, table = _table_data(
        records, page_size=page_size, text_limit=text_limit, text_budget=text_budget
    )
    board = leaderboard(records) if any(r.get("max_points") is not None for r in records) else []
    structured = structured_summary(records)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            nonce=secrets.token_urlsafe(18),
            generated=_utc(dt.datetime.now(tz=dt.UTC).timestamp()),
            version=__version__,
            run_window=_run_window(records),
            records_n=len(records),
            tests_n=len({str(r.get("test_id")) for r in records}),
            meter_setup=_meter_line(records, meter_setup),
            hardware=_hardware_lines(records, hardware),
            summaries=summaries,
            board=board,
            structured=structured,
            board_groups=sorted({group for row in board for group in row.tests}),
            any_cost=any(s.cost is not None for s in summaries),
            any_carbon=any(s.gco2e is not None for s in summaries),
            bootstrap_max_n=BOOTSTRAP_MAX_N,
            charts=charts,
            layout={"left": _LEFT, "right": _WIDTH - _RIGHT, "top": _TOP, "row": _ROW},
            data_json=json_island(data),
            table=table,
            page_size=page_size,
            text_limit=text_limit,
            css=_static("report.css"),
            script=_static("report.js"),
        )
    )


def write_html(records: Sequence[Mapping[str, Any]], path: Path | str, **options: Any) -> Path:
    """Render ``records`` (see `render_html` for ``options``) and write the page to
    ``path`` atomically: a temporary file in the same folder, flushed, fsynced and
    renamed over the target, so readers see the old page or the new one, never half.
    Returns the path."""
    target = Path(path)
    page = render_html(records, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as out:
            out.write(page)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return target
