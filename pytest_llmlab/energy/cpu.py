"""The CPU estimate: busy CPU time x watts per logical CPU, where nothing is measured.

Energy over a window = (busy CPU-seconds of the whole machine in the window) x (watts
per logical CPU). That is "utilization x TDP": utilization = busy / (CPUs x duration)
and TDP = watts-per-CPU x CPUs, so the CPU count cancels. It ignores idle power (a
machine at 0 % busy is estimated at 0 W) and frequency scaling: it is an estimate and
every reading built from it says so (provenance ``estimated``).

Busy time comes from ``/proc/stat`` (all processes: the embedded llama.cpp threads and
a local server in another process alike), in clock ticks (usually 10 ms). Where there
is no ``/proc/stat`` (macOS), this process's own CPU time is used and the description
says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_llmlab.energy.base import CounterSample

__all__ = ["TDP_TABLE", "CpuEstimateMeter", "cpu_model_name", "watts_per_cpu"]

#: Watts per logical CPU by CPU model name (first matching substring wins), for when
#: ``--llm-cpu-tdp`` is not given. Rough TDP / thread counts of typical parts; the
#: last entry is the fallback.
TDP_TABLE: tuple[tuple[str, float], ...] = (
    ("EPYC", 4.0),  # 200-400 W over 64-192 threads
    ("Xeon", 6.0),  # 150-350 W over 32-120 threads
    ("Threadripper", 8.0),
    ("Ryzen", 8.0),  # 65-170 W desktop over 12-32 threads
    ("Core(TM) Ultra", 6.0),
    ("Core(TM) i", 8.0),  # 65-125 W desktop over 8-32 threads
    ("Apple", 3.0),
    ("Neoverse", 3.0),
    ("", 10.0),  # unknown CPU
)


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The ``model name`` line of /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in {"model name", "Model", "cpu model"} and value.strip():
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def watts_per_cpu(model: str) -> tuple[float, str]:
    """Watts per logical CPU for a CPU model name, and the table key that matched."""
    for key, watts in TDP_TABLE:
        if key in model:
            return watts, key or "unknown CPU"
    raise AssertionError("TDP_TABLE ends with a catch-all entry")


class CpuEstimateMeter:
    """Cumulative estimated joules of CPU work on this machine (domain ``cpu-estimate``)."""

    name = "cpu-estimate"

    def __init__(
        self,
        *,
        watts_per_logical_cpu: float | None = None,
        proc_stat: Path = Path("/proc/stat"),
        cpuinfo: Path = Path("/proc/cpuinfo"),
    ) -> None:
        self.model = cpu_model_name(cpuinfo)
        if watts_per_logical_cpu is None:
            self.watts, matched = watts_per_cpu(self.model)
            self.watts_source = f"table entry {matched!r} for {self.model!r}"
        else:
            self.watts = watts_per_logical_cpu
            self.watts_source = "--llm-cpu-tdp"
        self._proc_stat = proc_stat
        # Kept open and re-read at offset 0: procfs regenerates the text on each read,
        # and one pread is a fraction of open+read+close at every window edge.
        try:
            self._fd: int | None = os.open(proc_stat, os.O_RDONLY)
        except OSError:
            self._fd = None
        self._tick_s = 1.0 / float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 0.01
        self.system_wide = self._busy_ticks() is not None
        self.resolution_s = self._tick_s if self.system_wide else 0.001

    @property
    def description(self) -> str:
        scope = "all processes (/proc/stat)" if self.system_wide else "this process only"
        return f"cpu-estimate with {self.watts:g} W per logical CPU ({self.watts_source}), {scope}"

    def _busy_ticks(self) -> int | None:
        """Busy clock ticks of all CPUs since boot: everything but idle and iowait."""
        if self._fd is None:
            return None
        try:
            fields = os.pread(self._fd, 512, 0).split(b"\n", 1)[0].split()
        except OSError:
            return None
        if not fields or fields[0] != b"cpu":
            return None
        values = [int(v) for v in fields[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        # already inside user/nice, so it is not added again.
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        busy = sum(values[:8]) - idle
        return busy

    def busy_seconds(self) -> float:
        ticks = self._busy_ticks() if self.system_wide else None
        if ticks is not None:
            return ticks * self._tick_s
        return time.process_time()

    @property
    def domain(self) -> str:
        """``cpu-estimate`` (machine-wide, comparable between processes) or
        ``cpu-estimate-process`` (this process's CPU time only: never shared)."""
        return "cpu-estimate" if self.system_wide else "cpu-estimate-process"

    def sample(self) -> list[CounterSample]:
        return [
            CounterSample(
                domain=self.domain,
                joules=self.busy_seconds() * self.watts,
                t_ns=time.monotonic_ns(),
                provenance="estimated",
            )
        ]

    def close(self) -> None:
        """Close /proc/stat (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
