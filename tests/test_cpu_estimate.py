"""The CPU estimate's scope: this process's CPU time for the embedded model, the whole
machine's (steal and guest excluded) for a local server in another process.

Fake ``/proc/stat`` files and an injected process clock for the arithmetic; one real
run with a CPU-bound neighbour process for what a shared CI runner does to each scope.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.config import build_settings
from pytest_llmlab.energy.base import TokenSegment, Window
from pytest_llmlab.energy.cpu import (
    IN_PROCESS_PROVIDERS,
    CpuEstimateMeter,
    _served_here,
    estimate_scope,
)
from pytest_llmlab.energy.meters import MeterSet, select_meters
from pytest_llmlab.models.openai import is_loopback
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.report.attribution_pass import attribute_records


def write_stat(path: Path, user: int, *, steal: int = 0, guest: int = 0, nice: int = 0) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {user} {nice} 5 1000 7 1 2 {steal} {guest} 0\ncpu0 1 2 3 4\n")


class FakeProcessClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


# -- machine-wide: /proc/stat without steal and guest --------------------------------


def test_machine_wide_estimate_leaves_out_steal_time(tmp_path: Path) -> None:
    """Steal time is another guest running on our CPU: not our work."""
    stat = tmp_path / "stat"
    write_stat(stat, user=100)
    meter = CpuEstimateMeter(watts_per_logical_cpu=10.0, scope="machine", proc_stat=stat)
    before = meter.sample()[0]
    write_stat(stat, user=150, steal=900)  # 0.5 s of our work, 9 s stolen
    after = meter.sample()[0]
    assert after.domain == "cpu-estimate" and after.provenance == "estimated"
    assert after.joules - before.joules == pytest.approx(50 * meter._tick_s * 10.0)
    assert "all processes (/proc/stat), steal and guest time excluded" in meter.description


def test_machine_wide_estimate_leaves_out_guest_time_counted_inside_user(
    tmp_path: Path,
) -> None:
    """The kernel counts a guest's vCPU time in ``guest`` and again inside ``user``
    (``guest_nice`` inside ``nice``): it is subtracted, not counted twice or at all."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 5 1000 7 1 2 0 40 10\n")
    meter = CpuEstimateMeter(watts_per_logical_cpu=1.0, scope="machine", proc_stat=stat)
    assert meter.busy_seconds() == pytest.approx((60 + 10 + 5 + 1 + 2) * meter._tick_s)
    before = meter.busy_seconds()
    stat.write_text("cpu  400 20 5 1000 7 1 2 0 340 10\n")  # 300 ticks, all of a guest
    assert meter.busy_seconds() == pytest.approx(before)


def test_machine_wide_estimate_reads_an_old_kernels_shorter_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 5 1000 7\n")  # before irq/softirq/steal/guest existed
    meter = CpuEstimateMeter(watts_per_logical_cpu=1.0, scope="machine", proc_stat=stat)
    assert meter.busy_seconds() == pytest.approx(105 * meter._tick_s)


# -- per process ----------------------------------------------------------------------


def test_process_estimate_is_this_process_cpu_time_only(tmp_path: Path) -> None:
    """The embedded model's estimate: this process's CPU time (all its threads) x
    watts; the machine's busy time, however much it grows, does not enter."""
    stat = tmp_path / "stat"
    write_stat(stat, user=100)
    clock = FakeProcessClock()
    clock.ns = 3_000_000_000
    meter = CpuEstimateMeter(
        watts_per_logical_cpu=8.0,
        scope="process",
        why="local:smollm2-135m runs in this process",
        proc_stat=stat,
        process_cpu_ns=clock,
    )
    before = meter.sample()[0]
    write_stat(stat, user=100_000)  # a busy neighbour: 1000 s of someone else's CPU
    clock.ns += 250_000_000  # 0.25 s of ours
    after = meter.sample()[0]
    assert after.domain == "cpu-estimate-process" and after.provenance == "estimated"
    assert after.joules - before.joules == pytest.approx(0.25 * 8.0)
    assert meter.description == (
        "cpu-estimate with 8 W per logical CPU (--llm-cpu-tdp), this process's CPU "
        "time: local:smollm2-135m runs in this process"
    )
    assert meter._fd is None  # /proc/stat is not even opened
    meter.close()


def test_process_estimate_reading_through_a_meter_set() -> None:
    clock = FakeProcessClock()
    meter = CpuEstimateMeter(watts_per_logical_cpu=4.0, scope="process", process_cpu_ns=clock)
    meters = MeterSet([meter], "cpu-estimate")
    window = meters.open("gen")
    clock.ns += 500_000_000
    reading = window.close(completion_tokens=10)
    assert reading.cpu is not None and reading.cpu.domains == ["cpu-estimate-process"]
    assert reading.joules == pytest.approx(2.0) and reading.provenance == "estimated"
    assert [w["domain"] for w in reading.windows] == ["cpu-estimate-process"]


@pytest.fixture
def busy_neighbour() -> Iterator[subprocess.Popen[bytes]]:
    """One CPU-bound process beside the test, as on a shared CI runner."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        yield process
    finally:
        process.kill()
        process.wait()


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_a_busy_neighbour_moves_the_machine_estimate_not_the_process_one(
    busy_neighbour: subprocess.Popen[bytes],
) -> None:
    """Real clocks: 0.3 s of our own CPU work beside a spinning process. The
    per-process estimate is our CPU time; the machine-wide one adds the neighbour's."""
    own = CpuEstimateMeter(watts_per_logical_cpu=1.0, scope="process")
    machine = CpuEstimateMeter(watts_per_logical_cpu=1.0, scope="machine")
    try:
        own_start, machine_start = own.busy_seconds(), machine.busy_seconds()
        cpu_start, wall_start = time.process_time(), time.monotonic()
        _spin(0.3)
        cpu = time.process_time() - cpu_start
        wall = time.monotonic() - wall_start
        own_s = own.busy_seconds() - own_start
        machine_s = machine.busy_seconds() - machine_start
    finally:
        own.close()
        machine.close()
    assert own_s == pytest.approx(cpu, rel=0.05, abs=0.005)
    # The neighbour spun through the window too (on another core, or time-sliced with
    # us on a single one): the machine saw at least the wall time plus some of it.
    assert machine_s > own_s + 0.25 * min(wall, 0.3)


# -- which scope a session gets --------------------------------------------------------


def test_scope_follows_where_the_session_models_run() -> None:
    local = ("local:smollm2-135m", "local", None)
    ollama_like = ("llamacpp:qwen", "llamacpp", "http://127.0.0.1:8080/v1")
    cloud = ("openai:gpt-4o-mini", "openai", "https://api.openai.com/v1")
    remote_vllm = ("vllm:big", "vllm", "http://gpu-box.internal:8000/v1")
    assert estimate_scope([local]) == ("process", "local:smollm2-135m runs in this process")
    assert estimate_scope([local, cloud, remote_vllm])[0] == "process"
    assert estimate_scope([local, ollama_like]) == (
        "machine",
        "llamacpp:qwen is served by another process on this machine",
    )
    assert estimate_scope([("lmstudio:m", "lmstudio", "http://localhost:1234/v1")])[0] == (
        "machine"
    )
    assert estimate_scope([cloud]) == (
        "process",
        "no model is served by another process on this machine",
    )


def test_in_process_providers_are_the_tables_embedded_ones() -> None:
    assert {n for n, info in PROVIDERS.items() if info.protocol == "local"} == (
        IN_PROCESS_PROVIDERS
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://127.1.2.3/v1",
        "http://localhost:1234/v1",
        "http://[::1]:8000/v1",
        "https://api.openai.com/v1",
        "http://10.0.0.5:8000/v1",
        "http://user:pw@127.0.0.1:9/v1",
        "not a url",
    ],
)
def test_served_here_agrees_with_the_clients_loopback_rule(url: str) -> None:
    assert _served_here(url) == is_loopback(url)


def test_from_settings_picks_the_scope_and_says_why() -> None:
    def meters_for(models: str) -> MeterSet:
        settings = build_settings(
            cli={}, ini={"llm_models": models, "llm_meter": "estimate", "llm_cpu_tdp": "5"}, env={}
        )
        return MeterSet.from_settings(settings)

    embedded = meters_for("local:smollm2-135m")
    try:
        (meter,) = embedded.meters
        assert isinstance(meter, CpuEstimateMeter) and meter.domain == "cpu-estimate-process"
        assert embedded.description == (
            "using cpu-estimate with 5 W per logical CPU (--llm-cpu-tdp), this process's "
            "CPU time: local:smollm2-135m runs in this process"
        )
    finally:
        embedded.close()
    mixed = meters_for("local:smollm2-135m,llamacpp:qwen")
    try:
        (meter,) = mixed.meters
        assert isinstance(meter, CpuEstimateMeter) and meter.domain == "cpu-estimate"
        assert mixed.description.endswith(
            "all processes (/proc/stat), steal and guest time excluded: llamacpp:qwen is "
            "served by another process on this machine"
        )
    finally:
        mixed.close()


def test_select_meters_builds_the_scope_it_is_given() -> None:
    meters = select_meters(("estimate",), cpu_tdp=3.0, cpu_scope="process", cpu_scope_why="x")
    try:
        assert [m.sample()[0].domain for m in meters.meters] == ["cpu-estimate-process"]
        assert meters.names == ["cpu-estimate"]
        assert meters.description.endswith("this process's CPU time: x")
    finally:
        meters.close()


def test_the_meter_fixture_line_names_the_scope(pytester: pytest.Pytester) -> None:
    """What a user sees: the header line says whose CPU time the estimate counts."""
    pytester.makepyfile(
        """
        def test_block(meter):
            with meter.window("spin") as w:
                sum(range(200_000))
            assert w.reading.cpu.domains == ["cpu-estimate-process"]
        """
    )
    result = pytester.runpytest("--llm-meter=estimate", "--llm-cpu-tdp=2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    line = (
        "llmlab energy: using cpu-estimate with 2 W per logical CPU (--llm-cpu-tdp), "
        "this process's CPU time: local:smollm2-135m runs in this process"
    )
    result.stdout.fnmatch_lines([line])


# -- attribution -----------------------------------------------------------------------


def _record(process: str, domain: str, c0: float, c1: float) -> dict[str, Any]:
    """A record of a 10 s, 10-token window of an estimate domain in `process`."""
    window = Window(
        window_id=f"{process}:1", host="h", process=process, domain=domain, t_start_ns=0,
        t_end_ns=10_000_000_000, counter_start_j=c0, counter_end_j=c1,
        provenance="estimated", segments=(TokenSegment(0, 10_000_000_000, 10),),
    )  # fmt: skip
    cpu = {"joules": c1 - c0, "provenance": "estimated", "domains": [domain]}
    energy = {
        "joules": c1 - c0, "cpu": cpu, "other": {}, "duration_s": 10.0,
        "provenance": "estimated", "measured": False, "windows": [window.to_dict()],
        "completion_tokens": 10,
    }  # fmt: skip
    return {"test_id": process, "energy": energy}


def test_per_process_estimates_of_two_processes_never_share() -> None:
    """Two workers' windows overlap in time: each process-time estimate is that
    worker's own, so attribution leaves both whole."""
    records = [
        _record("h:1", "cpu-estimate-process", 3.0, 8.0),
        _record("h:2", "cpu-estimate-process", 40.0, 47.0),
    ]
    assert attribute_records(records) == {}
    assert [r["energy"]["joules"] for r in records] == [5.0, 7.0]


def test_machine_wide_estimates_of_two_processes_share() -> None:
    """The machine-wide counter is one counter seen by both: overlapping windows split it."""
    records = [
        _record("h:1", "cpu-estimate", 100.0, 110.0),
        _record("h:2", "cpu-estimate", 100.0, 110.0),
    ]
    assert attribute_records(records) == {"estimated": 2}
    assert [r["energy"]["joules"] for r in records] == [pytest.approx(5.0)] * 2
