"""The CPU estimate: CPU time x watts per logical CPU, where nothing is measured.

Energy over a window = (busy CPU-seconds in the window) x (watts per logical CPU). That
is "utilization x TDP": utilization = busy / (CPUs x duration) and TDP = watts-per-CPU
x CPUs, so the CPU count cancels. It ignores idle power (a machine at 0 % busy is
estimated at 0 W) and frequency scaling: it is an estimate and every reading built from
it says so (provenance ``estimated``).

Whose CPU time counts is the estimate's *scope*:

- ``process`` (domain ``cpu-estimate-process``): this process's CPU time, every
  thread of it (``time.process_time_ns``: the embedded llama.cpp's threads and the
  client's). Exact for our own work and blind to every other process, so a busy
  neighbour on a shared CI runner does not move it. It cannot be compared with another
  process's counter: session-end attribution never shares it across processes.
- ``machine`` (domain ``cpu-estimate``): the busy time of all processes from
  ``/proc/stat`` in clock ticks (usually 10 ms), for a local server in another process
  (LM Studio, Ollama, llama-server), whose work this process cannot see otherwise. Steal
  time (another guest ran on our CPU) and guest time (we ran a guest's vCPU; the kernel
  counts it inside user and nice as well) are not our work and are left out. Where
  there is no ``/proc/stat`` (macOS), this process's CPU time is used and the
  description says so.

`estimate_scope` picks the scope from the session's models (`MeterSet.from_settings`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pytest_llmlab.energy.base import CounterSample

__all__ = [
    "IN_PROCESS_PROVIDERS",
    "TDP_TABLE",
    "CpuEstimateMeter",
    "CpuScope",
    "cpu_model_name",
    "estimate_scope",
    "watts_per_cpu",
]

#: Whose CPU time the estimate counts: this process's, or every process's.
CpuScope = Literal["process", "machine"]

#: Providers whose model runs inside the test process (the embedded llama.cpp). A test
#: checks this against the provider table (``protocol == "local"``): energy cannot
#: import the models package, which imports it.
IN_PROCESS_PROVIDERS: frozenset[str] = frozenset({"local"})

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


def _served_here(base_url: str | None) -> bool:
    """A loopback URL: the server runs on this machine (as `models.openai.is_loopback`,
    which a test keeps this in step with)."""
    host = urlsplit(base_url or "").hostname or ""
    return host in {"localhost", "::1"} or host.startswith("127.")


def estimate_scope(models: Iterable[tuple[str, str, str | None]]) -> tuple[CpuScope, str]:
    """The scope of the session's CPU estimate, and why, from its models as ``(spec,
    provider, base URL or None)``.

    ``machine`` as soon as one model is served by another process on this machine (a
    loopback URL): only ``/proc/stat`` sees that server's work, and it sees the embedded
    model's too. Otherwise ``process``: the embedded model runs in this process, and a
    remote model's energy is not metered here at all.
    """
    embedded: list[str] = []
    for spec, provider, base_url in models:
        if provider in IN_PROCESS_PROVIDERS:
            embedded.append(spec)
        elif _served_here(base_url):
            return "machine", f"{spec} is served by another process on this machine"
    if embedded:
        return "process", f"{embedded[0]} runs in this process"
    return "process", "no model is served by another process on this machine"


class CpuEstimateMeter:
    """Cumulative estimated joules of CPU work: this process's (domain
    ``cpu-estimate-process``) or the whole machine's (``cpu-estimate``)."""

    name = "cpu-estimate"

    def __init__(
        self,
        *,
        watts_per_logical_cpu: float | None = None,
        scope: CpuScope = "machine",
        why: str = "",
        proc_stat: Path = Path("/proc/stat"),
        cpuinfo: Path = Path("/proc/cpuinfo"),
        process_cpu_ns: Callable[[], int] = time.process_time_ns,
    ) -> None:
        """``why`` says what chose the scope (shown in the description);
        ``process_cpu_ns`` is this process's CPU time in ns (injectable for tests)."""
        self.model = cpu_model_name(cpuinfo)
        if watts_per_logical_cpu is None:
            self.watts, matched = watts_per_cpu(self.model)
            self.watts_source = f"table entry {matched!r} for {self.model!r}"
        else:
            self.watts = watts_per_logical_cpu
            self.watts_source = "--llm-cpu-tdp"
        self.scope: CpuScope = scope
        self._why = why
        self._process_cpu_ns = process_cpu_ns
        self._proc_stat = proc_stat
        self._fd: int | None = None
        self._tick_s = 1.0 / float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 0.01
        if scope == "machine":
            # Kept open and re-read at offset 0: procfs regenerates the text on each
            # read, and one pread is a fraction of open+read+close at every window edge.
            try:
                self._fd = os.open(proc_stat, os.O_RDONLY)
            except OSError:
                self._fd = None
        self.system_wide = self._busy_ticks() is not None
        self.resolution_s = self._tick_s if self.system_wide else 1e-6

    @property
    def description(self) -> str:
        if self.system_wide:
            scope = "all processes (/proc/stat), steal and guest time excluded"
        elif self.scope == "machine":
            scope = "this process only: no /proc/stat here, so another process's work is not seen"
        else:
            scope = "this process's CPU time"
        if self._why:
            scope += f": {self._why}"
        return f"cpu-estimate with {self.watts:g} W per logical CPU ({self.watts_source}), {scope}"

    def _busy_ticks(self) -> int | None:
        """Busy clock ticks of all CPUs since boot: user, nice, system, irq and softirq,
        without idle, iowait, steal, and the guest time counted inside user and nice."""
        if self._fd is None:
            return None
        try:
            fields = os.pread(self._fd, 512, 0).split(b"\n", 1)[0].split()
        except OSError:
            return None
        if not fields or fields[0] != b"cpu":
            return None
        try:
            values = [int(v) for v in fields[1:]]
        except ValueError:
            return None
        values += [0] * (10 - len(values))
        user, nice, system, _idle, _iowait, irq, softirq, _steal, guest, guest_nice = values[:10]
        return max(0, user - guest) + max(0, nice - guest_nice) + system + irq + softirq

    def busy_seconds(self) -> float:
        ticks = self._busy_ticks() if self.system_wide else None
        if ticks is not None:
            return ticks * self._tick_s
        return self._process_cpu_ns() / 1e9

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
