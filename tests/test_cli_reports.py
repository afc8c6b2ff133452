"""``llmlab report``, ``compare``, ``leaderboard`` and ``history``, end to end in process."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab import cli
from pytest_llmlab.report.history import load_run, save_run

HTML = "pytest_llmlab.report.html"
CSV = "pytest_llmlab.report.csvfile"


def record(i: int, wh: float, outcome: str = "passed", **extra: Any) -> dict[str, Any]:
    return {
        "test_id": f"tests/test_x.py::test_{i}[m-T0]",
        "outcome": outcome,
        "model": "m",
        "spec": "local:m",
        "temperature": 0.0,
        "prompt_tokens": 40,
        "completion_tokens": 8,
        "ttft_s": 0.1,
        "decode_tokens_per_s": 30.0,
        "tokens_per_s": 20.0,
        "energy": {"wh_per_1k": wh, "joules": wh * 28.8, "wh": wh / 125},
        "fingerprint": "aaaaaaaaaaaa",
        "cpu_model": "AMD EPYC",
        **extra,
    }


def write(path: Path, records: list[dict[str, Any]], *junk: str) -> Path:
    lines = [json.dumps(r) for r in records]
    for line in junk:
        lines.insert(1, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def suite(factor: float, seed: int, fails: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        record(
            i, 0.25 * factor * (1 + rng.uniform(-0.02, 0.02)), "failed" if i < fails else "passed"
        )
        for i in range(20)
    ]


@pytest.fixture(autouse=True)
def commit(monkeypatch: pytest.MonkeyPatch) -> str:
    """The commit `history save` records: from $GITHUB_SHA, so no git runs."""
    sha = "deadbeef" * 5
    monkeypatch.setenv("GITHUB_SHA", sha)
    return sha


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A baseline, a run with only noise, and a run with +40% Wh/1k and 8 new failures."""
    return (
        write(tmp_path / "base.jsonl", suite(1.0, 1)),
        write(tmp_path / "noise.jsonl", suite(1.0, 2)),
        write(tmp_path / "worse.jsonl", suite(1.4, 3, fails=8)),
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command argparse refuses; its one-line message."""
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    return err


# -- compare ----------------------------------------------------------------------------


def test_compare_regression_exits_1_with_the_failures(
    runs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, _, worse = runs
    code, out, err = run_cli(
        capsys, "compare", str(base), str(worse), "--fail", "wh_per_1k:10%,pass_rate:-5%"
    )
    assert code == 1
    assert out.splitlines()[0].split()[:5] == ["test", "model", "T", "outcome", "wh_per_1k"]
    assert "tests/test_x.py::test_0[m-T0]" in out and "passed->failed" in out
    assert "model m (20 paired tests):" in out
    lines = err.splitlines()
    assert lines[0] == "llmlab: 2 regression(s) beyond --fail:"
    assert re.match(r"  model m: wh_per_1k 0\.2\d* -> 0\.3\d* \(\+4\d\.\d%, ", lines[1]), lines[1]
    assert "threshold +10%); 95% CI of the mean relative change over 20 paired tests" in lines[1]
    assert lines[2].startswith("  model m: pass_rate 100.0% -> 60.0% (-40.0 pp, threshold -5 pp)")
    assert len(lines) == 3


def test_compare_noise_passes_and_no_fail_never_fails(
    runs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, noise, worse = runs
    code, out, err = run_cli(capsys, "compare", str(base), str(noise), "--fail", "wh_per_1k:10%")
    assert (code, err) == (0, "")
    assert "model m (20 paired tests):" in out
    code, _, err = run_cli(capsys, "compare", str(base), str(worse))
    assert (code, err) == (0, "")  # nothing to gate without --fail


def test_compare_against_history(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, noise, worse = runs
    history = tmp_path / "h.sqlite"
    code, out, err = run_cli(
        capsys, "history", "save", str(base), "--name", "main", "--history", str(history)
    )
    assert code == 0
    assert out == f"saved 20 records as run 'main' (id 1) in {history}\n"
    assert load_run(history, "main")[1] == suite(1.0, 1)
    code, out, err = run_cli(
        capsys, "compare", "history:main", str(worse), "--history", str(history),
        "--fail", "wh_per_1k:10%",
    )  # fmt: skip
    assert code == 1
    assert err.startswith("llmlab: history:main is run 'main' (")
    assert "model m: wh_per_1k" in err
    code, _, err = run_cli(
        capsys, "compare", "history:latest", str(noise), "--history", str(history), "--fail",
        "wh_per_1k:10%",
    )  # fmt: skip
    assert code == 0
    assert "history:latest is run 'main'" in err


def test_compare_history_from_the_environment(
    runs: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, noise, _ = runs
    history = tmp_path / "env.sqlite"
    save_run(history, [record(0, 0.25)], name="env-run", fingerprint=None, hardware=None, commit="")
    monkeypatch.setenv("LLMLAB_HISTORY", str(history))
    code, _, err = run_cli(capsys, "compare", "history:", str(noise))
    assert code == 0
    assert "history: is run 'env-run'" in err


def test_compare_bad_arguments_are_one_line_exit_2(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, noise, _ = runs
    err = usage_error(capsys, "compare", str(base), str(noise), "--fail", "wh:10%")
    assert "argument --fail: regression check 'wh:10%': unknown metric 'wh'" in err
    assert "metrics: wh_per_1k, joules, ttft_p50, decode_tps, cost, pass_rate" in err
    err = usage_error(capsys, "compare", str(base))
    assert "the following arguments are required: CURRENT" in err

    code, out, err = run_cli(capsys, "compare", str(tmp_path / "nope.jsonl"), str(noise))
    assert (code, out) == (2, "")
    assert err == f"llmlab compare: error: no such results file: {tmp_path / 'nope.jsonl'}\n"

    history = tmp_path / "h.sqlite"
    save_run(history, [record(0, 0.25)], name="one", fingerprint=None, hardware=None, commit="")
    save_run(history, [record(0, 0.25)], name="two", fingerprint=None, hardware=None, commit="")
    code, out, err = run_cli(
        capsys, "compare", "history:three", str(noise), "--history", str(history)
    )
    assert (code, out) == (2, "")
    assert err == (
        f"llmlab compare: error: history {history} has no run named 'three' (saved: one, two)\n"
    )
    code, _, err = run_cli(
        capsys, "compare", "history:latest", str(noise), "--history", str(tmp_path / "none")
    )
    assert code == 2
    assert "no history at" in err and err.count("\n") == 1


def test_compare_warns_on_other_hardware(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _, _ = runs
    other = write(tmp_path / "other.jsonl", [record(0, 0.25, fingerprint="bbbbbbbbbbbb")])
    code, _, err = run_cli(capsys, "compare", str(base), str(other))
    assert code == 0
    assert "llmlab: warning: the runs come from different hardware" in err
    assert "19 test(s) only in the baseline" in err


def test_corrupt_lines_warn_and_never_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "r.jsonl", [record(0, 0.25), record(1, 0.25)], '{"cut": ', "[1, 2]")
    code, out, err = run_cli(capsys, "leaderboard", str(path), "--format", "json")
    assert code == 0
    assert f"llmlab: warning: {path}:2: skipped a line that is not a record" in err
    assert f"llmlab: warning: {path}:3: skipped a line that is not JSON" in err
    assert json.loads(out)[0]["total"] == 2
    code, out, err = run_cli(capsys, "compare", str(path), str(path))
    assert code == 0
    assert err.count("skipped a line") == 4


# -- leaderboard ------------------------------------------------------------------------


def test_leaderboard_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        record(0, 0.2, category="math"),
        record(1, 0.4, "failed", category="math"),
        {**record(0, 0.1, category="math"), "model": "n"},
        {**record(2, 0.1), "model": "n"},
    ]
    path = write(tmp_path / "r.jsonl", records)
    code, out, err = run_cli(capsys, "leaderboard", str(path))  # --by category, md
    assert (code, err) == (0, "")
    assert out == (
        "| Model | all | math | Total | tokens/s | Wh/1k | Cost |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| n | 1/1 | 1/1 | 2/2 | 20 | 0.1 |  |\n"
        "| m |  | 1/2 | 1/2 | 20 | 0.3 |  |\n"
    )
    code, out, _ = run_cli(capsys, "leaderboard", str(path), "--by", "test", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:4] == [
        "model", "tests/test_x.py::test_0", "tests/test_x.py::test_0 max",
        "tests/test_x.py::test_0 tests",
    ]  # fmt: skip
    assert [row[0] for row in rows[1:]] == ["n", "m"]
    target = tmp_path / "board.json"
    code, out, _ = run_cli(
        capsys, "leaderboard", str(path), "--format", "json", "-o", str(target),
        "--kwh-price", "0.5",
    )  # fmt: skip
    assert (code, out) == (0, "")
    data = json.loads(target.read_text())
    assert data[1]["model"] == "m"
    assert data[1]["cost"] == pytest.approx((0.2 + 0.4) / 125 / 1000 * 0.5)
    err = usage_error(capsys, "leaderboard", str(path), "--format", "xml")
    assert "invalid choice: 'xml'" in err
    err = usage_error(capsys, "leaderboard", str(path), "--kwh-price", "-1")
    assert "argument --kwh-price: -1 must be 0 or more" in err
    err = usage_error(capsys, "leaderboard", str(path), "--prices", "gpt-4o")
    assert "argument --prices: price 'gpt-4o' is not MODEL=INPUT/OUTPUT" in err


def test_leaderboard_prices_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "r.jsonl", [{**record(0, 0.2), "spec": "openai:mine"}])
    code, out, _ = run_cli(
        capsys, "leaderboard", str(path), "--format", "json", "--prices", "openai:mine=1000/2000"
    )
    assert code == 0
    assert json.loads(out)[0]["cost"] == pytest.approx((40 * 1000 + 8 * 2000) / 1e6)


# -- history ----------------------------------------------------------------------------


def test_history_list_and_replace(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, noise, _ = runs
    history = tmp_path / "h.sqlite"
    code, out, err = run_cli(capsys, "history", "list", "--history", str(history))
    assert (code, out) == (0, "")
    assert err == f"no runs saved in {history}\n"
    for path in (base, noise):
        code, _, err = run_cli(
            capsys, "history", "save", str(path), "--name", "x", "--history", str(history)
        )
        assert code == 0
    assert "llmlab history: replaced run 'x' (" in err and "20 records" in err
    code, out, _ = run_cli(capsys, "history", "list", "--history", str(history))
    assert code == 0
    [line] = out.splitlines()
    assert line.startswith("'x' (")
    assert line.endswith("20 records, commit deadbeef)\tfingerprint aaaaaaaaaaaa")


def test_every_command_reads_saved_runs(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _, _ = runs
    history = tmp_path / "h.sqlite"
    assert (
        run_cli(capsys, "history", "save", str(base), "--name", "b", "--history", str(history))[0]
        == 0
    )
    code, out, err = run_cli(capsys, "leaderboard", "latest", "--history", str(history))
    assert code == 0
    assert "| m | 20/20 | 20/20 |" in out
    assert err.startswith("llmlab: latest is run 'b' (")
    code, out, err = run_cli(capsys, "report", "typo", "--csv", "x.csv", "--history", str(history))
    assert (code, out) == (2, "")
    assert err == (
        f"llmlab report: error: 'typo' is no results file, and history {history} has no run "
        "named 'typo' (saved: b)\n"
    )


# -- report -----------------------------------------------------------------------------


def fake_writer(monkeypatch: pytest.MonkeyPatch, module: str, function: str) -> list[Any]:
    calls: list[Any] = []

    def writer(records: list[dict[str, Any]], path: Path, **options: Any) -> None:
        calls.append((records, path, options))
        path.write_text("written")

    fake = types.ModuleType(module)
    setattr(fake, function, writer)
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


def test_report_calls_the_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    html_calls = fake_writer(monkeypatch, HTML, "write_html")
    csv_calls = fake_writer(monkeypatch, CSV, "write_csv")
    results = write(tmp_path / "r.jsonl", [record(0, 0.25), record(1, 0.3)], "garbage")
    out_html, out_csv = tmp_path / "report.html", tmp_path / "out.csv"
    code, out, err = run_cli(
        capsys, "report", str(results), "-o", str(out_html), "--csv", str(out_csv),
        "--title", "Nightly",
    )  # fmt: skip
    assert code == 0
    assert "skipped a line that is not JSON" in err
    assert out.splitlines() == [f"{out_html}\t2 records", f"{out_csv}\t2 records"]
    assert html_calls == [
        ([record(0, 0.25), record(1, 0.3)], out_html,
         {"title": "Nightly", "meter_setup": None, "hardware": None}),
    ]  # fmt: skip
    assert csv_calls == [([record(0, 0.25), record(1, 0.3)], out_csv, {})]


def test_report_without_the_html_module_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, HTML, None)  # as if the module did not exist
    csv_calls = fake_writer(monkeypatch, CSV, "write_csv")
    results = write(tmp_path / "r.jsonl", [record(0, 0.25)])
    out_csv = tmp_path / "out.csv"
    code, out, err = run_cli(
        capsys, "report", str(results), "-o", str(tmp_path / "r.html"), "--csv", str(out_csv)
    )
    assert (code, out) == (1, "")
    assert err == (f"llmlab: an HTML report needs {HTML}, which this installation does not have\n")
    assert csv_calls == [] and not out_csv.exists()  # nothing half-written
    monkeypatch.setitem(sys.modules, CSV, types.ModuleType(CSV))  # present, without write_csv
    code, _, err = run_cli(capsys, "report", str(results), "--csv", str(out_csv))
    assert code == 1
    assert err == f"llmlab: a CSV file needs {CSV}.write_csv, which this version lacks\n"


def test_report_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = write(tmp_path / "r.jsonl", [record(0, 0.25)])
    code, out, err = run_cli(capsys, "report", str(results))
    assert (code, out) == (2, "")
    assert (
        err == "llmlab report: error: nothing to write: give -o REPORT.html and/or --csv FILE.csv\n"
    )
    code, _, err = run_cli(capsys, "report", str(tmp_path / "none.jsonl"), "-o", "x.html")
    assert code == 2
    assert err == f"llmlab report: error: no such results file: {tmp_path / 'none.jsonl'}\n"


@pytest.mark.parametrize(("module", "flag"), [(HTML, "-o"), (CSV, "--csv")])
def test_report_with_the_real_writers(
    module: str, flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever this checkout has: the real writer's file, or the clear error."""
    results = write(tmp_path / "r.jsonl", [record(0, 0.25)])
    target = tmp_path / "out"
    code, out, err = run_cli(capsys, "report", str(results), flag, str(target))
    if importlib.util.find_spec(module) is not None:
        assert (code, out) == (0, f"{target}\t1 records\n")
        assert target.stat().st_size > 0
    else:
        assert code == 1
        assert f"needs {module}, which this installation does not have" in err
        assert not target.exists()


# -- the models commands still work beside the new ones -------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("models", "report", "compare", "leaderboard", "history"):
        assert command in out
    err = usage_error(capsys, "models", "pull", "nope")
    assert "invalid choice: 'nope'" in err and "smollm2-135m" in err


@pytest.mark.parametrize(
    ("field", "value"),
    [("outcome", []), ("model", 5), ("energy", "lots"), ("temperature", "hot"), ("test_id", 7)],
)
def test_wrong_typed_fields_are_skipped_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: object
) -> None:
    """A record whose field has the wrong type (a hand-edited or foreign file) is
    skipped with a warning naming the file, the line and the field; every command goes
    on with the other records."""
    good = {"test_id": "t::a", "outcome": "passed", "model": "m", "temperature": 0.0}
    bad = {**good, "test_id": "t::b", field: value}
    source = tmp_path / "results.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in (good, bad)) + "\n", encoding="utf-8")
    commands = [
        ["report", str(source), "-o", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv")],
        ["leaderboard", str(source), "--format", "json"],
        ["compare", str(source), str(source)],
    ]
    for command in commands:
        code, _, err = run_cli(capsys, *command)
        assert code == 0, (command, err)
        expected = (
            f"llmlab: warning: {source}:2: skipped a line that is not a record (field {field!r}"
        )
        assert expected in err, (command, err)
