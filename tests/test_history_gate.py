"""--llm-save / --llm-compare / --llm-compare-fail end to end on the embedded model."""

from __future__ import annotations

import pytest

CONFTEST = '''
import os, time
from pytest_llmlab.energy.base import CounterSample

class StepMeter:
    """Every sample adds STEP_J joules: a window's energy is fixed by its edge count,
    so two runs differ only by what the test sets, never by timing noise."""
    name = "step"

    def __init__(self):
        self.total = 0.0

    def sample(self):
        self.total += float(os.environ["STEP_J"])
        return [CounterSample("plug-0", self.total, time.monotonic_ns())]

    def close(self):
        pass

def pytest_llmlab_make_meters(config):
    return [StepMeter()]
'''

TESTS = """
import pytest

@pytest.mark.parametrize("city", ["France", "Italy", "Spain", "Germany", "Japan"])
def test_capital(llm, city):
    llm.generate(f"What is the capital of {city}? Answer in one word.", max_tokens=8)
"""


def test_saved_run_then_regression_then_clean(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    common = ["--llm-meter=none", "--llm-baseline-s=0", "-p", "no:cacheprovider"]

    monkeypatch.setenv("STEP_J", "1.0")
    first = pytester.runpytest(*common, "--llm-save=main")
    first.assert_outcomes(passed=5)
    assert (pytester.path / ".llmlab" / "history.sqlite").is_file()

    monkeypatch.setenv("STEP_J", "1.5")  # +50% energy on every generation
    worse = pytester.runpytest(*common, "--llm-compare=main", "--llm-compare-fail=wh_per_1k:10%")
    worse.assert_outcomes(passed=5)  # every test passed, yet the session fails
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(
        ["*llmlab regressions*", "*local:smollm2-135m*wh_per_1k*+50.0%*threshold +10%*"]
    )

    monkeypatch.setenv("STEP_J", "1.0")
    same = pytester.runpytest(*common, "--llm-compare", "--llm-compare-fail=wh_per_1k:10%")
    assert same.ret == pytest.ExitCode.OK
    same.stdout.fnmatch_lines(["llmlab compare: against *"])
    assert "llmlab regressions" not in same.stdout.str()


def test_compare_fail_without_a_baseline_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--llm-compare-fail=wh_per_1k:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-compare-fail needs a baseline: add --llm-compare*"])


def test_bad_compare_fail_names_the_item(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--llm-compare=main", "--llm-compare-fail=speed:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-compare-fail*speed*"])


def test_a_gate_without_its_baseline_fails_closed(pytester: pytest.Pytester) -> None:
    """--llm-compare=NAME with --llm-compare-fail and no such run: every test passed,
    yet the session fails with one line saying the gate had nothing to hold it to."""
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(
        "--llm-baseline-s=0", "--llm-compare=nosuch", "--llm-compare-fail=wh_per_1k:10%"
    )
    result.assert_outcomes(passed=5)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lines = [line for line in result.outlines if "no baseline to gate on" in line]
    assert len(lines) == 1, result.outlines
    assert "--llm-compare-fail=wh_per_1k:+10% cannot pass without one" in lines[0]
