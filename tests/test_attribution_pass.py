"""Session-end apportioning: overlapping generations on one host share the energy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_llmlab.energy.base import Window
from pytest_llmlab.report.attribution_pass import attribute_records


def record(window_id: str, t0: int, t1: int, c0: float, c1: float, *, provenance: str = "measured",
           tokens: int = 10, process: str = "h:1") -> dict[str, Any]:  # fmt: skip
    joules = c1 - c0
    window = Window(
        window_id=window_id, host="h", process=process, domain="package-0",
        t_start_ns=t0, t_end_ns=t1, counter_start_j=c0, counter_end_j=c1,
        provenance=provenance,  # type: ignore[arg-type]
    )  # fmt: skip
    return {
        "test_id": window_id,
        "energy": {
            "joules": joules,
            "cpu": {"joules": joules, "provenance": provenance, "domains": ["package-0"]},
            "dram": None,
            "gpu": None,
            "other": {},
            "wh": joules / 3600,
            "wh_per_1k": joules / 3600 / tokens * 1000,
            "prefill_joules": joules / 2,
            "decode_joules": joules / 2,
            "duration_s": (t1 - t0) / 1e9,
            "avg_power_w": joules / ((t1 - t0) / 1e9),
            "baseline_w": 1.0,
            "net_joules": joules - (t1 - t0) / 1e9,
            "provenance": provenance,
            "measured": provenance != "estimated",
            "gco2e": None,
            "cost": None,
            "windows": [window.to_dict()],
        },
    }


def test_overlapping_measured_windows_are_apportioned() -> None:
    # Counter at 100 W: 0 J at t=0 s ... 400 J at t=4 s. A: 0-2 s, B: 1-3 s, C: 3.5-4 s.
    a = record("a", 0, 2_000_000_000, 0.0, 200.0, process="h:1")
    b = record("b", 1_000_000_000, 3_000_000_000, 100.0, 300.0, process="h:2")
    c = record("c", 3_500_000_000, 4_000_000_000, 350.0, 400.0)
    records = [a, b, c]
    assert attribute_records(records) == {"measured-apportioned": 2}
    ea, eb, ec = (r["energy"] for r in records)
    # The shared second (100 J) is split evenly (no token segments): 150 J each.
    assert ea["joules"] == pytest.approx(150.0) and eb["joules"] == pytest.approx(150.0)
    assert ea["gross_joules"] == 200.0
    assert ea["provenance"] == "measured-apportioned" and ea["cpu"]["shared"] is True
    assert ea["measured"] is True
    assert ea["wh"] == pytest.approx(150.0 / 3600)
    assert ea["wh_per_1k"] == pytest.approx(150.0 / 3600 / 10 * 1000)
    assert ea["net_joules"] == pytest.approx(150.0 - 1.0 * 2.0)
    assert ea["prefill_joules"] + ea["decode_joules"] == pytest.approx(150.0)
    # The lone window keeps its own reading untouched.
    assert ec["joules"] == 50.0 and "gross_joules" not in ec and ec["provenance"] == "measured"
    # Nothing is counted twice: the union of A and B is 0-3 s = 300 J.
    assert ea["joules"] + eb["joules"] == pytest.approx(300.0)


def test_estimates_stay_estimated_when_apportioned() -> None:
    records = [
        record("a", 0, 10, 0.0, 10.0, provenance="estimated"),
        record("b", 0, 10, 0.0, 10.0, provenance="estimated", process="h:2"),
    ]
    assert attribute_records(records) == {"estimated": 2}
    assert [r["energy"]["joules"] for r in records] == [pytest.approx(5.0)] * 2
    assert {r["energy"]["provenance"] for r in records} == {"estimated"}
    assert not records[0]["energy"]["measured"]


def test_per_process_counters_never_share_across_processes() -> None:
    """Integrated power is built up inside each process: not comparable across them."""
    records = [
        record("a", 0, 10, 0.0, 10.0, provenance="integrated", process="h:1"),
        record("b", 0, 10, 500.0, 510.0, provenance="integrated", process="h:2"),
    ]
    assert attribute_records(records) == {}
    assert [r["energy"]["joules"] for r in records] == [10.0, 10.0]


def test_records_without_energy_are_ignored() -> None:
    assert attribute_records([{"energy": None}, {"test_id": "x"}]) == {}


CONFTEST = '''
import time
from pytest_llmlab.energy.base import CounterSample

class Clock10W:
    """A machine-wide 10 W meter: the monotonic clock is shared by every process."""
    name = "clock"

    def sample(self):
        now = time.monotonic_ns()
        return [CounterSample("plug-0", now / 1e9 * 10.0, now, provenance="measured")]

    def close(self):
        pass

def pytest_llmlab_make_meters(config):
    return [Clock10W()]
'''

BARRIER_TEST = '''
import os, time
from pathlib import Path
import pytest

@pytest.mark.parametrize("who", ["a", "b"])
def test_together(llm, who, tmp_path_factory):
    """Both workers start generating together, so their windows overlap."""
    here = Path(os.environ["BARRIER_DIR"])
    (here / who).touch()
    deadline = time.monotonic() + 60
    while not ((here / "a").exists() and (here / "b").exists()):
        assert time.monotonic() < deadline, "the other worker never arrived"
        time.sleep(0.01)
    gen = llm.generate("List the numbers from 1 to 100, separated by commas.", max_tokens=48)
    assert gen.energy.other["plug"].joules > 0
'''


def test_xdist_workers_overlapping_on_one_host_share_energy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two xdist workers generate at the same time on one host under a 10 W clock
    meter: the report's readings add up to 10 W x the union of the windows, not to
    the sum of their gross readings."""
    barrier = pytester.mkdir("barrier")
    monkeypatch.setenv("BARRIER_DIR", str(barrier))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(BARRIER_TEST)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--llm-meter=none", "--llm-baseline-s=0", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["llmlab energy: 2 reading(s) overlapped others*(2 measured-apportioned)"]
    )
    lines = (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    energies = [json.loads(line)["energy"] for line in lines]
    assert len(energies) == 2 and {e["provenance"] for e in energies} == {"measured-apportioned"}
    windows = [e["windows"][0] for e in energies]
    union_s = (max(w["t_end_ns"] for w in windows) - min(w["t_start_ns"] for w in windows)) / 1e9
    assert sum(e["joules"] for e in energies) == pytest.approx(10.0 * union_s, rel=1e-6)
    for energy in energies:
        assert energy["joules"] < energy["gross_joules"]
        assert energy["gross_joules"] == pytest.approx(10.0 * energy["duration_s"], rel=1e-6)


def test_summary_names_estimates_as_estimates(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers generating together under the machine-wide CPU estimate (a local
    server among the session's models chooses it): the readings share, and the
    summary line does not call them measured."""
    barrier = pytester.mkdir("barrier")
    monkeypatch.setenv("BARRIER_DIR", str(barrier))
    test = BARRIER_TEST.replace('assert gen.energy.other["plug"].joules > 0', "")
    only_local = '@pytest.mark.llm(models=["local:smollm2-135m"])\n@pytest.mark.parametrize'
    pytester.makepyfile(test.replace("@pytest.mark.parametrize", only_local))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--llm-meter=estimate", "--llm-baseline-s=0", "-p", "no:randomly",
        "--llm-models=local:smollm2-135m,llamacpp:served-elsewhere",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["llmlab energy: 2 reading(s) overlapped others*(2 estimated)"])
    assert "measured-apportioned" not in result.stdout.str()
    lines = (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    assert {json.loads(line)["energy"]["windows"][0]["domain"] for line in lines} == {
        "cpu-estimate"
    }


def test_per_process_estimates_of_two_workers_never_share(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded model only: each worker's estimate is its own process's CPU time,
    so two workers generating together keep their own readings, unshared."""
    barrier = pytester.mkdir("barrier")
    monkeypatch.setenv("BARRIER_DIR", str(barrier))
    pytester.makepyfile(BARRIER_TEST.replace('assert gen.energy.other["plug"].joules > 0', ""))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--llm-meter=estimate", "--llm-baseline-s=0", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=2)
    assert "overlapped others" not in result.stdout.str()
    lines = (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    energies = [json.loads(line)["energy"] for line in lines]
    assert len(energies) == 2
    for energy in energies:
        assert [w["domain"] for w in energy["windows"]] == ["cpu-estimate-process"]
        assert energy["provenance"] == "estimated" and "gross_joules" not in energy
        assert "this process's CPU time" in energy["note"]
    windows = [e["windows"][0] for e in energies]
    assert max(w["t_start_ns"] for w in windows) < min(w["t_end_ns"] for w in windows)
