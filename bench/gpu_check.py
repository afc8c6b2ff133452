"""Check the NVML meter against independent measurements on a real NVIDIA machine.

    python bench/gpu_check.py [--model local:smollm2-135m] [--windows 6] [--window-s 5]
                              [--tokens 128] [--tolerance 0.10] [--no-tests]

One command, a few minutes. On a machine with an NVIDIA driver and ``nvidia-ml-py``:

1. Opens the plugin's NVML meter (`NvmlMeter`, the total-energy counter) and, beside
   it, an independent integrator: a thread of its own calling
   ``nvmlDeviceGetPowerUsage`` on every visible GPU at 100 Hz and integrating the
   power (trapezoids) over each window. With ``zeus`` importable, Zeus's
   ``ZeusMonitor`` measures the same windows too.
2. Meters one idle window, then ``--windows`` windows of about ``--window-s`` seconds
   each of generations of ``--model`` back to back (the embedded model, which may run
   on the CPU, or a local GPU server's spec such as ``vllm:MODEL`` with
   ``LLMLAB_VLLM_BASE_URL``), then, where ``torch`` with CUDA is importable, windows
   of matrix products on every GPU (high power). Prints, per window, the joules of each and
   the ratios; a ratio of the meter to the 100 Hz integral outside
   ``1 +- --tolerance`` is flagged.
3. Runs the real-hardware tests (``pytest tests -k "real_nvml_hardware or
   real_rapl_hardware"``).

Exit status: 0 when every ratio is within tolerance and the tests pass, 1 otherwise,
2 when there is no NVIDIA GPU here (with the reason). Caveat: on Ampere and newer,
``nvmlDeviceGetPowerUsage`` is a one-second moving average, so windows of a few
seconds may differ by a few percent at their edges; the counter is the reference.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pytest_llmlab.energy.base import Meter, MeterUnavailable
from pytest_llmlab.energy.nvml import NvmlApi

ROOT = Path(__file__).resolve().parent.parent
HZ = 100.0
REAL_HARDWARE_TESTS = "real_nvml_hardware or real_rapl_hardware"


@dataclass
class PowerTrace:
    """One GPU's power samples: (monotonic ns, W), in time order."""

    t_ns: list[int] = field(default_factory=list)
    watts: list[float] = field(default_factory=list)

    def add(self, t_ns: int, watts: float) -> None:
        self.t_ns.append(t_ns)
        self.watts.append(watts)

    def _at(self, t_ns: int) -> float:
        """Power at ``t_ns``, linear between samples, held beyond the ends."""
        import bisect

        i = bisect.bisect_left(self.t_ns, t_ns)
        if i == 0:
            return self.watts[0]
        if i >= len(self.t_ns):
            return self.watts[-1]
        t0, t1 = self.t_ns[i - 1], self.t_ns[i]
        w0, w1 = self.watts[i - 1], self.watts[i]
        return w0 + (w1 - w0) * (t_ns - t0) / (t1 - t0) if t1 > t0 else w1

    def joules(self, t0_ns: int, t1_ns: int) -> float:
        """Trapezoidal integral of power over [t0_ns, t1_ns] in J."""
        if not self.t_ns:
            raise ValueError("no power samples")
        if t1_ns <= t0_ns:
            return 0.0
        inside = [(t, w) for t, w in zip(self.t_ns, self.watts, strict=True) if t0_ns < t < t1_ns]
        points = [(t0_ns, self._at(t0_ns)), *inside, (t1_ns, self._at(t1_ns))]
        return sum((b[0] - a[0]) / 1e9 * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(points))


class PowerIntegrator:
    """A thread reading ``nvmlDeviceGetPowerUsage`` of each GPU at ``hz``: independent
    of the plugin's sampler (its own thread, its own NVML calls)."""

    def __init__(
        self,
        api: NvmlApi,
        uuids: Sequence[str],
        hz: float = HZ,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._api = api
        self._clock = clock
        self._period = 1.0 / hz
        count = api.nvmlDeviceGetCount()
        by_uuid: dict[str, object] = {}
        for index in range(count):
            handle = api.nvmlDeviceGetHandleByIndex(index)
            uuid = api.nvmlDeviceGetUUID(handle)
            by_uuid[uuid.decode() if isinstance(uuid, bytes) else uuid] = handle
        self._handles = {uuid: by_uuid[uuid] for uuid in uuids}
        self.traces = {uuid: PowerTrace() for uuid in uuids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-check-power", daemon=True)

    def read_once(self) -> None:
        for uuid, handle in self._handles.items():
            watts = self._api.nvmlDeviceGetPowerUsage(handle) / 1000.0
            self.traces[uuid].add(self._clock(), watts)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.read_once()
            next_at += self._period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self.read_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class WindowResult:
    label: str
    seconds: float
    meter_j: float
    integrated_j: float
    zeus_j: float | None

    @property
    def ratio(self) -> float:
        return self.meter_j / self.integrated_j if self.integrated_j > 0 else float("nan")


def _zeus_monitor(indices: list[int]) -> Any | None:
    """Zeus's ZeusMonitor over the same GPUs, or None without ``zeus``."""
    try:
        module = importlib.import_module("zeus.monitor")
    except ImportError:
        return None
    return module.ZeusMonitor(gpu_indices=indices)


def _matmul_load() -> Callable[[float], None] | None:
    """``load(seconds)``: matrix products on every visible GPU, where torch has CUDA."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None

    def load(seconds: float) -> None:
        devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
        mats = [torch.randn(4096, 4096, device=d, dtype=torch.float16) for d in devices]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for m in mats:
                m @ m  # the work is the point
            torch.cuda.synchronize()

    return load


def open_or_reason(open_meter: Callable[[], Meter]) -> tuple[Meter | None, str | None]:
    """The NVML meter, or why this machine has none."""
    try:
        return open_meter(), None
    except MeterUnavailable as exc:
        return None, str(exc)


def _open_nvml() -> Meter:
    from pytest_llmlab.energy.nvml import NvmlMeter

    return NvmlMeter()


def measure(
    meter: Any,
    integrator: PowerIntegrator,
    zeus: Any | None,
    label: str,
    work: Callable[[], None],
    window_s: float,
) -> WindowResult:
    """One window: ``work()`` once, then again until ``window_s`` passed, under every
    meter; the meter's joules and the 100 Hz integral over the same edges."""
    from pytest_llmlab.energy.meters import MeterSet

    meters = MeterSet([meter], "nvml")
    if zeus is not None:
        zeus.begin_window(label)
    window = meters.open(label)
    started = time.monotonic()
    work()
    while time.monotonic() - started < window_s:
        work()
    reading = window.close()
    zeus_j = None
    if zeus is not None:  # GPUs only: Zeus also counts CPU energy where it finds RAPL
        zeus_j = float(sum(zeus.end_window(label).gpu_energy.values()))
    meter_j = integrated = 0.0
    for w in reading.windows:
        meter_j += w["counter_end_j"] - w["counter_start_j"]
        uuid = w["domain"].removeprefix("gpu-")
        integrated += integrator.traces[uuid].joules(w["t_start_ns"], w["t_end_ns"])
    return WindowResult(label, reading.duration_s, meter_j, integrated, zeus_j)


def _generator(spec_text: str, tokens: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(generate once, close)`` for ``spec_text``, unmetered (the window meters it)."""
    from pytest_llmlab.llm import LLM
    from pytest_llmlab.models.registry import ProviderPool
    from pytest_llmlab.models.spec import parse_spec

    spec = parse_spec(spec_text)
    pool = ProviderPool(base_urls={}, timeout_s=120.0, announce=lambda m: print(m, file=sys.stderr))
    provider = pool.get(spec)
    provider.ensure_available()
    llm = LLM(model_spec=spec, temperature=0.7, provider=provider)
    seeds = iter(range(1, 1_000_000))

    def generate() -> None:
        llm.generate("Write a long story about a lighthouse.", max_tokens=tokens, seed=next(seeds))

    def close() -> None:
        llm.close()
        pool.close()

    return generate, close


def run_real_hardware_tests() -> int:
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        command = [
            sys.executable, "-m", "pytest", str(ROOT / "tests"), "-k", REAL_HARDWARE_TESTS,
            "-p", "no:cacheprovider", "-rs", f"--llm-report-dir={folder}",
        ]  # fmt: skip
        print("$ " + " ".join(command), flush=True)
        return subprocess.run(command, cwd=ROOT, check=False).returncode


def main(argv: list[str] | None = None, open_meter: Callable[[], Meter] = _open_nvml) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="local:smollm2-135m", help="model generating load")
    parser.add_argument("--windows", type=int, default=6, help="generation windows (default 6)")
    parser.add_argument("--window-s", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens per generation")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed |ratio - 1|")
    parser.add_argument("--no-tests", action="store_true", help="skip the real-hardware tests")
    args = parser.parse_args(argv)

    meter, reason = open_or_reason(open_meter)
    if meter is None:
        print(
            f"gpu_check: no NVIDIA GPU to check on this machine: {reason}. "
            "Run it where `nvidia-smi` lists a GPU and nvidia-ml-py is installed.",
            file=sys.stderr,
        )
        return 2
    devices = list(getattr(meter, "devices", []))
    api = cast(NvmlApi, importlib.import_module("pynvml"))
    api.nvmlInit()
    integrator = PowerIntegrator(api, [d.uuid for d in devices])
    zeus = _zeus_monitor([d.position for d in devices])
    load = _matmul_load()
    results: list[WindowResult] = []
    generate, close = _generator(args.model, args.tokens)
    try:
        integrator.start()
        print(f"gpu_check: {getattr(meter, 'description', 'nvml')}", flush=True)
        print(
            f"zeus: {'ZeusMonitor' if zeus is not None else 'not installed'}; "
            f"matmul load: {'torch CUDA' if load is not None else 'no torch with CUDA'}"
        )
        generate()  # warm-up: the model loads outside the windows
        results.append(
            measure(meter, integrator, zeus, "idle", lambda: time.sleep(0.05), args.window_s)
        )
        for i in range(args.windows):
            results.append(
                measure(meter, integrator, zeus, f"generate-{i + 1}", generate, args.window_s)
            )
        if load is not None:

            def burst(run: Callable[[float], None] = load) -> None:
                run(0.5)

            for i in range(max(2, args.windows // 2)):
                label = f"matmul-{i + 1}"
                results.append(measure(meter, integrator, zeus, label, burst, args.window_s))
    finally:
        integrator.stop()
        close()
        meter.close()
        api.nvmlShutdown()

    print(
        f"{'window':<12} {'s':>6} {'meter J':>10} {'100 Hz J':>10} {'ratio':>7} {'zeus J':>10} {'zeus/meter':>10}"
    )
    bad = 0
    for r in results:
        zeus_cells = (
            f"{r.zeus_j:>10.2f} {r.zeus_j / r.meter_j if r.meter_j else float('nan'):>10.3f}"
            if r.zeus_j is not None
            else f"{'-':>10} {'-':>10}"
        )
        off = not abs(r.ratio - 1) <= args.tolerance
        bad += off
        print(
            f"{r.label:<12} {r.seconds:>6.2f} {r.meter_j:>10.2f} {r.integrated_j:>10.2f} "
            f"{r.ratio:>7.3f} {zeus_cells}{'  <- outside tolerance' if off else ''}"
        )
    print(f"{bad} of {len(results)} windows outside 1 +- {args.tolerance:g}")
    status = 1 if bad else 0
    if not args.no_tests:
        status = max(status, 1 if run_real_hardware_tests() else 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
