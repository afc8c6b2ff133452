"""The HTML report: figures, charts, escaping of untrusted text, the browser, scale."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.report import summary as report_summary
from pytest_llmlab.report.html import json_island, pareto_front, render_html, write_html
from pytest_llmlab.report.load import RecordLineWarning, load_records
from pytest_llmlab.report.summary import model_summary
from pytest_llmlab.stats import describe, percentile

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium); "
    "the browser checks of the HTML report need it",
)

PAYLOAD_OUTPUT = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"
PAYLOAD_NAME = "</script><script>alert(2)</script>"
SAMPLE_NOTE = (
    "RAPL: /sys/class/powercap not present (virtual machine or non-Linux?); NVML: no NVIDIA "
    "driver (NVML Shared Library Not Found); using cpu-estimate with 4 W per logical CPU "
    "(table entry 'EPYC' for 'AMD EPYC'), all processes (/proc/stat)"
)

# (test id, temperature, ttft_s, decode tok/s, prompt, completion, wh, wh_per_1k), from a
# real run of examples/test_capital.py on local:smollm2-135m (the README's example).
_SAMPLE = [
    ("examples/test_capital.py::test_capital[local:smollm2-135m-T0]", 0.0, 0.671115337,
     28.308424016370324, 42, 8, 0.002044444444444606, 0.25555555555557574),
    ("examples/test_capital.py::test_capital[local:smollm2-135m-T0.7]", 0.7, 0.121373573,
     36.50393168725146, 42, 8, 0.0007000000000001213, 0.08750000000001516),
    ("examples/test_capital.py::test_answer_is_streamed[local:smollm2-135m-T0]", 0.0,
     0.213137869, 16.1, 38, 9, 0.001577777777777858, 0.17530864197531762),
    ("examples/test_capital.py::test_answer_is_streamed[local:smollm2-135m-T0]", 0.0,
     0.042052037, 26.1, 38, 9, 0.0007666666666662221, 0.08518518518513579),
]  # fmt: skip


def _record(**fields: Any) -> dict[str, Any]:
    """A record shaped like a ``results.jsonl`` line; ``fields`` override."""
    record: dict[str, Any] = {
        "test_id": "tests/test_x.py::test_x[m-T0]",
        "outcome": "passed",
        "model": "local:smollm2-135m",
        "spec": "local:smollm2-135m",
        "alias": None,
        "provider": "local",
        "temperature": 0.0,
        "prompt_tokens": 42,
        "completion_tokens": 8,
        "ttft_s": 0.1,
        "total_s": 0.3,
        "prefill_tokens_per_s": 300.0,
        "decode_tokens_per_s": 30.0,
        "tokens_per_s": 25.0,
        "finish_reason": "stop",
        "error": None,
        "prompt": "What is the capital of France? Answer in one word.",
        "output": "The capital of France is Paris.",
        "reasoning": "",
        "seed": None,
        "max_tokens": 16,
        "usage_reported": True,
        "energy": {
            "joules": 7.36,
            "cpu": {"joules": 7.36, "provenance": "estimated"},
            "dram": None,
            "gpu": None,
            "wh": 0.002,
            "wh_per_1k": 0.25,
            "provenance": "estimated",
            "measured": False,
            "low_confidence": True,
            "low_confidence_reason": "window of 0.918 s is shorter than 1 s",
            "note": SAMPLE_NOTE,
            "meter": ["cpu-estimate"],
            "gpu_stats": None,
            "gco2e": None,
            "cost": None,
        },
        "worker": "main",
        "host": "vm",
        "finished_at": 1795377918.9974508,
        "run": None,
        "run_passed": None,
        "sampling": None,
        "confidence": {"mean_prob": 0.725},
        "fingerprint": "126ee5cc092a",
        "cpu_model": "AMD EPYC",
    }
    record.update(fields)
    return record


def _sample_records() -> list[dict[str, Any]]:
    records = []
    for i, (test, temp, ttft, decode, ptok, ctok, wh, wh1k) in enumerate(_SAMPLE):
        record = _record(
            test_id=test,
            temperature=temp,
            ttft_s=ttft,
            decode_tokens_per_s=decode,
            prompt_tokens=ptok,
            completion_tokens=ctok,
            finished_at=1795377918.99 + i,
        )
        record["energy"] = {**record["energy"], "wh": wh, "wh_per_1k": wh1k}
        records.append(record)
    return records


class _Page(HTMLParser):
    """Collects the cell texts of each table row, by table class, and script bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = []
        elif tag == "script":
            self._script = attributes
            self.scripts.append((attributes, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script is not None:
            attributes, text = self.scripts[-1]
            self.scripts[-1] = (attributes, text + data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _island(page: str) -> str:
    """The raw text of the JSON data island."""
    match = re.search(
        r'<script type="application/json" id="llmlab-data">(.*?)</script>', page, re.DOTALL
    )
    assert match is not None, "no data island"
    return match.group(1)


def _data(page: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_island(page))
    return data


def _svg(page: str, key: str) -> str:
    match = re.search(rf'<svg [^>]*id="chart-{key}".*?</svg>', page, re.DOTALL)
    assert match is not None, f"no chart-{key} svg"
    return match.group(0)


# --------------------------------------------------------------------------- content


def test_summary_figures_of_the_sample_run() -> None:
    records = _sample_records()
    page = render_html(records, title="Sample run", meter_setup=SAMPLE_NOTE, hardware=None)
    rows = [row for row in _parse(page).tables["summary"] if row]
    assert len(rows) == 1
    cells = rows[0]
    wh1k = [r["energy"]["wh_per_1k"] for r in records]
    ttft = sorted(r["ttft_s"] for r in records)
    expected = describe(wh1k, resamples=2000)  # 4 readings: the full bootstrap
    assert cells[:4] == ["local:smollm2-135m", "4", "3", "100% (3/3)"]
    assert cells[4] == f"{statistics.fmean(wh1k):.3g}"
    assert cells[5] == f"{expected.ci_low:.3g}–{expected.ci_high:.3g}"
    assert cells[6] == f"{math.fsum(r['energy']['wh'] for r in records):.3g}"
    assert cells[7] == f"{statistics.median(r['decode_tokens_per_s'] for r in records):.3g}"
    assert cells[8] == f"{percentile(ttft, 50):.3g}"
    assert cells[9] == f"{percentile(ttft, 95):.3g}"
    assert cells[10] == "–"  # no cost in these readings
    assert cells[-1] == "estimated"
    assert "Sample run" in page and SAMPLE_NOTE in page
    assert "126ee5cc092a" in page and "AMD EPYC" in page  # hardware from the records


def test_summary_counts_distinct_tests_and_failures() -> None:
    records = [
        _record(test_id="t1", outcome="passed"),
        _record(test_id="t1", outcome="passed"),
        _record(test_id="t2", outcome="failed"),
        _record(test_id="t3", outcome="passed"),
        _record(test_id="t3", outcome="error"),  # a teardown error fails the test
        _record(test_id="t4", model="other", outcome="passed", energy=None),
    ]
    first, second = model_summary(records)
    assert (first.model, first.n, first.tests, first.passed) == (
        "local:smollm2-135m", 5, 3, 1,
    )  # fmt: skip
    assert first.pass_rate == pytest.approx(1 / 3)
    assert first.wh_per_1k_stats is not None and first.wh_per_1k_stats.n == 5
    assert (second.model, second.tests, second.passed, second.wh_per_1k_stats) == (
        "other", 1, 1, None,
    )  # fmt: skip
    assert second.provenance == "unavailable"


def test_all_four_charts_are_svg_with_titles_and_axes() -> None:
    page = render_html(_sample_records(), title="t", meter_setup=None, hardware=None)
    titles = {
        "energy": "Total energy per model",
        "wh1k": "Energy per 1000 output tokens, distribution per model",
        "pareto": "Quality against energy: pass rate vs mean Wh/1k",
        "heatmap": "Pass rate by model and temperature",
    }
    for key, title in titles.items():
        svg = _svg(page, key)
        assert f'<title id="chart-{key}-title">{title}</title>' in svg
        assert f'<desc id="chart-{key}-desc">' in svg
        assert 'role="img"' in svg
        assert 'class="axis-label"' in svg
    assert _svg(page, "energy").count('class="bar"') == 1
    assert "Total energy (Wh)" in _svg(page, "energy")
    assert _svg(page, "wh1k").count('class="median"') == 1
    assert _svg(page, "pareto").count('class="pt front"') == 2  # the point and the legend
    heat = _svg(page, "heatmap")
    assert heat.count('class="cell-text"') == 2  # T=0 and T=0.7
    assert ">T=0<" in heat and ">T=0.7<" in heat and ">100%<" in heat


def test_every_record_is_in_the_table_data() -> None:
    records = _sample_records()
    page = render_html(records, title="t", meter_setup=None, hardware=None)
    data = _data(page)
    assert len(data["rows"]) == len(records)
    col = {name: i for i, name in enumerate(data["cols"])}
    for record, row in zip(records, data["rows"], strict=True):
        assert record["test_id"] in page
        assert data["keys"][row[col["test"]]] == record["test_id"]
        assert data["keys"][row[col["model"]]] == record["model"]
        assert row[col["wh1k"]] == pytest.approx(record["energy"]["wh_per_1k"], rel=1e-3)
        detail = data["details"][row[col["detail"]]]
        assert data["texts"][detail[0]] == record["prompt"]
        assert data["texts"][detail[1]] == record["output"]


def test_opened_row_sections_carry_error_failure_and_sampling() -> None:
    sampling = {"runs": 3, "planned_runs": 5, "passed": 1, "pass_rate": 1 / 3,
                "ci_low": 0.06, "ci_high": 0.79, "rule": "pass rate >= 0.8", "ok": False,
                "stopped_early": True}  # fmt: skip
    record = _record(
        outcome="failed", run=1, run_passed=False, sampling=sampling,
        error="HTTP 500 from http://127.0.0.1:8000/v1: boom",
        failure="expect: 'Paris' not found in output",
    )  # fmt: skip
    data = _data(render_html([record], title="t", meter_setup=None, hardware=None))
    col = {name: i for i, name in enumerate(data["cols"])}
    entry = data["details"][data["rows"][0][col["detail"]]]
    shown = {
        label: data["texts"][index]
        for label, index in zip(data["detail_labels"], entry, strict=True)
        if index >= 0
    }
    assert shown["Error"] == record["error"]
    assert shown["Failed checks"] == record["failure"]
    assert shown["Repeated sampling"] == (
        "run 2: failed\ntest: 1/3 runs passed (33%, CI 0.06–0.79), stopped early "
        "(planned 5); rule: pass rate >= 0.8 (not met)"
    )
    assert "Reasoning" not in shown  # empty sections are left out
    assert shown["Energy"].startswith("provenance: estimated\nmeters: cpu-estimate\n")
    assert "finish reason: stop" in shown["Generation"]
    assert data["rows"][0][col["run"]] == 2  # shown 1-based


def test_heatmap_pass_rates_by_model_and_temperature() -> None:
    records = [
        _record(test_id="a", temperature=0.0, outcome="passed"),
        _record(test_id="b", temperature=0.0, outcome="failed"),
        _record(test_id="c", temperature=0.7, outcome="passed"),
        _record(test_id="d", temperature=None, outcome="failed"),
    ]
    heat = _svg(render_html(records, title="t", meter_setup=None, hardware=None), "heatmap")
    tips = re.findall(r"<title>([^<]*tests passed[^<]*)</title>", heat)
    assert tips == [
        "local:smollm2-135m, T=0: 1/2 tests passed (50%)",
        "local:smollm2-135m, T=0.7: 1/1 tests passed (100%)",
        "local:smollm2-135m, T default: 0/1 tests passed (0%)",
    ]


def test_pareto_front() -> None:
    # (energy, pass rate): lower energy and higher pass rate are better.
    points = [(1.0, 0.5), (2.0, 0.9), (1.5, 0.4), (0.5, 0.2), (3.0, 0.9), (2.0, 0.95)]
    assert pareto_front(points) == [3, 0, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0]


def test_pareto_chart_highlights_the_front() -> None:
    records = [
        _record(model="cheap-bad", test_id="x1", outcome="failed"),
        _record(model="dear-good", test_id="x2", outcome="passed"),
        _record(model="dear-bad", test_id="x3", outcome="failed"),
    ]
    records[1]["energy"] = {**records[1]["energy"], "wh_per_1k": 2.0}
    records[2]["energy"] = {**records[2]["energy"], "wh_per_1k": 3.0}
    svg = _svg(render_html(records, title="t", meter_setup=None, hardware=None), "pareto")
    front = re.findall(r"<title>([^<]*)\(Pareto front\)</title>", svg)
    assert [t.split(":")[0] for t in front] == ["cheap-bad", "dear-good"]
    assert svg.count("<polyline") == 1


def test_given_hardware_and_meter_setup_are_shown() -> None:
    hardware = {
        "cpu": "AMD EPYC 9654",
        "cpus": 192,
        "machine": "x86_64",
        "system": "Linux",
        "gpus": ["NVIDIA H100 80GB HBM3"],
        "fingerprint": "abcdef012345",
    }
    page = render_html(
        _sample_records(), title="t", meter_setup="rapl,nvml: measured", hardware=hardware
    )
    header = page.split("</header>")[0]
    for text in ("AMD EPYC 9654 (192 logical CPUs)", "NVIDIA H100 80GB HBM3", "Linux x86_64",
                 "abcdef012345", "126ee5cc092a", "records from 2 machines",
                 "rapl,nvml: measured"):  # fmt: skip
        assert text in header


def test_texts_are_cut_and_the_budget_prefers_failures() -> None:
    long = "x" * 5000
    records = [_record(test_id=f"ok{i}", output=f"fine {i} " + "y" * 300) for i in range(20)]
    records.append(_record(test_id="bad", outcome="failed", output=long, error="boom"))
    page = render_html(records, title="t", meter_setup=None, hardware=None, text_budget=2600)
    data = _data(page)
    col = {name: i for i, name in enumerate(data["cols"])}
    bad = data["rows"][-1]
    output = data["texts"][data["details"][bad[col["detail"]]][1]]
    assert output.startswith("x" * 2000) and "x" * 2001 not in output
    assert "[cut: 5,000 characters in all]" in output
    embedded = [row for row in data["rows"] if row[col["detail"]] >= 0]
    assert 0 < len(embedded) < len(records)  # the budget left some out
    note = page.split('id="table-note">')[1].split("</p>")[0]
    assert "characters in this page (1 cut)" in note
    assert f"the texts of {len(records) - len(embedded)} generations are not embedded" in note


def test_wide_ranges_use_a_log_scale() -> None:
    records = [_record(model="tiny"), _record(model="huge")]
    records[0]["energy"] = {**records[0]["energy"], "wh_per_1k": 0.012}
    records[1]["energy"] = {**records[1]["energy"], "wh_per_1k": 7.5}
    svg = _svg(render_html(records, title="t", meter_setup=None, hardware=None), "wh1k")
    assert "Wh per 1000 output tokens, log scale" in svg
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', svg)
    assert ticks == ["0.01", "0.1", "1", "10"]
    positions = [float(x) for x in re.findall(r'<text class="tick" x="([^"]*)"', svg)]
    steps = [b - a for a, b in itertools.pairwise(positions)]
    assert steps == pytest.approx([steps[0]] * 3, abs=0.2)  # decades equally spaced


def test_interval_plan_bounds_the_bootstrap_work() -> None:
    plan = report_summary.interval_plan
    assert plan({"a": 100}) == {"a": 2000}
    assert plan({"a": 1500, "b": 1500}) == {"a": 666, "b": 666}
    assert plan({"big": 50_000, "small": 10}) == {"big": 0, "small": 2000}
    assert plan({"one": 1}) == {"one": 2000}
    many = {f"m{i}": 2000 for i in range(20)}  # 40k values: 200 resamples are too many
    result = plan(many)
    kept = [m for m, r in result.items() if r]
    assert sum(many[m] * result[m] for m in kept) <= report_summary.BOOTSTRAP_DRAWS
    assert kept and all(result[m] >= 200 for m in kept)


def test_normal_interval_agrees_with_the_bootstrap_for_large_samples() -> None:
    import random

    rng = random.Random(5)
    values = [rng.lognormvariate(0.0, 0.6) for _ in range(5000)]
    normal = report_summary.mean_interval(values, 0)
    boot = describe(values, resamples=400)
    assert normal.mean == pytest.approx(boot.mean)
    assert normal.std == pytest.approx(boot.std)
    assert (normal.median, normal.p5, normal.p95) == (boot.median, boot.p5, boot.p95)
    width = boot.ci_high - boot.ci_low
    assert normal.ci_low == pytest.approx(boot.ci_low, abs=0.1 * width)
    assert normal.ci_high == pytest.approx(boot.ci_high, abs=0.1 * width)


# --------------------------------------------------------------------------- escaping


def _hostile_records() -> list[dict[str, Any]]:
    return [
        _record(
            test_id="tests/test_x.py::test_pwn[evil]",
            model=PAYLOAD_NAME,
            prompt=f"Say {PAYLOAD_NAME} please",
            output=PAYLOAD_OUTPUT,
            reasoning="a\u2028b\u2029c & <b>bold</b>",
            error="<iframe src=javascript:alert(3)>",
            outcome="failed",
        ),
        _record(test_id="tests/test_x.py::test_plain"),
    ]


def test_untrusted_text_is_escaped_everywhere() -> None:
    records = _hostile_records()
    records[0]["energy"] = {**records[0]["energy"], "note": "<svg onload=alert(4)>"}
    page = render_html(
        records,
        title="<b>title</b>",
        meter_setup="<script>alert(5)</script>",
        hardware={"cpu": "<img src=y>", "gpus": ["<u>gpu</u>"]},
    )
    for raw in (
        "<script>window.__pwned",
        "</script><script>alert(2)",
        "<img src=x",
        "<img src=y",
        "<iframe",
        "<svg onload",
        "<b>title",
        "<script>alert(5)",
        "<u>gpu",
        "\u2028",
        "\u2029",
    ):
        assert raw not in page, raw
    assert page.count("<script") == 2  # the data island and our script
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page  # summary table
    assert "&lt;b&gt;title&lt;/b&gt;" in page
    island = _island(page)
    assert "\\u003cscript\\u003ewindow.__pwned=1\\u003c/script\\u003e" in island
    assert "<" not in island and ">" not in island and "&" not in island
    data = json.loads(island)
    assert PAYLOAD_NAME in data["keys"]  # the exact text comes back
    assert PAYLOAD_OUTPUT in data["texts"]
    assert "a\u2028b\u2029c & <b>bold</b>" in data["texts"]


def test_content_security_policy_allows_only_our_script() -> None:
    page = render_html(_hostile_records(), title="t", meter_setup=None, hardware=None)
    match = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert match is not None
    policy = {
        part.split()[0]: part.split()[1:] for part in match.group(1).split(";") if part.strip()
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"]
    assert policy["style-src"] == ["'unsafe-inline'"]
    (nonce_source,) = policy["script-src"]
    assert nonce_source.startswith("'nonce-")
    scripts = _parse(page).scripts
    runnable = [attrs for attrs, _text in scripts if attrs.get("type") != "application/json"]
    assert runnable == [{"nonce": nonce_source[len("'nonce-") : -1]}]
    other = render_html(_hostile_records(), title="t", meter_setup=None, hardware=None)
    assert nonce_source not in other  # a fresh nonce per page


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.text())
def test_json_island_round_trips_without_markup_characters(text: str) -> None:
    island = str(json_island({"t": [text]}))
    assert not set(island) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(island) == {"t": [text]}


# --------------------------------------------------------------------------- files


def test_write_html_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "report.html"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert write_html(_sample_records(), target, title="first") == target
    assert [Path(dst) for _src, dst in renames] == [target]
    assert Path(renames[0][0]).parent == target.parent  # renamed within the folder
    assert "<title>first</title>" in target.read_text(encoding="utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_html(_sample_records(), target, title="second")
    assert "<title>first</title>" in target.read_text(encoding="utf-8")  # old page intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temp


def test_corrupt_records_file_is_reported_from_what_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    good = [json.dumps(r) for r in _sample_records()]
    path.write_text(
        "\n".join([good[0], '{"not": "a record"}', good[1], good[2][:40]]) + "\n",
        encoding="utf-8",
    )
    with pytest.warns(RecordLineWarning) as caught:
        records = load_records(path)
    assert len(caught) == 2
    page = write_html(records, tmp_path / "report.html", title="t").read_text(encoding="utf-8")
    assert len(_data(page)["rows"]) == 2
    cells = next(row for row in _parse(page).tables["summary"] if row)
    assert cells[1:3] == ["2", "2"]


def test_no_records_is_a_valid_page_saying_so(tmp_path: Path) -> None:
    page = write_html([], tmp_path / "report.html", title="Empty").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'id="no-records"' in page and "No records" in page
    assert "<svg" not in page and "llmlab-data" not in page and "<script" not in page
    assert "<title>Empty</title>" in page


def test_non_numbers_and_odd_records_do_not_break_the_page() -> None:
    records = [
        _record(temperature="hot", ttft_s=float("nan"), decode_tokens_per_s=True,
                energy={"wh_per_1k": "x", "wh": float("inf")}, model=None, outcome=None,
                prompt=[{"role": "user", "content": "hi"}], finished_at="never"),
        _record(energy="not a dict", confidence=[1, 2], sampling={"passed": 2, "runs": 3}),
    ]  # fmt: skip
    page = render_html(records, title="t", meter_setup=None, hardware=None)
    data = _data(page)
    assert len(data["rows"]) == 2
    assert '"content": "hi"' in "".join(data["texts"])  # a non-text prompt as JSON
    assert "test: 2/3 runs passed" in "".join(data["texts"])


# --------------------------------------------------------------------------- scale


def _many(count: int) -> list[dict[str, Any]]:
    """``count`` cheap synthetic records over 5 models and 3 temperatures."""
    models = [f"model-{i}" for i in range(5)]
    base = _record()
    records = []
    for i in range(count):
        record = dict(base)
        record["test_id"] = f"tests/test_scale.py::test_{i // 75}[{models[i % 5]}]"
        record["model"] = models[i % 5]
        record["temperature"] = (0.0, 0.5, 1.0)[(i // 5) % 3]
        record["outcome"] = "failed" if i % 7 == 0 else "passed"
        record["output"] = f"answer {i} " * 30
        record["energy"] = {**base["energy"], "wh_per_1k": 0.1 + (i % 97) / 100, "wh": 0.001}
        records.append(record)
    return records


def test_100k_records_render_in_bounded_time_and_size() -> None:
    records = _many(100_000)
    result: dict[str, Any] = {}

    def work() -> None:
        start = time.perf_counter()
        result["page"] = render_html(records, title="big", meter_setup=None, hardware=None)
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=60)  # a hang guard; the speed target is in bench/report_scale.py
    assert not thread.is_alive(), "rendering 100k records took over 60 s"
    page: str = result["page"]
    assert len(page.encode("utf-8")) < 20 * 1024 * 1024
    data = _data(page)
    assert len(data["rows"]) == 100_000
    cells = [row for row in _parse(page).tables["summary"] if row]
    assert [c[1] for c in cells] == ["20,000"] * 5
    assert "generations are not embedded" in page  # the text budget applied
    assert "†" in page  # 20k readings per model: the normal interval


# --------------------------------------------------------------------------- browser


def _chromium(url: str, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console lines about ``url``."""
    profile = tmp_path / "chromium-profile"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--dump-dom", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # Chromium logs each console message (errors, CSP violations, console.log) as
    # "...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)".
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@needs_chromium
def test_browser_harness_sees_console_errors(tmp_path: Path) -> None:
    """The console check below can fail: a page that throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p id=x>x</p><script>undefinedFunction();</script>")
    dom, console = _chromium(page.as_uri(), tmp_path)
    assert 'id="x"' in dom
    assert any("Uncaught ReferenceError" in line for line in console), console


@needs_chromium
def test_report_in_chromium_runs_builds_rows_and_executes_nothing(tmp_path: Path) -> None:
    records = _hostile_records()
    path = write_html(records, tmp_path / "report.html", title="t", meter_setup=None)
    dom, console = _chromium(path.as_uri(), tmp_path)
    assert console == []  # no errors, no CSP violations, nothing logged
    body = dom.split('id="llm-rows">')[1].split("</tbody>")[0]
    assert body.count('class="toggle"') == len(records)  # rows built by the script
    assert body.count('class="detail"') == len(records)
    assert "Rows 1–2 of 2" in dom and "Page 1 of 1" in dom
    # The payload is text in the opened row, never an element.
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in body
    assert "<img" not in dom and "<iframe" not in dom
    assert dom.count("<script") == 2  # the data island and our script, nothing injected
    # The model filter lists the hostile name as an option's text.
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;</option>" in dom


@needs_chromium
def test_report_in_chromium_paginates(tmp_path: Path) -> None:
    records = [_record(test_id=f"tests/t.py::test_{i}") for i in range(5)]
    path = write_html(records, tmp_path / "report.html", title="t", page_size=2)
    dom, console = _chromium(path.as_uri(), tmp_path)
    assert console == []
    body = dom.split('id="llm-rows">')[1].split("</tbody>")[0]
    assert body.count('class="toggle"') == 2
    assert "tests/t.py::test_0" in body and "tests/t.py::test_1" in body
    assert "tests/t.py::test_2" not in body
    assert "Rows 1–2 of 5" in dom and "Page 1 of 3" in dom


@needs_chromium
def test_empty_report_in_chromium(tmp_path: Path) -> None:
    path = write_html([], tmp_path / "report.html", title="t")
    dom, console = _chromium(path.as_uri(), tmp_path)
    assert console == [] and 'id="no-records"' in dom
