"""Energy readings: the CPU estimate, meter selection, readings, the `meter` fixture,
plugin meters, and metered generations end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from pytest_llmlab.energy.base import CounterSample, MeterUnavailable, TokenSegment
from pytest_llmlab.energy.cpu import TDP_TABLE, CpuEstimateMeter, watts_per_cpu
from pytest_llmlab.energy.meters import (
    MeterSelectionError,
    MeterSet,
    select_meters,
)
from pytest_llmlab.energy.reading import EnergyReading, weakest
from pytest_llmlab.option_values import parse_meter_choice


class FakeCounter:
    """A meter whose cumulative joules the test sets by hand."""

    def __init__(self, name: str, domains: dict[str, float], provenance: str = "measured"):
        self.name = name
        self.values = dict(domains)
        self.provenance = provenance
        self.closed = False

    def sample(self) -> list[CounterSample]:
        now = time.monotonic_ns()
        return [
            CounterSample(d, j, now, provenance=self.provenance)  # type: ignore[arg-type]
            for d, j in self.values.items()
        ]

    def close(self) -> None:
        self.closed = True


def write_proc_stat(path: Path, busy_ticks: int, idle_ticks: int = 1000) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")


def test_cpu_estimate_is_busy_seconds_times_watts(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_proc_stat(stat, busy_ticks=100)
    meter = CpuEstimateMeter(watts_per_logical_cpu=12.5, proc_stat=stat)
    assert meter.system_wide
    first = meter.sample()[0]
    write_proc_stat(stat, busy_ticks=100 + 250, idle_ticks=5000)  # 2.5 busy CPU-seconds
    second = meter.sample()[0]
    assert second.domain == "cpu-estimate" and second.provenance == "estimated"
    assert second.joules - first.joules == pytest.approx(2.5 * 12.5)
    assert "12.5 W per logical CPU (--llm-cpu-tdp), all processes (/proc/stat)" in meter.description


def test_cpu_estimate_iowait_is_not_busy(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 0 100 50 0 0 0 0 0\n")
    meter = CpuEstimateMeter(watts_per_logical_cpu=1.0, proc_stat=stat)
    before = meter.sample()[0].joules
    stat.write_text("cpu  10 0 0 100 450 0 0 0 0 0\n")  # only iowait grew
    assert meter.sample()[0].joules == before


def test_tdp_table_by_cpu_model(tmp_path: Path) -> None:
    assert watts_per_cpu("AMD EPYC 7763 64-Core Processor") == (4.0, "EPYC")
    assert watts_per_cpu("Intel(R) Core(TM) i7-12700K") == (8.0, "Core(TM) i")
    assert watts_per_cpu("Some New Chip")[1] == "unknown CPU"
    assert TDP_TABLE[-1][0] == ""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    meter = CpuEstimateMeter(proc_stat=tmp_path / "missing", cpuinfo=info)
    assert meter.watts == 6.0
    assert "table entry 'Xeon'" in meter.description
    assert not meter.system_wide and "this process only" in meter.description


def test_reading_figures_are_consistent() -> None:
    fake = FakeCounter("fake", {"package-0": 100.0, "dram-0": 10.0, "gpu-0": 500.0})
    meters = MeterSet([fake], "fake meters", baseline_w=2.0, grid_gco2_per_kwh=400.0, kwh_price=0.3)
    window = meters.open("gen")
    fake.values = {"package-0": 130.0, "dram-0": 13.0, "gpu-0": 560.0}
    window.mark_first_token()
    fake.values = {"package-0": 136.0, "dram-0": 14.0, "gpu-0": 800.0}
    reading = window.close(completion_tokens=50, segments=[TokenSegment(0, 1, 5)])
    assert reading.cpu is not None and reading.cpu.joules == pytest.approx(36.0)
    assert reading.dram is not None and reading.dram.joules == pytest.approx(4.0)
    assert reading.gpu is not None and reading.gpu.joules == pytest.approx(300.0)
    assert reading.joules == pytest.approx(340.0)
    assert reading.prefill_joules == pytest.approx(30 + 3 + 60)
    assert reading.decode_joules == pytest.approx(6 + 1 + 240)
    assert reading.wh == pytest.approx(340.0 / 3600)
    assert reading.wh is not None
    assert reading.wh_per_1k == pytest.approx(reading.wh / 50 * 1000)
    assert reading.net_joules == pytest.approx(340.0 - 2.0 * reading.duration_s)
    assert reading.gco2e == pytest.approx(340.0 / 3600 / 1000 * 400)
    assert reading.cost == pytest.approx(340.0 / 3600 / 1000 * 0.3)
    assert reading.provenance == "measured" and reading.measured
    assert reading.low_confidence and "shorter than 1 s" in (reading.low_confidence_reason or "")
    assert reading.meter == ["fake"]
    assert {w["domain"] for w in reading.windows} == {"package-0", "dram-0", "gpu-0"}
    assert all(w["segments"] == [{"t0_ns": 0, "t1_ns": 1, "tokens": 5}] for w in reading.windows)
    assert window.close() is reading  # idempotent


def test_estimate_never_folds_silently_into_measured() -> None:
    measured = FakeCounter("rapl", {"package-0": 0.0})
    estimate = FakeCounter("est", {"cpu-estimate": 0.0}, provenance="estimated")
    meters = MeterSet([measured, estimate], "mixed")
    with meters.open() as window:
        measured.values["package-0"] = 5.0
        estimate.values["cpu-estimate"] = 7.0
    reading = window.reading
    assert reading is not None
    assert reading.cpu is not None and reading.cpu.provenance == "estimated"
    assert reading.provenance == "estimated" and not reading.measured
    assert weakest(["measured", "integrated"]) == "integrated"
    assert weakest([]) == "unavailable"


def test_zero_tokens_has_no_wh_per_1k() -> None:
    fake = FakeCounter("fake", {"package-0": 0.0})
    meters = MeterSet([fake], "fake")
    window = meters.open()
    fake.values["package-0"] = 3.6
    reading = window.close(completion_tokens=0)
    assert reading.wh == pytest.approx(0.001)
    assert reading.wh_per_1k is None


def test_unavailable_reading() -> None:
    reading = EnergyReading.unavailable("remote endpoint")
    assert reading.joules is None and reading.provenance == "unavailable" and not reading.measured
    assert reading.note == "remote endpoint"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("auto", ("auto",)), ("rapl, nvml", ("rapl", "nvml")), ("ESTIMATE", ("estimate",))],
)
def test_parse_meter_choice(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_meter_choice(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("rapl,psu", "unknown meter 'psu'"),
        ("auto,rapl", "auto cannot be combined"),
        ("", "no meter"),
    ],
)
def test_bad_meter_choice(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_meter_choice(raw)


def unavailable(reason: str) -> Callable[[], NoReturn]:
    def factory() -> NoReturn:
        raise MeterUnavailable(reason)

    return factory


def test_auto_falls_back_to_the_estimate_and_says_why() -> None:
    meters = select_meters(
        ("auto",),
        cpu_tdp=15.0,
        factories={
            "rapl": unavailable("RAPL: /sys/class/powercap not present (virtual machine?)"),
            "nvml": unavailable("NVML: no NVIDIA driver"),
        },
    )
    try:
        assert meters.names == ["cpu-estimate"]
        assert meters.description.startswith(
            "RAPL: /sys/class/powercap not present (virtual machine?); NVML: no NVIDIA driver; "
            "using cpu-estimate with 15 W per logical CPU (--llm-cpu-tdp)"
        )
    finally:
        meters.close()


def test_auto_uses_hardware_when_present_without_the_estimate() -> None:
    rapl = FakeCounter("rapl", {"package-0": 0.0})
    meters = select_meters(
        ("auto",), factories={"rapl": lambda: rapl, "nvml": unavailable("NVML: no NVIDIA driver")}
    )
    assert meters.names == ["rapl"]
    assert "NVML: no NVIDIA driver" in meters.description
    meters.close()
    assert rapl.closed


def test_explicit_meter_that_cannot_run_is_an_error() -> None:
    rapl = FakeCounter("rapl", {"package-0": 0.0})
    with pytest.raises(MeterSelectionError, match=r"--llm-meter=rapl,nvml: NVML: no NVIDIA driver"):
        select_meters(
            ("rapl", "nvml"),
            factories={"rapl": lambda: rapl, "nvml": unavailable("NVML: no NVIDIA driver")},
        )
    assert rapl.closed, "meters opened before the failure are released"


def test_none_meters_nothing() -> None:
    meters = select_meters(("none",))
    assert meters.names == []
    reading = meters.open().close(completion_tokens=3)
    assert reading.provenance == "unavailable" and "--llm-meter=none" in (reading.note or "")


def test_baseline_is_idle_power_over_the_interval() -> None:
    fake = FakeCounter("fake", {"package-0": 0.0})
    meters = MeterSet([fake], "fake")

    def sleep(seconds: float) -> None:
        time.sleep(0.05)
        fake.values["package-0"] = 10.0

    watts = meters.measure_baseline(3.0, sleep=sleep)
    assert watts > 0 and meters.baseline_w == watts
    # 10 J over the ~0.05 s that really passed between the two samples.
    assert 10.0 / 1.0 < watts < 10.0 / 0.04


def test_asking_for_rapl_here_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMLAB_POWERCAP_ROOT", str(pytester.path / "no-powercap"))
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--llm-meter=rapl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pytest-llmlab: --llm-meter=rapl: RAPL: *no-powercap not present*"]
    )


def test_meter_fixture_windows_nest_and_overlap(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import time
        from pytest_llmlab.energy.base import CounterSample

        class Ticker:
            '''A plugin meter: 1 J per call, so every window edge is visible.'''
            name = "ticker"

            def __init__(self):
                self.joules = 0.0

            def sample(self):
                self.joules += 1.0
                return [CounterSample("plug-0", self.joules, time.monotonic_ns())]

            def close(self):
                pass

        def pytest_llmlab_make_meters(config):
            return [Ticker()]
        """
    )
    pytester.makepyfile(
        """
        def test_windows(meter):
            assert meter.names == ["ticker"]
            assert "plugin meters: ticker" in meter.description
            outer = meter.window("outer").__enter__()
            with meter.window("inner") as inner:
                pass
            overlapping = meter.window("overlap").__enter__()
            outer.__exit__(None, None, None)
            overlapping.__exit__(None, None, None)
            # Each window's delta counts the samples taken between its own edges.
            assert inner.reading.other["plug"].joules == 1.0
            assert outer.reading.other["plug"].joules == 4.0  # samples 1 -> 5
            assert overlapping.reading.other["plug"].joules == 2.0  # samples 4 -> 6
            assert outer.reading.provenance == "measured"
        """
    )
    result = pytester.runpytest("--llm-meter=none", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_generations_carry_an_estimated_reading(pytester: pytest.Pytester) -> None:
    """End to end on the embedded model: no RAPL and no GPU here, so every reading is
    the CPU estimate, labelled as such, and Wh/1k follows from Wh and the tokens."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("prompt", ["What is the capital of France?", "Say hi."])
        def test_energy(llm, prompt):
            gen = llm.generate(prompt, max_tokens=12)
            energy = gen.energy
            assert energy is not None and energy.joules is not None and energy.joules >= 0
            assert energy.provenance == "estimated" and not energy.measured
            assert energy.meter == ["cpu-estimate"]
            assert "cpu-estimate with 7 W per logical CPU" in energy.note
            assert energy.wh == pytest.approx(energy.joules / 3600)
            assert energy.wh_per_1k == pytest.approx(energy.wh / gen.usage.completion_tokens * 1000)
            assert energy.prefill_joules + energy.decode_joules == pytest.approx(energy.joules)
            assert energy.duration_s == pytest.approx(gen.timings.total_s, abs=0.05)
            assert energy.cost == pytest.approx(energy.wh / 1000 * 0.25)
            assert energy.baseline_w is None and energy.net_joules is None
        """
    )
    result = pytester.runpytest(
        "--llm-cpu-tdp=7", "--llm-baseline-s=0", "--llm-kwh-price=0.25", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    # Once after collection (before the tests run), once in the summary.
    result.stdout.fnmatch_lines(
        [
            "collected 2 items",
            "llmlab energy: *using cpu-estimate with 7 W per logical CPU*",
            "*test_generations_carry_an_estimated_reading.py ..*",
            "llmlab energy: *using cpu-estimate with 7 W per logical CPU*",
        ]
    )
    records = [
        json.loads(line)
        for line in (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    ]
    assert len(records) == 2
    for record in records:
        assert record["energy"]["provenance"] == "estimated"
        # The embedded model runs in this process: its own CPU time, not the machine's.
        assert record["energy"]["windows"][0]["domain"] == "cpu-estimate-process"
        note = record["energy"]["note"]
        assert "this process's CPU time: local:smollm2-135m runs in this process" in note


def test_remote_endpoint_is_not_metered_locally(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_llmlab.models.base import Request
        from pytest_llmlab.models.openai import OpenAICompatible

        def test_remote(llm):
            assert not OpenAICompatible(model="m", display="m", base_url="https://example.invalid/v1").runs_locally
            assert OpenAICompatible(model="m", display="m", base_url="http://127.0.0.1:9/v1").runs_locally
        """
    )
    result = pytester.runpytest("--llm-baseline-s=0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_window_dict_round_trip() -> None:
    import dataclasses

    from pytest_llmlab.energy.base import CounterEvent, Window

    window = Window(
        window_id="h:1:1", host="h", process="h:1", domain="package-0", t_start_ns=1,
        t_end_ns=5, counter_start_j=2.0, counter_end_j=3.5, wrap_j=4294.967295,
        provenance="measured", segments=(TokenSegment(1, 3, 7), TokenSegment(3, 5, 2)),
        wraps_start=1, wraps_end=2, events=(CounterEvent(2, 2.5, 3, 4297.0, 2, None),),
    )  # fmt: skip
    data = window.to_dict()
    assert data == dataclasses.asdict(window) | {
        "segments": [dataclasses.asdict(s) for s in window.segments],
        "events": [e._asdict() for e in window.events],
    }
    assert Window.from_dict(data) == window
    assert window.joules == 1.5


def test_cpu_estimate_keeps_proc_stat_open_and_closes_it(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_proc_stat(stat, busy_ticks=0)
    meter = CpuEstimateMeter(watts_per_logical_cpu=1.0, proc_stat=stat)
    write_proc_stat(stat, busy_ticks=100)  # rewritten in place, as procfs regenerates it
    assert meter.sample()[0].joules == pytest.approx(100 * meter._tick_s)
    meter.close()
    meter.close()
    assert meter._fd is None
