"""Report tables: results.csv, the per-model summary, the terminal table, GitHub's job
summary and the JUnit properties, on hand-built records with hand-computed numbers.

The outcome rule shared by every report has its own tests in test_outcome_rule.py."""

from __future__ import annotations

import copy
import csv
import io
import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.report import csvfile
from pytest_llmlab.report.csvfile import CSV_COLUMNS, records_frame, write_csv
from pytest_llmlab.report.summary import ModelRow, model_summary, provenance_mix
from pytest_llmlab.report.terminal import (
    append_github_summary,
    github_markdown,
    junit_properties,
    markdown_text,
    terminal_table,
)
from pytest_llmlab.stats import describe

#: The column order the README documents (its ``results.csv`` section): CSV_COLUMNS
#: must not drift from it.
_README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
DOCUMENTED = re.findall(
    r"`([a-z0-9_]+)`",
    _README.split("these columns in this order:", 1)[1].split("\n\n", 2)[1],
)


def full_record() -> dict[str, Any]:
    """A record with every field the CSV reads set, nested ones included, each value
    distinct (so a column reading the wrong field shows)."""
    return {
        "test_id": "tests/test_x.py::test_a[local:m-T0.7]",
        "suite": "smoke",
        "category": "geography",
        "case_id": "france",
        "points": 2.5,
        "max_points": 5.0,
        "outcome": "passed",
        "model": 'lab:m, "quoted"\nsecond line é',
        "spec": "openai:m@http://127.0.0.1:8000/v1",
        "alias": "fast",
        "provider": "openai",
        "temperature": 0.7,
        "prompt_tokens": 42,
        "cached_prompt_tokens": 24,
        "completion_tokens": 8,
        "ttft_s": 0.1 + 0.2,  # 0.30000000000000004: needs all 17 digits
        "total_s": 0.918391554,
        "prefill_tokens_per_s": 62.582387384778244,
        "decode_tokens_per_s": 28.308424016370324,
        "rates_from": "server",
        "tokens_per_s": 8.710881502727757,
        "finish_reason": "stop",
        "replayed": True,
        "error": None,
        "prompt": "not in the CSV",
        "output": "not in the CSV either",
        "energy": {
            "joules": 7.5,
            "cpu": {"joules": 4.25, "provenance": "measured", "domains": ["package-0"]},
            "dram": {"joules": 0.75, "provenance": "measured", "domains": ["dram-0"]},
            "gpu": {"joules": 2.5, "provenance": "integrated", "domains": ["gpu-0"]},
            "other": {},
            "wh": 0.0020833333333333333,
            "wh_per_1k": 0.26041666666666663,
            "prefill_joules": 5.125,
            "decode_joules": 2.375,
            "duration_s": 0.9,
            "avg_power_w": 8.333333333333334,
            "baseline_w": 3.5,
            "net_joules": 4.35,
            "provenance": "integrated",
            "measured": True,
            "low_confidence": False,
            "note": "rapl, nvml",
            "meter": ["rapl", "nvml"],
            "gpu_stats": {
                "util_avg": 41.5,
                "util_max": 97.0,
                "mem_avg_mb": 1234.5,
                "mem_peak_mb": 2048.0,
                "temp_avg_c": 55.25,
                "temp_max_c": 61.0,
                "power_avg_w": 88.125,
                "power_max_w": 140.5,
            },
            "gco2e": 0.00125,
            "cost": 3e-07,
            "windows": [],
            "gross_joules": 9.75,
        },
        "worker": "gw1",
        "host": "ci-01",
        "finished_at": 1795377918.9974508,
        "run": 3,
        "turn": 1,
        "run_passed": False,
        "sampling": {"passed": 3, "runs": 5},
        "confidence": {
            "mean_prob": 0.725,
            "min_prob": 0.2435262785374714,
            "first_token_prob": 0.5,
            "perplexity": 1.5155572759838298,
            "entropy": 0.556806620179389,
        },
        "tool_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_2", "name": "search", "arguments": None, "error": "not JSON"},
        ],
        "avg_tool_confidence": 0.8125,
        "min_tool_confidence": 0.625,
        "fingerprint": "126ee5cc092a",
        "cpu_model": "AMD EPYC 7B13",
        "run_id": "20261201T204512-3f9a1c",
    }


#: The cells of `full_record`, column by column, as the CSV must hold them.
FULL_CELLS = {
    "test_id": "tests/test_x.py::test_a[local:m-T0.7]",
    "suite": "smoke",
    "category": "geography",
    "case_id": "france",
    "points": "2.5",
    "max_points": "5.0",
    "model": 'lab:m, "quoted"\nsecond line é',
    "alias": "fast",
    "spec": "openai:m@http://127.0.0.1:8000/v1",
    "provider": "openai",
    "temperature": "0.7",
    "run": "3",
    "turn": "1",
    "outcome": "passed",
    "run_passed": "False",
    "prompt_tokens": "42",
    "cached_prompt_tokens": "24",
    "completion_tokens": "8",
    "ttft_s": "0.30000000000000004",
    "total_s": "0.918391554",
    "prefill_tokens_per_s": "62.582387384778244",
    "decode_tokens_per_s": "28.308424016370324",
    "rates_from": "server",
    "tokens_per_s": "8.710881502727757",
    "finish_reason": "stop",
    "replayed": "True",
    "joules": "7.5",
    "cpu_joules": "4.25",
    "cpu_provenance": "measured",
    "dram_joules": "0.75",
    "dram_provenance": "measured",
    "gpu_joules": "2.5",
    "gpu_provenance": "integrated",
    "wh": "0.0020833333333333333",
    "wh_per_1k": "0.26041666666666663",
    "prefill_joules": "5.125",
    "decode_joules": "2.375",
    "provenance": "integrated",
    "measured": "True",
    "low_confidence": "False",
    "baseline_w": "3.5",
    "net_joules": "4.35",
    "gross_joules": "9.75",
    "gpu_util_avg": "41.5",
    "gpu_util_max": "97.0",
    "gpu_mem_avg_mb": "1234.5",
    "gpu_mem_peak_mb": "2048.0",
    "gpu_temp_avg_c": "55.25",
    "gpu_temp_max_c": "61.0",
    "gpu_power_avg_w": "88.125",
    "gpu_power_max_w": "140.5",
    "mean_prob": "0.725",
    "min_prob": "0.2435262785374714",
    "first_token_prob": "0.5",
    "perplexity": "1.5155572759838298",
    "entropy": "0.556806620179389",
    "tool_calls": "2",
    "avg_tool_confidence": "0.8125",
    "min_tool_confidence": "0.625",
    "cost": "3e-07",
    "gco2e": "0.00125",
    "host": "ci-01",
    "worker": "gw1",
    "fingerprint": "126ee5cc092a",
    "cpu_model": "AMD EPYC 7B13",
    "run_id": "20261201T204512-3f9a1c",
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- CSV


def test_csv_columns_are_the_documented_ones_and_the_header_line_says_so(
    tmp_path: Path,
) -> None:
    assert list(CSV_COLUMNS) == DOCUMENTED
    path = write_csv([full_record()], tmp_path / "results.csv")
    header = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == ",".join(DOCUMENTED)


def test_every_field_of_a_full_record_round_trips(tmp_path: Path) -> None:
    record = full_record()
    path = write_csv([record], tmp_path / "results.csv")
    (row,) = read_rows(path)
    assert row == FULL_CELLS
    # Floats read back as the very same numbers.
    assert float(row["ttft_s"]) == record["ttft_s"]
    assert float(row["wh_per_1k"]) == record["energy"]["wh_per_1k"]
    assert float(row["cost"]) == record["energy"]["cost"]


def test_the_frame_has_one_typed_row_per_record() -> None:
    second = full_record()
    second["energy"] = None
    frame = records_frame([full_record(), second])
    assert list(frame.columns) == DOCUMENTED
    assert len(frame) == 2
    assert str(frame["prompt_tokens"].dtype) == "Int64"
    assert str(frame["measured"].dtype) == "boolean"
    assert str(frame["model"].dtype) == "string"
    assert frame["wh_per_1k"].dtype.kind == "f"
    assert frame["gpu_util_max"].tolist()[0] == 97.0
    assert frame["wh_per_1k"].isna().tolist() == [False, True]
    assert frame["measured"].isna().tolist() == [False, True]


#: Columns read from the ``energy`` reading, and from ``confidence`` (the tool-call
#: columns come from the record itself).
ENERGY_COLUMNS = [c for c in DOCUMENTED[DOCUMENTED.index("joules") :] if c not in (
    "mean_prob", "min_prob", "first_token_prob", "perplexity", "entropy",
    "tool_calls", "avg_tool_confidence", "min_tool_confidence",
    "host", "worker", "fingerprint", "cpu_model", "run_id",
)]  # fmt: skip
CONFIDENCE_COLUMNS = ["mean_prob", "min_prob", "first_token_prob", "perplexity", "entropy"]


def test_missing_nested_fields_give_empty_cells(tmp_path: Path) -> None:
    bare = full_record()
    del bare["suite"], bare["category"]
    bare["energy"] = None
    bare["confidence"] = None
    partial = full_record()
    partial["energy"].update(cpu=None, dram=None, gpu=None, gpu_stats=None)
    del partial["energy"]["gross_joules"]
    first, second = read_rows(write_csv([bare, partial], tmp_path / "results.csv"))
    assert len(ENERGY_COLUMNS) == 27 and "cost" in ENERGY_COLUMNS
    empty_first = ["suite", "category", *ENERGY_COLUMNS, *CONFIDENCE_COLUMNS]
    assert first == {c: "" if c in empty_first else FULL_CELLS[c] for c in DOCUMENTED}
    empty_second = ["gross_joules"] + [
        c for c in ENERGY_COLUMNS if c.startswith(("cpu_", "dram_", "gpu_"))
    ]
    assert len(empty_second) == 15
    assert second == {c: "" if c in empty_second else FULL_CELLS[c] for c in DOCUMENTED}


def test_values_of_the_wrong_type_are_written_as_they_are(tmp_path: Path) -> None:
    """A hand-edited file: text among numbers, a list for a name; nothing is lost or
    refused, and other columns keep their types."""
    odd = full_record()
    odd["prompt_tokens"] = "forty-two"
    odd["temperature"] = True
    odd["alias"] = ["a", "b"]
    odd["energy"]["measured"] = "yes"
    odd["energy"]["cpu"] = "not a dict"
    frame = records_frame([odd, full_record()])
    assert frame["prompt_tokens"].dtype == object
    assert str(frame["completion_tokens"].dtype) == "Int64"
    (row, normal) = read_rows(write_csv([odd, full_record()], tmp_path / "r.csv"))
    assert row["prompt_tokens"] == "forty-two" and normal["prompt_tokens"] == "42"
    assert row["temperature"] == "True" and normal["temperature"] == "0.7"
    assert row["alias"] == "['a', 'b']"
    assert row["measured"] == "yes"
    assert row["cpu_joules"] == "" and row["cpu_provenance"] == ""


def test_quoting_is_what_the_csv_module_writes(tmp_path: Path) -> None:
    """Quoted as `csv.writer`'s default (excel) dialect quotes, ``\\r`` included (a
    writer with ``lineterminator="\\n"``, as ``DataFrame.to_csv``, leaves a lone
    ``\\r`` unquoted, and the csv module then reads it as a line break)."""
    names = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\ronly", "", ' lead, "both",\r\n']
    records = []
    for name in names:
        record = full_record()
        record["model"] = name
        records.append(record)
    path = write_csv(records, tmp_path / "results.csv")
    text = path.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[DOCUMENTED.index("model")] for row in rows[1:]] == names
    expected = ""
    for row in rows:
        line = io.StringIO()
        csv.writer(line).writerow(row)
        expected += line.getvalue().removesuffix("\r\n") + "\n"
    assert text == expected
    assert '"cr\ronly"' in text


def test_no_records_give_the_header_alone(tmp_path: Path) -> None:
    path = write_csv([], tmp_path / "results.csv")
    assert path.read_text(encoding="utf-8") == ",".join(DOCUMENTED) + "\n"
    assert len(records_frame([])) == 0


def test_writing_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "results.csv"  # the folder is created
    write_csv([full_record(), full_record()], target)
    assert len(read_rows(target)) == 2
    write_csv([full_record()], target)
    assert len(read_rows(target)) == 1
    assert [p.name for p in target.parent.iterdir()] == ["results.csv"]
    # The usual permissions, not a private temporary file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("failure", ["mid-write", "fsync", "rename"])
def test_a_failure_while_writing_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    target = tmp_path / "results.csv"
    write_csv([full_record()], target)
    old = target.read_bytes()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    if failure == "mid-write":
        # One row per chunk, and the second chunk never comes: half a file on disk.
        real_islice = itertools.islice
        calls = iter(range(100))

        def islice_then_fail(*args: Any) -> Any:
            if next(calls) == 1:
                broken()
            return real_islice(*args)

        monkeypatch.setattr(csvfile, "_CHUNK_ROWS", 1)
        monkeypatch.setattr("pytest_llmlab.report.csvfile.islice", islice_then_fail)
    elif failure == "fsync":
        monkeypatch.setattr(os, "fsync", broken)
    else:
        monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space left"):
        write_csv([full_record()] * 3, target)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_ten_thousand_records_are_written_in_reasonable_time(tmp_path: Path) -> None:
    """A hang guard, not a speed target (row-by-row DataFrame appends took minutes)."""
    base = full_record()
    records = []
    for i in range(10_000):
        record = copy.deepcopy(base)
        record["test_id"] = f"tests/test_x.py::test_{i}"
        record["prompt_tokens"] = i
        record["energy"]["wh_per_1k"] = i / 7
        if i % 3 == 0:
            record["energy"] = None
        records.append(record)
    began = time.perf_counter()
    path = write_csv(records, tmp_path / "results.csv")
    elapsed = time.perf_counter() - began
    assert elapsed < 20.0, f"{elapsed:.1f} s for 10k records"
    rows = read_rows(path)
    assert len(rows) == 10_000
    assert rows[-1]["test_id"] == "tests/test_x.py::test_9999"
    assert rows[9_998]["wh_per_1k"] == repr(9_998 / 7)
    assert rows[9_999]["wh_per_1k"] == ""  # 9999 % 3 == 0: no energy
    assert rows[9_999]["prompt_tokens"] == "9999"


def test_loading_the_summaries_does_not_import_pandas() -> None:
    """pandas takes most of a second to import: only `records_frame` may load it."""
    code = (
        "import sys, pytest_llmlab.report.summary, pytest_llmlab.report.terminal,"
        " pytest_llmlab.report.csvfile;"
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- model summary


def gen(
    model: str,
    test_id: str,
    outcome: str,
    *,
    wh_per_1k: float | None = None,
    decode: float | None = None,
    ttft: float | None = None,
    cost: float | None = None,
    provenance: str | None = "estimated",
    temperature: float = 0.0,
) -> dict[str, Any]:
    energy = None
    if provenance is not None:
        energy = {"wh_per_1k": wh_per_1k, "cost": cost, "provenance": provenance}
    return {
        "test_id": test_id,
        "outcome": outcome,
        "model": model,
        "temperature": temperature,
        "decode_tokens_per_s": decode,
        "ttft_s": ttft,
        "energy": energy,
    }


def summary_records() -> list[dict[str, Any]]:
    m = "local:m"
    return [
        gen("openai:o", "t9", "passed", wh_per_1k=0.5, decode=80.0, ttft=0.9),
        # t1 twice (a repeated test): one test, passed.
        gen(m, "t1", "passed", wh_per_1k=1.0, decode=10.0, ttft=0.3, cost=0.01,
            provenance="estimated"),
        gen(m, "t1", "passed", wh_per_1k=2.0, decode=20.0, ttft=0.1, cost=0.02,
            provenance="measured", temperature=0.7),
        gen(m, "t2", "failed", wh_per_1k=3.0, decode=30.0, ttft=1.5, provenance="measured"),
        gen(m, "t3", "xpassed", wh_per_1k=4.0, decode=40.0, ttft=0.5, provenance="measured"),
        # t4's call passed, its teardown errored: the test did not pass.
        gen(m, "t4", "passed", decode=None, ttft=0.2, provenance=None),
        gen(m, "t4", "error", wh_per_1k=6.0, decode=50.0, ttft=0.4, cost=0.04,
            provenance="estimated"),
    ]  # fmt: skip


def test_model_summary_numbers_by_hand() -> None:
    other, row = model_summary(summary_records())
    assert (other.model, row.model) == ("openai:o", "local:m")  # first seen first
    assert row.n == 6
    assert row.tests == 4  # t1..t4, t1 counted once
    assert row.passed == 2  # t1 and t3 (xpassed); t2 failed, t4 errored at teardown
    assert row.pass_rate == 0.5
    assert row.temperatures == (0.0, 0.7)
    # Wh/1k: 1, 2, 3, 4, 6 (one generation had no energy reading).
    assert row.wh_per_1k_n == 5
    assert row.wh_per_1k_mean == pytest.approx(16 / 5)
    expected = describe([1.0, 2.0, 3.0, 4.0, 6.0])
    assert (row.wh_per_1k_ci_low, row.wh_per_1k_ci_high) == (expected.ci_low, expected.ci_high)
    assert row.wh_per_1k_ci_low is not None and row.wh_per_1k_ci_high is not None
    assert 1.0 <= row.wh_per_1k_ci_low < 16 / 5 < row.wh_per_1k_ci_high <= 6.0
    assert row.wh_per_1k_half_ci == pytest.approx((expected.ci_high - expected.ci_low) / 2)
    # Decode tok/s 10, 20, 30, 40, 50: median 30.
    assert row.decode_tokens_per_s == 30.0
    # TTFT sorted 0.1 0.2 0.3 0.4 0.5 1.5: p50 at h = 2.5 -> 0.35; p95 at h = 4.75 ->
    # 0.5 + 0.75 * (1.5 - 0.5) = 1.25.
    assert row.ttft_p50_s == pytest.approx(0.35)
    assert row.ttft_p95_s == pytest.approx(1.25)
    assert row.cost == pytest.approx(0.07)
    # Strongest first, whatever the order seen; the reading-less record is unavailable.
    assert row.provenance == "measured 3, estimated 2, unavailable 1"
    # A single generation: its value, a degenerate interval; no cost anywhere: None.
    assert (other.n, other.tests, other.passed, other.pass_rate) == (1, 1, 1, 1.0)
    assert other.wh_per_1k_mean == other.wh_per_1k_ci_low == other.wh_per_1k_ci_high == 0.5
    assert other.decode_tokens_per_s == 80.0
    assert other.ttft_p50_s == other.ttft_p95_s == 0.9
    assert other.cost is None
    assert other.provenance == "estimated"


def test_model_summary_without_energy_or_timings() -> None:
    (row,) = model_summary([gen("m", "t", "skipped", provenance=None)])
    # A skipped test is not counted (as pytest counts it): no tests, no pass rate.
    assert (row.n, row.tests, row.passed, row.pass_rate) == (1, 0, 0, None)
    assert row.wh_per_1k_n == 0
    assert row.wh_per_1k_mean is row.wh_per_1k_ci_low is row.wh_per_1k_half_ci is None
    assert row.decode_tokens_per_s is row.ttft_p50_s is row.ttft_p95_s is None
    assert row.provenance == "unavailable"
    assert model_summary([]) == []


def test_provenance_mix_orders_by_strength_then_as_seen() -> None:
    records = [
        {"energy": {"provenance": "estimated"}},
        {"energy": {"provenance": "custom-b"}},
        {"energy": {"provenance": "measured-apportioned"}},
        {"energy": {"provenance": "custom-a"}},
        {"energy": {"provenance": "estimated"}},
    ]
    assert provenance_mix(records) == (
        "measured-apportioned 1, estimated 2, custom-b 1, custom-a 1"
    )
    assert provenance_mix(records[:1] * 3) == "estimated"


# --------------------------------------------------------------------------- terminal


def row(**fields: Any) -> ModelRow:
    values: dict[str, Any] = {
        "model": "local:smollm2-135m",
        "temperatures": (0.0,),
        "n": 4,
        "tests": 3,
        "passed": 3,
        "wh_per_1k_n": 4,
        "wh_per_1k_mean": 0.151,
        "wh_per_1k_ci_low": 0.0863,
        "wh_per_1k_ci_high": 0.215,
        "decode_tokens_per_s": 27.23,
        "ttft_p50_s": 0.1672,
        "ttft_p95_s": 0.6024,
        "cost": None,
        "gco2e": None,
        "provenance": "estimated",
    }
    values.update(fields)
    return ModelRow(**values)


def test_terminal_table_aligns_columns_to_their_widest_cell() -> None:
    rows = [
        row(),
        row(
            model="openai:gpt-4o-mini",
            n=12,
            tests=6,
            passed=3,
            wh_per_1k_n=0,
            wh_per_1k_mean=None,
            wh_per_1k_ci_low=None,
            wh_per_1k_ci_high=None,
            decode_tokens_per_s=85.0,
            ttft_p50_s=1.2,
            provenance="unavailable",
        ),
        row(model="m", n=1, tests=1, passed=0, wh_per_1k_n=1, wh_per_1k_mean=2345.6,
            decode_tokens_per_s=None, ttft_p50_s=None, provenance="measured 8, estimated 2"),
    ]  # fmt: skip
    assert terminal_table(rows) == [
        "model                n   pass rate          Wh/1k  tok/s  TTFT p50  provenance",
        "local:smollm2-135m   4  100% (3/3)  0.151 ± 0.064   27.2   0.167 s  estimated",
        "openai:gpt-4o-mini  12   50% (3/6)            n/a   85.0     1.2 s  unavailable",
        "m                    1    0% (0/1)           2346    n/a       n/a  measured 8, estimated 2",
    ]  # fmt: skip
    assert terminal_table([]) == []


def test_terminal_table_shows_no_control_characters() -> None:
    (_, line) = terminal_table([row(model="evil\x1b[2J\nname", provenance="est\timated")])
    assert line.startswith("evil?[2J?name  ")
    assert line.endswith("est?imated")
    assert all(char.isprintable() for char in line)


# --------------------------------------------------------------------------- GitHub


EVIL = "x|y <script>alert('&')</script>\nnext *b* [l](u) \\"


def table_cells(line: str) -> list[str]:
    """The cells of a Markdown table row, splitting on unescaped ``|`` only."""
    cells, cell, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if char == "|" and not escaped:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
        escaped = char == "\\" and not escaped
    return [*cells, cell.strip()]


def test_github_markdown_table() -> None:
    text = github_markdown([row(cost=0.0123456)], title="LLM results")
    lines = text.splitlines()
    assert lines[0] == "### LLM results"
    assert lines[1] == ""
    assert table_cells(lines[2])[0] == "model" and len(table_cells(lines[2])) == 9
    assert table_cells(lines[4]) == [
        "local:smollm2-135m",
        "4",
        "100% (3/3)",
        "0.151 (0.0863–0.215)",
        "27.2",
        "0.167 s",
        "0.602 s",
        "0.01235",
        "estimated",
    ]
    assert len(lines) == 5 and text.endswith("\n")
    assert "No generations" in github_markdown([], title="t")


def test_github_markdown_escapes_untrusted_names() -> None:
    text = github_markdown([row(model=EVIL, provenance="a|b")], title="t <b>")
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "### t &lt;b&gt;" in text
    assert "&amp;" in text
    assert text.count("\n") == 5  # the newline in the name did not break the row
    cells = table_cells(text.splitlines()[4])
    assert len(cells) == 9
    assert cells[0] == markdown_text(EVIL)
    assert cells[0].startswith("x\\|y &lt;script&gt;alert('&amp;')&lt;/script&gt; next")
    assert "\\*b\\* \\[l\\](u) \\\\" in cells[0]
    assert cells[-1] == "a\\|b"


def test_github_summary_is_appended_only_when_the_variable_is_set(tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    rows = [row(model="a|<script>")]
    assert append_github_summary(rows, env={}) is None
    assert append_github_summary(rows, env={"GITHUB_STEP_SUMMARY": ""}) is None
    assert not summary.exists()
    summary.write_text("earlier step\n", encoding="utf-8")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert append_github_summary([], env=env) is None
    assert summary.read_text(encoding="utf-8") == "earlier step\n"
    assert append_github_summary(rows, env=env) == summary
    assert append_github_summary(rows, env=env, title="second") == summary
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n### pytest-llmlab\n")
    assert "### second" in text
    assert text.count("a\\|&lt;script&gt;") == 2 and "<script>" not in text


# --------------------------------------------------------------------------- JUnit


def test_junit_properties_of_one_record() -> None:
    assert junit_properties(full_record()) == [
        ("llm_model", 'lab:m, "quoted"?second line é'),
        ("llm_temperature", "0.7"),
        ("llm_wh_per_1k", "0.2604"),
        ("llm_tokens_per_s", "28.3"),
        ("llm_provenance", "integrated"),
        ("llm_generations", "1"),
    ]
    bare = {"model": "m" * 300, "temperature": 0, "energy": None, "decode_tokens_per_s": None}
    assert junit_properties(bare) == [
        ("llm_model", "m" * 99 + "…"),
        ("llm_temperature", "0"),
        ("llm_wh_per_1k", ""),
        ("llm_tokens_per_s", ""),
        ("llm_provenance", "unavailable"),
        ("llm_generations", "1"),
    ]
    assert all(isinstance(value, str) for _, value in junit_properties({}))


def test_junit_properties_of_a_repeated_test_are_means_and_the_weakest_provenance() -> None:
    runs = [
        gen("local:m", "t", "passed", wh_per_1k=1.0, decode=10.0, provenance="measured"),
        gen("local:m", "t", "passed", wh_per_1k=2.5, decode=None, provenance="estimated"),
        gen("local:m", "t", "passed", decode=21.0, provenance=None),
        gen("local:m", "t", "passed", wh_per_1k=3.0, decode=20.0, provenance="integrated"),
    ]
    assert dict(junit_properties(runs)) == {
        "llm_model": "local:m",
        "llm_temperature": "0",
        "llm_wh_per_1k": "2.167",  # (1 + 2.5 + 3) / 3
        "llm_tokens_per_s": "17.0",  # (10 + 21 + 20) / 3
        "llm_provenance": "estimated",
        "llm_generations": "4",
    }
    assert junit_properties([]) == []


def test_odd_numbers_in_records_are_left_out_of_summaries() -> None:
    """Text, booleans, NaN and integers beyond floats (a hand-edited file) are not
    numbers to summarise; they neither count nor crash."""
    records = [
        gen("m", "t1", "passed", wh_per_1k=1.0, decode=10.0, ttft=0.5),
        gen("m", "t2", "passed", wh_per_1k=float("nan"), decode=10**400, ttft=0.7),
    ]
    records[1]["ttft_s"] = "slow"
    records[1]["temperature"] = True
    (row,) = model_summary(records)
    assert (row.wh_per_1k_n, row.wh_per_1k_mean) == (1, 1.0)
    assert row.decode_tokens_per_s == 10.0
    assert row.ttft_p50_s == row.ttft_p95_s == 0.5
    assert row.temperatures == (0.0,)
    properties = dict(junit_properties(records[1]))
    assert properties["llm_tokens_per_s"] == properties["llm_wh_per_1k"] == ""
    assert properties["llm_temperature"] == ""


def test_many_generations_get_the_normal_interval_of_the_mean() -> None:
    """Above BOOTSTRAP_MAX_N (2000) values: mean ± 1.959964·std/√n, computed by hand
    for 6000 values alternating 1 and 3 (mean 2, std √(6000/5999))."""
    records = [gen("m", f"t{i}", "passed", wh_per_1k=1.0 if i % 2 else 3.0) for i in range(6000)]
    began = time.perf_counter()
    (row,) = model_summary(records)
    assert time.perf_counter() - began < 10.0  # a hang guard: no 2000-resample bootstrap
    half = 1.959963984540054 * (6000 / 5999) ** 0.5 / 6000**0.5
    assert row.wh_per_1k_mean == 2.0
    assert row.wh_per_1k_ci_low == pytest.approx(2.0 - half, rel=1e-12)
    assert row.wh_per_1k_ci_high == pytest.approx(2.0 + half, rel=1e-12)
