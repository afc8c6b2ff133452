"""Measure what the energy meters cost: per metered window, and the sampler thread.

    python bench/meter_overhead.py [--windows 20000] [--sampler-seconds 10] [--json]

Two targets, two measurements, in one run:

1. **Window edges, target "under 100 microseconds per window".** Every generation is
   metered as ``window = meters.open(label)`` before the request and
   ``window.close(completion_tokens=...)`` after it, so what a meter adds to a test is
   exactly the cost of that pair: two ``sample()`` calls of every meter plus building
   the reading (Window records, deltas, derived Wh/carbon/cost). We time ``N`` windows
   (default 20,000, after a warm-up of ``N // 10``) of a one-meter :class:`MeterSet`,
   repeat 5 times, interleaving the meters so drift hits all of them alike, and report
   the median microseconds per window for:

   * ``rapl``: :class:`RaplMeter` on a fake powercap tree in a temp dir shaped like a
     two-socket server (``package-0``, ``dram-0``, ``package-1``, ``dram-1``: 4 counter
     files, each one ``pread`` per sample) and the meter's default poll interval;
   * ``cpu-estimate``: :class:`CpuEstimateMeter` on the real ``/proc/stat``;
   * ``baseline``: a meter returning one constant :class:`CounterSample`, measured in
     the same run: the cost of the window bookkeeping alone, which every meter pays.

   Each meter's raw ``sample()`` cost is timed the same way. The verdict compares each
   real meter's *whole* window cost (bookkeeping included) with 100 us, the
   conservative reading of the target. Caveat: the fake tree's files live on an
   ordinary file system, so a ``pread`` there does not run the kernel's RAPL MSR read
   that a real ``/sys/class/powercap`` file does (typically a few microseconds more
   per counter).

2. **The sampler thread, target "under 1% of one core".** :class:`NvmlMeter` owns a
   timeline :class:`Sampler` thread ticking at 20 Hz. We build the meter exactly as the
   plugin does (it starts and owns its sampler) on an injected fake ``pynvml`` with two
   GPUs: one with the total-energy counter (the sampler reads power, utilization,
   memory and temperature for its statistics) and one power-only GPU (the sampler
   also integrates its power into the running joule count). The fake answers from
   memory, so what is measured is our Python per tick, not the driver. While the main
   thread sleeps ``S`` seconds (default 10) we read the sampler thread's own CPU clock
   (``time.pthread_getcpuclockid`` of that thread: the kernel's per-thread CPU time,
   the same figure as ``getrusage(RUSAGE_THREAD)`` taken inside the thread, but read
   from outside so the production thread runs unmodified). As a cross-check, the
   process's CPU time (``time.process_time``) over the same sleep, minus that of an
   equal sleep with no sampler running, is reported too. CPU seconds / ``S`` is the
   share of one core; the ticks recorded in the sampler's history over the span
   should be about ``20 * S``.

Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmlab.energy.base import CounterSample, Meter
from pytest_llmlab.energy.cpu import CpuEstimateMeter
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.energy.nvml import NvmlMeter
from pytest_llmlab.energy.rapl import RaplMeter

WINDOW_TARGET_US = 100.0
SAMPLER_TARGET_PCT = 1.0
SAMPLER_HZ = 20.0
REPEATS = 5
COMPLETION_TOKENS = 10
#: Intel's usual ``max_energy_range_uj`` (about 262 kJ): the default poll interval
#: then clamps to its 5 s ceiling, as on a real server.
RAPL_RANGE_UJ = 262_143_328_850


# -- window cost ------------------------------------------------------------------


class ConstantMeter:
    """A meter that reads nothing: one constant sample, for the bookkeeping baseline."""

    name = "baseline"

    def __init__(self) -> None:
        self._samples = [CounterSample(domain="package-0", joules=1.0, t_ns=time.monotonic_ns())]

    def sample(self) -> list[CounterSample]:
        return list(self._samples)

    def close(self) -> None:
        """Nothing to release."""


def _zone(parent: Path, entry: str, name: str, energy_uj: int) -> Path:
    """One powercap zone dir (``parent/entry``) with name, energy_uj and range."""
    directory = parent / entry
    directory.mkdir()
    (directory / "name").write_text(f"{name}\n")
    (directory / "energy_uj").write_text(f"{energy_uj}\n")
    (directory / "max_energy_range_uj").write_text(f"{RAPL_RANGE_UJ}\n")
    return directory


def build_two_socket_tree(root: Path) -> None:
    """A two-socket powercap tree: package-N with a dram subzone each, plus the psys
    zone and control-type dir a real tree has (skipped by the meter's discovery)."""
    for socket in (0, 1):
        package = _zone(root, f"intel-rapl:{socket}", f"package-{socket}", 123_456_789_012)
        _zone(package, f"intel-rapl:{socket}:0", "dram", 9_876_543_210)
    _zone(root, "intel-rapl:2", "psys", 555_555_555)
    (root / "intel-rapl").mkdir()


@dataclass
class WindowCase:
    """One meter under test and its timings (microseconds, one entry per repeat)."""

    label: str
    meter: Meter
    meters: MeterSet
    window_us: list[float] = field(default_factory=list)
    sample_us: list[float] = field(default_factory=list)


def time_windows(meters: MeterSet, n: int) -> float:
    """Microseconds per ``open()`` + ``close(completion_tokens=10)``, over ``n``."""
    open_window = meters.open
    start = time.perf_counter_ns()
    for _ in range(n):
        open_window("bench").close(completion_tokens=COMPLETION_TOKENS)
    return (time.perf_counter_ns() - start) / n / 1000.0


def time_samples(meter: Meter, n: int) -> float:
    """Microseconds per raw ``meter.sample()``, over ``n``."""
    sample = meter.sample
    start = time.perf_counter_ns()
    for _ in range(n):
        sample()
    return (time.perf_counter_ns() - start) / n / 1000.0


def measure_windows(n: int, repeats: int = REPEATS) -> dict[str, Any]:
    """Section 1: window and sample cost of each meter, median of ``repeats`` runs."""
    with tempfile.TemporaryDirectory(prefix="llmlab-powercap-") as tmp:
        root = Path(tmp)
        build_two_socket_tree(root)
        constant, rapl, cpu = ConstantMeter(), RaplMeter(root), CpuEstimateMeter()
        cases = [
            WindowCase("baseline", constant, MeterSet([constant], "baseline")),
            WindowCase("rapl", rapl, MeterSet([rapl], "rapl (fake tree)")),
            WindowCase("cpu-estimate", cpu, MeterSet([cpu], "cpu-estimate")),
        ]
        try:
            warmup = max(100, n // 10)
            for case in cases:
                time_windows(case.meters, warmup)
                time_samples(case.meter, warmup)
            for _ in range(repeats):
                for case in cases:  # interleaved: drift hits every meter alike
                    case.window_us.append(time_windows(case.meters, n))
                    case.sample_us.append(time_samples(case.meter, n))
            domains = {c.label: [s.domain for s in c.meter.sample()] for c in cases}
            rapl_poll_s = rapl.poll_interval_s
        finally:
            for case in cases:
                case.meters.close()
    base = statistics.median(cases[0].window_us)
    rows: list[dict[str, Any]] = []
    for case in cases:
        window = statistics.median(case.window_us)
        sample = statistics.median(case.sample_us)
        rows.append(
            {
                "meter": case.label,
                "domains": domains[case.label],
                "window_us": window,
                "window_us_min_max": [min(case.window_us), max(case.window_us)],
                "sample_us": sample,
                "ratio_to_baseline": window / base,
                # window - baseline: what this meter adds over the 1-domain bookkeeping
                "over_baseline_us": window - base,
                # the two edge reads, and everything else (reading construction grows
                # with the number of domains)
                "reads_us": 2 * sample,
                "rest_us": window - 2 * sample,
            }
        )
    measured = [r for r in rows if r["meter"] != "baseline"]
    worst = max(measured, key=lambda r: float(r["window_us"]))
    return {
        "windows": n,
        "repeats": repeats,
        "warmup": warmup,
        "rapl_poll_interval_s": rapl_poll_s,
        "meters": rows,
        "target_us": WINDOW_TARGET_US,
        "worst_meter": worst["meter"],
        "worst_window_us": worst["window_us"],
        "target_met": all(float(r["window_us"]) < WINDOW_TARGET_US for r in measured),
    }


# -- sampler CPU share ------------------------------------------------------------


class FakeNvmlError(Exception):
    """Stands in for ``pynvml.NVMLError``."""


class FakeNotSupported(FakeNvmlError):
    """``NVMLError_NotSupported``."""


class FakeLibraryNotFound(FakeNvmlError):
    """``NVMLError_LibraryNotFound``."""


class FakeDriverNotLoaded(FakeNvmlError):
    """``NVMLError_DriverNotLoaded``."""


@dataclass
class FakeValue:
    """The ``c_nvmlValue_t`` union member the meter reads for an unsigned int."""

    uiVal: int


@dataclass
class FakeFieldValue:
    """``c_nvmlFieldValue_t``: per-field status, value type and value."""

    nvmlReturn: int
    valueType: int
    value: object  # a FakeValue; typed as pynvml's union is, for the NvmlApi protocol


@dataclass
class FakeUtilization:
    gpu: int


@dataclass
class FakeMemory:
    used: int


@dataclass
class FakeGpu:
    """One fake device; ``energy_counter=False`` makes it a power-only GPU."""

    uuid: str
    energy_counter: bool
    energy_mj: int = 0
    reads: int = 0

    def power_mw(self) -> int:
        """A power reading that moves (150-199 W), so the integral does real work."""
        self.reads += 1
        return 150_000 + (self.reads * 7919) % 50_000


class FakeNvml:
    """The subset of pynvml :class:`NvmlMeter` calls, answering from memory."""

    NVML_SUCCESS = 0
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_POWER_SCOPE_MODULE = 1  # pynvml's value; the fake answers every scope alike

    def __init__(self, gpus: Sequence[FakeGpu]) -> None:
        self.gpus = list(gpus)
        self.NVMLError: type[Exception] = FakeNvmlError
        self.NVMLError_LibraryNotFound: type[Exception] = FakeLibraryNotFound
        self.NVMLError_DriverNotLoaded: type[Exception] = FakeDriverNotLoaded
        self.NVML_TEMPERATURE_GPU: int = 0
        self.NVML_FI_DEV_POWER_INSTANT: int = 186

    @staticmethod
    def _gpu(handle: object) -> FakeGpu:
        assert isinstance(handle, FakeGpu), f"not a handle: {handle!r}"
        return handle

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> object:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: object, /) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: object, /) -> str:
        return "Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object, /) -> int:
        gpu = self._gpu(handle)
        if not gpu.energy_counter:
            raise FakeNotSupported("Not Supported")
        gpu.energy_mj += 10_000
        return gpu.energy_mj

    def nvmlDeviceGetFieldValues(
        self, handle: object, field_ids: list[int | tuple[int, int]], /
    ) -> list[FakeFieldValue]:
        gpu = self._gpu(handle)
        return [
            FakeFieldValue(
                self.NVML_SUCCESS, self.NVML_VALUE_TYPE_UNSIGNED_INT, FakeValue(gpu.power_mw())
            )
            for _ in field_ids
        ]

    def nvmlDeviceGetPowerUsage(self, handle: object, /) -> int:
        return self._gpu(handle).power_mw()

    def nvmlDeviceGetUtilizationRates(self, handle: object, /) -> FakeUtilization:
        return FakeUtilization(gpu=self._gpu(handle).reads % 101)

    def nvmlDeviceGetMemoryInfo(self, handle: object, /) -> FakeMemory:
        return FakeMemory(used=(40 + self._gpu(handle).reads % 8) * 2**30)

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int, /) -> int:
        return 60 + self._gpu(handle).reads % 20

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object, /) -> int:
        return 700_000  # mW


def _thread_cpu_clock(name: str) -> Callable[[], float]:
    """A reader of the CPU seconds used so far by the live thread called ``name``."""
    thread = next((t for t in threading.enumerate() if t.name == name), None)
    if thread is None or thread.ident is None:
        raise RuntimeError(f"no running thread named {name!r}")
    clock_id = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock_id)


def _process_cpu_over_sleep(seconds: float) -> float:
    """Process CPU seconds used while the main thread sleeps ``seconds``."""
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


def measure_sampler(seconds: float) -> dict[str, Any]:
    """Section 2: the 20 Hz sampler thread's CPU share with two fake GPUs."""
    idle_cpu_s = _process_cpu_over_sleep(seconds)  # no sampler: the floor to subtract
    fake = FakeNvml(
        [
            FakeGpu("GPU-11111111-aaaa-4bbb-8ccc-000000000000", energy_counter=True),
            FakeGpu("GPU-22222222-dddd-4eee-8fff-000000000000", energy_counter=False),
        ]
    )
    meter = NvmlMeter(fake, sampler_hz=SAMPLER_HZ, visible_devices=None)
    try:
        paths = {dev.domain: dev.energy for dev in meter.devices}
        thread_cpu = _thread_cpu_clock(meter.sampler.name)
        time.sleep(0.5)  # let the thread settle into its rhythm
        rows_before = {d: len(meter.sampler.samples(d)) for d in paths}
        process_start = time.process_time()
        thread_start = thread_cpu()
        wall_start = time.perf_counter()
        time.sleep(seconds)
        thread_cpu_s = thread_cpu() - thread_start
        wall_s = time.perf_counter() - wall_start
        process_cpu_s = time.process_time() - process_start
        ticks = {d: len(meter.sampler.samples(d)) - rows_before[d] for d in paths}
        energy = [sample.joules for sample in meter.sample()]
    finally:
        meter.close()
    share_pct = thread_cpu_s / wall_s * 100.0
    cross_pct = (process_cpu_s - idle_cpu_s) / seconds * 100.0
    return {
        "hz": SAMPLER_HZ,
        "seconds": seconds,
        "wall_s": wall_s,
        "gpus": paths,
        "joules_at_end": energy,
        "ticks": ticks,
        "expected_ticks": round(SAMPLER_HZ * wall_s),
        "thread_cpu_s": thread_cpu_s,
        "share_pct": share_pct,
        "per_tick_us": thread_cpu_s / max(1, min(ticks.values())) * 1e6,
        "process_cpu_s": process_cpu_s,
        "idle_process_cpu_s": idle_cpu_s,
        "process_share_pct": cross_pct,
        "target_pct": SAMPLER_TARGET_PCT,
        "target_met": share_pct < SAMPLER_TARGET_PCT,
    }


# -- report -----------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_report(windows: dict[str, Any], sampler: dict[str, Any]) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print(
        f"1. window open+close(completion_tokens={COMPLETION_TOKENS}), one meter per "
        f"MeterSet: median of {windows['repeats']} x {windows['windows']} windows "
        f"(warm-up {windows['warmup']})"
    )
    print(
        f"   {'meter':<14}{'domains':>8}{'window us':>11}{'x baseline':>12}"
        f"{'- baseline':>12}{'sample() us':>13}{'2 reads':>9}{'rest':>9}"
    )
    for row in windows["meters"]:
        print(
            f"   {row['meter']:<14}{len(row['domains']):>8}{row['window_us']:>11.2f}"
            f"{row['ratio_to_baseline']:>12.2f}{row['over_baseline_us']:>12.2f}"
            f"{row['sample_us']:>13.2f}{row['reads_us']:>9.2f}{row['rest_us']:>9.2f}"
        )
    print(
        "   (rapl: fake two-socket tree, package+dram per socket, poll interval "
        f"{windows['rapl_poll_interval_s']:g} s; cpu-estimate: real /proc/stat; "
        "2 reads = 2 x sample(), rest = window - 2 reads: building the reading)"
    )
    print(
        f"   target: under {windows['target_us']:g} us per window: "
        f"{_verdict(windows['target_met'])} (slowest: {windows['worst_meter']} "
        f"{windows['worst_window_us']:.2f} us)"
    )
    print()
    gpus = ", ".join(f"{d} {how} path" for d, how in sampler["gpus"].items())
    print(f"2. sampler thread at {sampler['hz']:g} Hz over {sampler['wall_s']:.2f} s ({gpus})")
    ticks = ", ".join(f"{d} {n}" for d, n in sampler["ticks"].items())
    print(f"   ticks recorded: {ticks} (expected ~{sampler['expected_ticks']})")
    print(
        f"   sampler thread CPU: {sampler['thread_cpu_s']:.4f} s = "
        f"{sampler['share_pct']:.3f}% of one core ({sampler['per_tick_us']:.0f} us per tick)"
    )
    print(
        f"   cross-check, process CPU over the sleep: {sampler['process_cpu_s']:.4f} s "
        f"- {sampler['idle_process_cpu_s']:.4f} s idle = {sampler['process_share_pct']:.3f}%"
    )
    print(
        f"   target: under {sampler['target_pct']:g}% of one core: "
        f"{_verdict(sampler['target_met'])} ({sampler['share_pct']:.3f}%)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=20_000, help="windows per repeat")
    parser.add_argument(
        "--sampler-seconds", type=float, default=10.0, help="seconds to watch the sampler"
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error("--windows must be at least 1")
    if not args.sampler_seconds > 0:
        parser.error("--sampler-seconds must be positive")
    windows = measure_windows(args.windows)
    sampler = measure_sampler(args.sampler_seconds)
    if args.json:
        result = {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "window": windows,
            "sampler": sampler,
            "target_met": bool(windows["target_met"] and sampler["target_met"]),
        }
        print(json.dumps(result, indent=2))
    else:
        print_report(windows, sampler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
