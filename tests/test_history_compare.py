"""Run history (SQLite), comparisons with significance, regression checks and the
leaderboard: pure logic, tested directly (prices: tests/test_prices.py)."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.report.compare import (
    METRICS,
    RegressionCheck,
    compare_runs,
    fisher_exact,
    mcnemar_exact,
    parse_compare_fail,
)
from pytest_llmlab.report.history import (
    SCHEMA_VERSION,
    HistoryError,
    git_commit,
    list_runs,
    load_run,
    load_source,
    save_run,
    session_history,
)
from pytest_llmlab.report.leaderboard import format_leaderboard, group_of, leaderboard
from pytest_llmlab.report.prices import load_prices

HARDWARE = {"cpu": "AMD EPYC", "cpus": 4, "machine": "x86_64", "system": "Linux", "gpus": []}


def record(
    test: str,
    *,
    model: str = "m",
    temperature: float = 0.0,
    outcome: str = "passed",
    wh_per_1k: float | None = 0.25,
    ttft_s: float | None = 0.1,
    decode: float | None = 30.0,
    fingerprint: str = "aaaaaaaaaaaa",
    **extra: Any,
) -> dict[str, Any]:
    """A minimal record: what comparisons and leaderboards read."""
    energy = None
    if wh_per_1k is not None:
        energy = {"wh_per_1k": wh_per_1k, "joules": wh_per_1k * 28.8, "wh": wh_per_1k / 125}
    return {
        "test_id": f"tests/test_x.py::{test}[{model}-T{temperature:g}]",
        "outcome": outcome,
        "model": model,
        "spec": model,
        "temperature": temperature,
        "prompt_tokens": 40,
        "completion_tokens": 8,
        "ttft_s": ttft_s,
        "decode_tokens_per_s": decode,
        "tokens_per_s": decode,
        "energy": energy,
        "run": None,
        "run_passed": None,
        "fingerprint": fingerprint,
        "cpu_model": "AMD EPYC",
        **extra,
    }


def suite(
    factor: float = 1.0, noise: float = 0.0, seed: int = 0, *, fails: int = 0, n: int = 20
) -> list[dict[str, Any]]:
    """``n`` tests whose Wh/1k is ``0.25 * factor`` times (1 ± ``noise``), the first
    ``fails`` of them failed."""
    rng = random.Random(seed)
    return [
        record(
            f"test_{i}",
            outcome="failed" if i < fails else "passed",
            wh_per_1k=0.25 * factor * (1 + rng.uniform(-noise, noise)),
        )
        for i in range(n)
    ]


# -- history --------------------------------------------------------------------------


def save(path: Path, name: str, records: list[dict[str, Any]], **kw: Any) -> int:
    kw.setdefault("commit", "1a2b3c4d5e6f")
    return save_run(path, records, name=name, fingerprint="aaaaaaaaaaaa", hardware=HARDWARE, **kw)


def test_history_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h" / "history.sqlite"
    records = suite(n=3)
    run_id = save(path, "nightly", records)
    info, loaded = load_run(path, "nightly")
    assert loaded == records
    assert info.id == run_id
    assert info.name == "nightly"
    assert info.fingerprint == "aaaaaaaaaaaa"
    assert info.hardware == HARDWARE
    assert info.git_commit == "1a2b3c4d5e6f"
    assert info.n_records == 3
    assert "'nightly'" in info.describe() and "3 records" in info.describe()
    assert "commit 1a2b3c4d" in info.describe()


def test_history_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    save(path, "a", suite(n=1))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1
    finally:
        conn.close()


def test_latest_is_the_newest_run(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    save(path, "first", suite(n=1))
    save(path, "second", suite(n=2))
    info, records = load_run(path, "latest")
    assert (info.name, len(records)) == ("second", 2)
    assert [run.name for run in list_runs(path)] == ["second", "first"]
    save(path, "first", suite(n=3))  # re-saved: now the newest
    assert load_run(path)[0].name == "first"
    assert [run.name for run in list_runs(path)] == ["first", "second"]


def test_saving_a_name_again_replaces_it_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    notes: list[str] = []
    save(path, "base", suite(n=2), announce=notes.append)
    assert notes == []
    save(path, "base", suite(factor=2.0, n=5), announce=notes.append)
    assert len(notes) == 1
    assert "replaced run 'base'" in notes[0] and "2 records" in notes[0]
    assert str(path) in notes[0]
    runs = list_runs(path)
    assert [(run.name, run.n_records) for run in runs] == [("base", 5)]
    _, records = load_run(path, "base")
    assert records == suite(factor=2.0, n=5)
    conn = sqlite3.connect(path)
    try:  # the replaced run's records went with it
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 5
    finally:
        conn.close()


def test_missing_name_lists_the_saved_names(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    save(path, "alpha", suite(n=1))
    save(path, "beta", suite(n=1))
    with pytest.raises(HistoryError) as info:
        load_run(path, "gamma")
    message = str(info.value)
    assert "no run named 'gamma'" in message
    assert "saved: alpha, beta" in message
    assert str(path) in message


def test_missing_or_foreign_history_file(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite"
    assert list_runs(path) == []
    with pytest.raises(HistoryError, match="no history at"):
        load_run(path, "latest")
    assert not path.exists()  # reading never creates the file
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database at all, just text " * 100)
    with pytest.raises(HistoryError, match=re.escape(str(junk))):
        load_run(junk, "latest")
    with pytest.raises(HistoryError, match="needs a name"):
        save(tmp_path / "h.sqlite", " ", suite(n=1))


def test_history_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    save(path, "a", suite(n=1))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(HistoryError, match="schema version 99"):
        load_run(path, "a")


def test_git_commit_from_github_sha_then_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SHA", "cafe" * 10)
    assert git_commit() == "cafe" * 10
    save_run(tmp_path / "h.sqlite", [], name="ci", fingerprint=None, hardware=None)
    assert load_run(tmp_path / "h.sqlite", "ci")[0].git_commit == "cafe" * 10
    monkeypatch.delenv("GITHUB_SHA")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run: best effort gives None
    assert git_commit(cwd=tmp_path) is None


def test_load_source_reads_files_and_runs(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    save(history, "nightly", suite(n=2))
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(record("t")) + "\n{broken\n", encoding="utf-8")
    source = load_source(str(results), history)
    assert source.description == f"results file {results}"
    assert source.records == [record("t")]
    [note] = source.notes
    assert note.startswith(f"{results}:2: skipped a line that is not JSON")
    for name in ("history:nightly", "nightly", "latest", "history:latest", "history:"):
        found = load_source(name, history)
        assert found.records == suite(n=2), name
        assert found.description.startswith("run 'nightly' (") and str(history) in found.description
    with pytest.raises(HistoryError, match="^no such results file: missing.jsonl$"):
        load_source("missing.jsonl", history)
    with pytest.raises(HistoryError, match="^no such results file: dir/missing$"):
        load_source("dir/missing", history)
    with pytest.raises(HistoryError) as info:
        load_source("weekly", history)
    assert str(info.value) == (
        f"'weekly' is no results file, and history {history} has no run named 'weekly' "
        "(saved: nightly)"
    )
    with pytest.raises(HistoryError, match="no run named 'weekly'"):
        load_source("history:weekly", history)


def test_session_history_compares_with_the_previous_run_then_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SHA", "feed" * 10)
    path = tmp_path / ".llmlab" / "history.sqlite"
    checks = parse_compare_fail("wh_per_1k:10%")
    kw: dict[str, Any] = {"path": path, "compare_with": "latest", "checks": checks,
                          "fingerprint": "aaaaaaaaaaaa", "hardware": HARDWARE}  # fmt: skip
    first = session_history(suite(), save_as="main", **kw)
    # A gate fails closed: no baseline to hold the run to is a failure, in one line.
    assert first.failures == [
        (
            f"llmlab compare: no baseline to gate on: no history at {path} (save a run first); "
            "--llm-compare-fail=wh_per_1k:+10% cannot pass without one"
        )
    ]
    fresh = tmp_path / "fresh.sqlite"
    ungated = session_history(suite(), save_as=None, **{**kw, "checks": (), "path": fresh})
    assert ungated.failures == []  # without a gate, a missing baseline is only a warning
    assert ungated.lines == [
        f"llmlab compare: not compared: no history at {fresh} (save a run first)"
    ]
    assert first.lines[-1] == f"llmlab history: saved 20 records as run 'main' (id 1) in {path}"
    second = session_history(suite(factor=1.4, noise=0.02, seed=1), save_as="pr-7", **kw)
    assert second.lines[0].startswith("llmlab compare: against run 'main' (")
    assert "model m (20 paired tests):" in second.lines
    assert len(second.failures) == 1 and second.failures[0].startswith("model m: wh_per_1k 0.25")
    info, _ = load_run(path, "latest")
    assert (info.name, info.git_commit, info.hardware) == ("pr-7", "feed" * 10, HARDWARE)
    third = session_history(suite(), save_as="main", **{**kw, "compare_with": "main"})
    assert third.failures == []
    assert any(line.startswith("llmlab history: replaced run 'main' (") for line in third.lines)
    nothing = session_history(suite(), path=path, save_as=None, compare_with=None)
    assert nothing == type(nothing)([], [])
    assert [run.name for run in list_runs(path)] == ["main", "pr-7"]


def test_session_history_never_raises_for_an_unwritable_history(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "history.sqlite"  # its folder is a file
    with pytest.raises(HistoryError, match=re.escape(f"history {path}: ")):
        save(path, "x", suite(n=1))
    done = session_history(suite(n=1), path=path, save_as="x", compare_with=None)
    assert done.failures == []
    assert len(done.lines) == 1 and done.lines[0].startswith(
        f"llmlab history: not saved: history {path}"
    )


# -- exact tests ------------------------------------------------------------------------


def test_mcnemar_exact_values() -> None:
    assert mcnemar_exact(8, 0) == pytest.approx(2 / 2**8)
    assert mcnemar_exact(1, 0) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 1) == pytest.approx(2 * (1 + 6) / 64)
    assert mcnemar_exact(1, 5) == mcnemar_exact(5, 1)


def test_fisher_exact_values() -> None:
    # Fisher's lady tasting tea: 3 of 4 against 1 of 4, two-sided p = 34/70.
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher_exact(10, 10, 0, 10) == pytest.approx(2 / 184756)
    assert fisher_exact(1, 1, 0, 1) == 1.0
    assert fisher_exact(5, 10, 5, 10) == 1.0


# -- compare ----------------------------------------------------------------------------


def test_energy_regression_fails_the_check_with_evidence() -> None:
    comparison = compare_runs(suite(), suite(factor=1.4, noise=0.02, seed=1))
    failures = comparison.failures(parse_compare_fail("wh_per_1k:10%"))
    assert len(failures) == 1
    pattern = (
        r"model m: wh_per_1k 0\.25 -> (0\.3\d+) \(\+(\d+\.\d)%, threshold \+10%\); "
        r"95% CI of the mean relative change over 20 paired tests: "
        r"\+(\d+\.\d)%\.\.\+(\d+\.\d)%"
    )
    match = re.fullmatch(pattern, failures[0])
    assert match is not None, failures[0]
    current, change, low, high = map(float, match.groups())
    assert current == pytest.approx(0.35, rel=0.02)
    assert 38.0 < change < 42.0
    assert 10.0 < low <= change <= high < 42.0
    # joules moved the same way, speed and pass rate did not
    assert len(comparison.failures(parse_compare_fail("joules:10%"))) == 1
    assert comparison.failures(parse_compare_fail("ttft_p50:1%,decode_tps:-1%")) == []
    assert comparison.failures(parse_compare_fail("pass_rate:-5%")) == []
    assert comparison.failures(parse_compare_fail("wh_per_1k:50%")) == []
    assert comparison.warnings == []


def test_noise_alone_passes() -> None:
    comparison = compare_runs(suite(noise=0.03, seed=2), suite(noise=0.03, seed=3))
    checks = parse_compare_fail("wh_per_1k:10%,joules:10%,wh_per_1k:-10%,pass_rate:-5%")
    assert comparison.failures(checks) == []
    change = comparison.models[0].deltas["wh_per_1k"].change
    assert change is not None and abs(change) < 3.0


def test_a_big_but_noisy_change_is_not_significant() -> None:
    base = [record(f"t{i}", wh_per_1k=1.0) for i in range(5)]
    factors = [1.8, 0.4, 1.8, 0.4, 1.3]  # mean +14%: beyond 10%, but all over the place
    cur = [record(f"t{i}", wh_per_1k=f) for i, f in enumerate(factors)]
    delta = compare_runs(base, cur).models[0].deltas["wh_per_1k"]
    assert delta.change == pytest.approx(14.0)
    assert delta.evidence.ci is not None and delta.evidence.ci[0] < 0 < delta.evidence.ci[1]
    assert compare_runs(base, cur).failures(parse_compare_fail("wh_per_1k:10%")) == []


def test_too_few_paired_tests_cannot_fail() -> None:
    base = [record(f"t{i}") for i in range(2)]
    cur = [record(f"t{i}", wh_per_1k=0.5) for i in range(2)]
    comparison = compare_runs(base, cur)
    delta = comparison.models[0].deltas["wh_per_1k"]
    assert delta.change == pytest.approx(100.0)
    assert "2 paired tests, 3 needed" in delta.evidence.text
    assert comparison.failures(parse_compare_fail("wh_per_1k:10%")) == []


def test_pass_rate_drop_is_judged_by_mcnemar() -> None:
    checks = parse_compare_fail("pass_rate:-5%")
    eight = compare_runs(suite(), suite(fails=8))
    assert eight.failures(checks) == [
        (
            "model m: pass_rate 100.0% -> 60.0% (-40.0 pp, threshold -5 pp); McNemar exact "
            "p=0.0078 (8 pass->fail, 0 fail->pass over 20 paired tests)"
        )
    ]
    one = compare_runs(suite(), suite(fails=1))
    delta = one.models[0].deltas["pass_rate"]
    assert delta.change == pytest.approx(-5.0)
    assert delta.evidence.p_value == 1.0
    assert one.failures(parse_compare_fail("pass_rate:-1%")) == []  # beyond 1 pp, not significant


def test_repeated_runs_are_tested_per_test() -> None:
    def runs(passed: int, wh: float, seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [
            record(
                "t0",
                outcome="passed" if passed >= 8 else "failed",
                wh_per_1k=wh * (1 + rng.uniform(-0.01, 0.01)),
                run=i,
                run_passed=i < passed,
            )
            for i in range(10)
        ]

    comparison = compare_runs(runs(10, 0.25, 1), runs(2, 0.375, 2))
    failures = comparison.failures(parse_compare_fail("pass_rate:-5%,wh_per_1k:10%"))
    assert len(failures) == 2, failures
    assert failures[0].startswith(
        "test tests/test_x.py::t0[m-T0] (m, T=0): pass_rate 100.0% -> 20.0% (-80.0 pp, "
        "threshold -5 pp); Fisher exact p=0.00071 (10/10 -> 2/10 runs passed)"
    )
    assert failures[1].startswith(
        "test tests/test_x.py::t0[m-T0] (m, T=0): wh_per_1k 0.2498 -> 0.3756 (+50.4%, threshold +10%); "
    )
    assert "95% CI of the relative change over 10 vs 10 generations" in failures[1]
    # one paired test: the model level (McNemar on 1 flip, no CI) stays quiet
    model = comparison.models[0]
    assert model.deltas["pass_rate"].evidence.p_value == 1.0
    assert model.deltas["wh_per_1k"].evidence.ci is None


def test_pairs_by_test_model_and_temperature() -> None:
    base = [record("t", temperature=0.0), record("t", temperature=0.7), record("gone")]
    cur = [record("t", temperature=0.0), record("t", model="other"), record("new")]
    comparison = compare_runs(base, cur)
    assert [(p.test_id, p.model, p.temperature) for p in comparison.pairs] == [
        ("tests/test_x.py::t[m-T0]", "m", 0.0)
    ]
    assert len(comparison.only_baseline) == 2 and len(comparison.only_current) == 2
    assert comparison.warnings == [
        "2 test(s) only in the baseline and 2 only in the current run were not compared"
    ]
    empty = compare_runs(base, [])
    assert "no test ran in both runs: nothing to compare" in empty.warnings
    assert empty.table() == ["no test ran in both runs: nothing to compare"]


def test_different_fingerprints_warn() -> None:
    same = compare_runs(suite(n=3), suite(n=3))
    assert same.warnings == []
    other = [{**r, "fingerprint": "bbbbbbbbbbbb", "cpu_model": "Intel Xeon"} for r in suite(n=3)]
    warnings = compare_runs(suite(n=3), other).warnings
    assert len(warnings) == 1
    assert "different hardware" in warnings[0]
    assert "aaaaaaaaaaaa (AMD EPYC)" in warnings[0] and "bbbbbbbbbbbb (Intel Xeon)" in warnings[0]


def test_table_shows_each_pair_and_each_model() -> None:
    base = suite(n=3)
    cur = suite(factor=1.5, n=3, fails=1)
    lines = compare_runs(base, cur).table()
    assert lines[0].split() == [
        "test",
        "model",
        "T",
        "outcome",
        "wh_per_1k",
        "joules",
        "ttft_p50",
        "decode_tps",
        "pass_rate",
    ]  # fmt: skip  (no cost column: nothing was priced)
    assert lines[1].split() == [
        "tests/test_x.py::test_0[m-T0]", "m", "0", "passed->failed", "+50.0%", "+50.0%",
        "+0.0%", "+0.0%", "-100.0", "pp",
    ]  # fmt: skip
    assert lines[2].split()[3:5] == ["passed", "+50.0%"]
    assert lines[4] == "model m (3 paired tests):"
    assert lines[5].startswith("  wh_per_1k   0.25 -> 0.375 (+50.0%); 95% CI")
    assert lines[9] == "  cost        n/a -> n/a"


def test_cost_is_compared_with_prices() -> None:
    base = [record(f"t{i}", model="openai:gpt-4o") for i in range(3)]
    cur = [{**r, "completion_tokens": 16} for r in base]
    table = load_prices({"gpt-4o": (2.5, 10.0)})  # the user's prices: no snapshot drift
    delta = compare_runs(base, cur, prices=table).models[0].deltas["cost"]
    # 40 prompt tokens at 2.5 plus 8 -> 16 completion tokens at 10, per million
    assert delta.baseline == pytest.approx((40 * 2.5 + 8 * 10) / 1e6)
    assert delta.current == pytest.approx((40 * 2.5 + 16 * 10) / 1e6)
    assert delta.change == pytest.approx((260 / 180 - 1) * 100)


def test_parse_compare_fail_good() -> None:
    checks = parse_compare_fail("wh_per_1k:10%,pass_rate:-5%,ttft_p50:20%")
    assert checks == [
        RegressionCheck("wh_per_1k", 10.0, 1),
        RegressionCheck("pass_rate", 5.0, -1),
        RegressionCheck("ttft_p50", 20.0, 1),
    ]
    assert [str(c) for c in checks] == ["wh_per_1k:+10%", "pass_rate:-5%", "ttft_p50:+20%"]
    assert [c.threshold() for c in checks] == ["+10%", "-5 pp", "+20%"]
    assert parse_compare_fail(" decode_tps:-2.5% \n cost:+0% , cost:0%") == [
        RegressionCheck("decode_tps", 2.5, -1),
        RegressionCheck("cost", 0.0, 1),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wh_per_1k", "'wh_per_1k' is not METRIC:[+|-]N%"),
        ("wh_per_1k:10", "'wh_per_1k:10' is not METRIC:[+|-]N%"),
        ("wh_per_1k:ten%", "'wh_per_1k:ten%' is not METRIC"),
        ("wh_per_1k:10%,min:5%", "'min:5%': unknown metric 'min'"),
        ("wh:10%", "'wh:10%': unknown metric 'wh'"),
        ("", "no regression check given"),
    ],
)
def test_parse_compare_fail_bad(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_compare_fail(text)
    message = str(info.value)
    assert expected in message
    assert "metrics: " + ", ".join(METRICS) in message


# -- leaderboard ------------------------------------------------------------------------


def board_records() -> list[dict[str, Any]]:
    energy_cost = {"wh_per_1k": 0.2, "joules": 1.0, "wh": 0.01, "cost": 0.003}
    return [
        record("t1", model="a", category="math", wh_per_1k=0.2, decode=10.0),
        record("t1", model="a", category="math", wh_per_1k=0.4, decode=20.0),  # same test
        record("t2", model="a", category="math", outcome="failed", wh_per_1k=0.3, decode=30.0),
        record("t3", model="a", category="geo", decode=None, wh_per_1k=None),
        record("t4", model="a", category="geo", outcome="skipped", decode=None, wh_per_1k=None),
        record("t1", model="b", category="math", energy=energy_cost, decode=50.0),
        record("t2", model="b", category="math", energy=energy_cost, decode=70.0),
        record("t3", model="b", category="geo", outcome="error", energy=energy_cost),
        record("t5", model="b", wh_per_1k=None, decode=None),  # no category: "all"
    ]


def test_leaderboard_numbers() -> None:
    rows = leaderboard(board_records(), by="category")
    a, b = {r.model: r for r in rows}["a"], {r.model: r for r in rows}["b"]
    assert (a.points, a.tests) == ({"geo": 1, "math": 1}, {"geo": 1, "math": 2})
    assert (b.points, b.tests) == ({"all": 1, "geo": 0, "math": 2}, {"all": 1, "geo": 1, "math": 2})
    assert (a.total, a.total_tests, b.total, b.total_tests) == (2, 3, 3, 4)
    assert a.tokens_per_s == pytest.approx(20.0)  # (10 + 20 + 30) / 3 generations with a rate
    assert a.wh_per_1k == pytest.approx(0.3)  # (0.2 + 0.4 + 0.3) / 3
    assert a.cost is None  # nothing priced, no kWh price, nothing recorded
    assert b.tokens_per_s == pytest.approx((50 + 70 + 30) / 3)
    assert b.wh_per_1k == pytest.approx(0.2)
    assert b.cost == pytest.approx(0.009)  # three recorded costs
    assert [r.model for r in rows] == ["b", "a"]  # 3 points before 2


def test_leaderboard_ranks_ties_by_energy_then_name() -> None:
    records = [
        record("t", model="heavy", wh_per_1k=0.9),
        record("t", model="light", wh_per_1k=0.1),
        record("t", model="unknown", wh_per_1k=None),
        record("t", model="also-unknown", wh_per_1k=None),
    ]
    assert [r.model for r in leaderboard(records)] == ["light", "heavy", "also-unknown", "unknown"]


def test_leaderboard_groups() -> None:
    rec = record("test_a", temperature=0.7, suite="s1")
    assert group_of(rec, "test") == "tests/test_x.py::test_a"
    assert group_of(rec, "file") == "tests/test_x.py"
    assert group_of(rec, "temperature") == "0.7"
    assert group_of(rec, "suite") == "s1"
    assert group_of(rec, "category") == "all"
    rows = leaderboard(board_records(), by="test")
    assert rows[0].tests == {f"tests/test_x.py::t{i}": 1 for i in (1, 2, 3, 5)}


def test_leaderboard_with_kwh_price() -> None:
    rows = leaderboard(board_records(), kwh_price=0.5)
    a = {r.model: r for r in rows}["a"]
    # Wh = Wh/1k / 125 in these records: 0.2, 0.4, 0.3 -> 0.0072 Wh x 0.5 per kWh
    assert a.cost == pytest.approx((0.2 + 0.4 + 0.3) / 125 / 1000 * 0.5)


def test_leaderboard_markdown_and_escaping() -> None:
    records = [
        record("t1", model="evil|<model>&", category="a|b", wh_per_1k=0.25, decode=12.0),
        record("t2", model="evil|<model>&", category="c", outcome="failed", wh_per_1k=0.25),
    ]
    text = format_leaderboard(leaderboard(records), "md")
    assert text == (
        "| Model | a\\|b | c | Total | tokens/s | Wh/1k | Cost |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| evil\\|&lt;model&gt;&amp; | 1/1 | 0/1 | 1/2 | 21 | 0.25 |  |\n"
    )


def suite_records() -> list[dict[str, Any]]:
    """Suite cases worth 5 (all or nothing) and 3 (per-check points 1 + 2), and a
    repeated case worth 2 whose runs scored 2 and 0, beside a Python test."""
    checks_1_2 = [{"check": "a", "passed": True, "points": 1.0}]
    checks_1_2 += [{"check": "b", "passed": False, "points": 2.0}]
    return [
        record("france", model="m", category="geo", case_id="france", points=5.0, max_points=5.0),
        record(
            "partial", model="m", category="geo", outcome="failed", case_id="partial",
            points=1.0, max_points=3.0, checks=checks_1_2,
        ),
        record(
            "budget", model="m", category="math", outcome="failed", case_id="budget",
            points=4.0, max_points=4.0, checks=[{"check": "a", "passed": True, "points": None}],
        ),
        record("twice", model="m", category="math", points=2.0, max_points=2.0, run=0),
        record("twice", model="m", category="math", points=0.0, max_points=2.0, run=1),
        record("python_test", model="m", category="math"),
    ]  # fmt: skip


def test_leaderboard_suite_points_by_hand() -> None:
    (row,) = leaderboard(suite_records())
    # geo: france 5/5 + partial 1/3 (its passed check's point, though the case failed)
    # math: budget 0/4 (all or nothing, and the test failed), twice (2+0)/2 = 1 of 2,
    # the Python test 1/1.
    assert row.points == {"geo": 6.0, "math": 2.0}
    assert row.max_points == {"geo": 8.0, "math": 7.0}
    assert (row.total, row.max_total, row.total_tests) == (8.0, 15.0, 5)
    text = format_leaderboard([row], "md")
    assert "| m | 6/8 | 2/7 | 8/15 |" in text


def test_leaderboard_csv_and_json() -> None:
    rows = leaderboard(board_records())
    parsed = list(csv.reader(io.StringIO(format_leaderboard(rows, "csv"))))
    assert parsed[0] == [
        "model", "all", "all max", "all tests", "geo", "geo max", "geo tests", "math",
        "math max", "math tests", "total", "max", "tests", "tokens_per_s", "wh_per_1k", "cost",
    ]  # fmt: skip
    assert parsed[1][:13] == ["b", "1", "1", "1", "0", "1", "1", "2", "2", "2", "3", "4", "4"]
    assert float(parsed[1][14]) == pytest.approx(0.2)
    assert parsed[2][:13] == ["a", "", "", "", "1", "1", "1", "1", "2", "2", "2", "3", "3"]
    assert parsed[2][15] == ""  # no cost
    data = json.loads(format_leaderboard(rows, "json"))
    assert data[1] == {
        "model": "a",
        "points": {"geo": 1, "math": 1},
        "tests": {"geo": 1, "math": 2},
        "max_points": {"geo": 1, "math": 2},
        "total": 2,
        "max_total": 3,
        "total_tests": 3,
        "tokens_per_s": pytest.approx(20.0),
        "wh_per_1k": pytest.approx(0.3),
        "cost": None,
    }
    formula = format_leaderboard(leaderboard([record("t", model="=HYPERLINK(1)")]), "csv")
    assert list(csv.reader(io.StringIO(formula)))[1][0] == "'=HYPERLINK(1)"
    with pytest.raises(ValueError, match="unknown leaderboard format 'xml'; formats: md, csv"):
        format_leaderboard(rows, "xml")


def test_model_summary_cost_prefers_the_token_price() -> None:
    """A priced cloud record costs its tokens (``cost``), a local one its energy."""
    from pytest_llmlab.report.summary import model_summary

    cloud = record("a", energy={"cost": 0.1, "wh_per_1k": 0.2}, cost=0.5)
    local = record("b", energy={"cost": 0.2, "wh_per_1k": 0.2}, cost=None)
    (row,) = model_summary([cloud, local])
    assert row.cost == pytest.approx(0.7)
