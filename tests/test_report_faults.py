"""Reports survive interrupted runs and crashed xdist workers."""

from __future__ import annotations

import json

import pytest

PARIS = "What is the capital of France? Answer in one word."


def test_interrupted_run_still_writes_csv_and_html(pytester: pytest.Pytester) -> None:
    """Ctrl-C (KeyboardInterrupt) during the second test: what completed is reported."""
    pytester.makepyfile(
        f"""
        def test_first(llm):
            assert "Paris" in llm.generate({PARIS!r}, max_tokens=16).text

        def test_second(llm):
            llm.generate("Say hi.", max_tokens=4)
            raise KeyboardInterrupt
        """
    )
    result = pytester.runpytest_subprocess("--llm-baseline-s=0")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    reports = pytester.path / "reports"
    records = [json.loads(line) for line in (reports / "results.jsonl").read_text().splitlines()]
    assert [r["test_id"].split("::")[1] for r in records] == ["test_first[local:smollm2-135m-T0]"]
    csv_lines = (reports / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 2 and csv_lines[0].startswith("test_id,")
    assert "test_first" in (reports / "report.html").read_text()


def test_a_crashed_worker_loses_nothing_that_completed(pytester: pytest.Pytester) -> None:
    """A worker killed mid-test (os._exit, after one generation completed) is replaced
    by xdist; every other test's records and the crashed test's completed generation
    (recovered from the worker's spool, marked failed with the crash) are in one set of
    reports written by the controller."""
    pytester.makepyfile(
        f"""
        import os
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_ok(llm, n):
            assert llm.generate({PARIS!r}, max_tokens=8).usage.completion_tokens > 0

        def test_crash(llm):
            llm.generate("Say hi.", max_tokens=4)
            os._exit(1)

        def test_crash_before_generating(llm):
            os._exit(1)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--llm-baseline-s=0")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*test_crash*", "*recovered from worker spools*"])
    reports = pytester.path / "reports"
    records = [json.loads(line) for line in (reports / "results.jsonl").read_text().splitlines()]
    by_test = {r["test_id"].split("::")[1]: r for r in records}
    assert sorted(by_test) == sorted(
        [f"test_ok[local:smollm2-135m-T0-{n}]" for n in range(4)]
        + [
            "test_crash[local:smollm2-135m-T0]",
            "test_crash_before_generating[local:smollm2-135m-T0]",
        ]
    )
    assert len(records) == 6
    crashed = by_test["test_crash[local:smollm2-135m-T0]"]
    assert crashed["outcome"] == "failed" and "crashed while running" in crashed["failure"]
    assert crashed["completion_tokens"] and crashed["prompt"] == "Say hi."
    stub = by_test["test_crash_before_generating[local:smollm2-135m-T0]"]
    assert stub["outcome"] == "failed" and stub["finish_reason"] == "error"
    assert stub["model"] == "local:smollm2-135m" and stub["completion_tokens"] is None
    assert len({r["run_id"] for r in records}) == 1 and records[0]["run_id"]
    assert len((reports / "results.csv").read_text().splitlines()) == 7
    assert (reports / "report.html").is_file()
    assert not (reports / ".spool").exists()  # spent spools are removed


def test_pytest_html_table_gains_llm_columns(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html", reason="pytest-html is not installed")
    pytester.makepyfile(
        f"""
        def test_capital(llm):
            assert "Paris" in llm.generate({PARIS!r}, max_tokens=16).text

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest(
        "--llm-baseline-s=0", "--llm-models=fast=local:smollm2-135m", "--html=out.html"
    )
    result.assert_outcomes(passed=2)
    page = (pytester.path / "out.html").read_text()
    for header in ("Model", "Wh/1k", "tok/s", "Energy source"):
        assert f"{header}</th>" in page
    # pytest-html keeps rows as JSON strings inside the page: our cells are there.
    assert "&lt;td&gt;fast&lt;/td&gt;" in page or "<td>fast</td>" in page
    assert "estimated" in page


def test_same_records_with_and_without_xdist(pytester: pytest.Pytester) -> None:
    """At T=0 the same suite gives the same records (tests, outputs, token counts)
    in one process and under -n 2, and each run writes exactly one set of reports."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("city", ["France", "Italy", "Spain", "Japan"])
        def test_capital(llm, city):
            llm.generate(f"What is the capital of {city}? Answer in one word.", max_tokens=12)
        """
    )

    def run(*args: str) -> list[tuple[str, str, int]]:
        result = pytester.runpytest_subprocess("--llm-baseline-s=0", *args)
        result.assert_outcomes(passed=4)
        reports = pytester.path / "reports"
        # One run's reports; the previous run's, if any, moved into previous/.
        current = sorted(p.name for p in reports.iterdir() if p.name != "previous")
        assert current == ["generations.jsonl", "report.html", "results.csv", "results.jsonl"]
        lines = (reports / "results.jsonl").read_text().splitlines()
        return sorted(
            (r["test_id"], r["output"], r["completion_tokens"]) for r in map(json.loads, lines)
        )

    single = run()
    parallel = run("-n", "2")
    assert len(single) == 4
    assert parallel == single
