"""The NVML GPU meter against a fake pynvml, and the timeline sampler it relies on.

The fake implements exactly the pynvml functions the meter calls, returns the real
ctypes structures and raises the real ``pynvml.NVMLError`` subclasses, so the meter's
``except`` clauses meet the exception types a driver would raise. Time is a fake clock
and the sampler is ticked by hand: nothing here depends on sleeps (except the real
hardware test, which skips without a driver).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_llmlab.energy.base import MeterUnavailable
from pytest_llmlab.energy.nvml import GPU_STAT_KEYS, NvmlApi, NvmlMeter, select_visible
from pytest_llmlab.energy.timeline import NoSamples, Sampler

S = 1_000_000_000  # nanoseconds per second

UUID_A = "GPU-11111111-aaaa-4bbb-8ccc-000000000000"
UUID_B = "GPU-22222222-dddd-4eee-8fff-000000000000"
#: GPU domains are named by UUID: one name per physical GPU in every process.
GPU_A = f"gpu-{UUID_A}"
GPU_B = f"gpu-{UUID_B}"


# -- fakes --------------------------------------------------------------------------


class FakeClock:
    """A monotonic_ns stand-in the test moves by hand."""

    def __init__(self, start_ns: int = 1_000 * S) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * S)


@dataclass
class FakeGpu:
    """One fake device; ``None`` for a reading means NVML says NotSupported."""

    uuid: str
    name: str = "Fake GPU"
    energy_mj: int | None = 0
    power_mw: int | None = 100_000
    field_power: bool = True  # NVML_FI_DEV_POWER_INSTANT supported
    #: The instant power field at NVML_POWER_SCOPE_MODULE (Grace Hopper: GPU + CPU +
    #: memory); None = that scope reports NotSupported, as on a discrete GPU.
    module_power_mw: int | None = None
    util: int | None = 0
    mem_used: int | None = 0
    temp: int | None = 40
    power_limit_mw: int | None = 700_000


class FakeNvml:
    """Exactly the subset of pynvml that NvmlMeter calls, with the real types."""

    def __init__(
        self, real: ModuleType, gpus: list[FakeGpu], init_error: Exception | None = None
    ) -> None:
        self._real = real
        self.gpus = gpus
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0
        self.NVMLError = real.NVMLError
        self.NVMLError_LibraryNotFound = real.NVMLError_LibraryNotFound
        self.NVMLError_DriverNotLoaded = real.NVMLError_DriverNotLoaded
        self.NVML_TEMPERATURE_GPU = real.NVML_TEMPERATURE_GPU
        self.NVML_FI_DEV_POWER_INSTANT = real.NVML_FI_DEV_POWER_INSTANT
        self.NVML_POWER_SCOPE_MODULE = real.NVML_POWER_SCOPE_MODULE

    def _unsupported(self) -> Exception:
        error: Exception = self._real.NVMLError_NotSupported()
        return error

    def _gpu(self, handle: object) -> FakeGpu:
        assert isinstance(handle, FakeGpu), f"not a handle: {handle!r}"
        assert self.inits > self.shutdowns, "NVML called outside nvmlInit/nvmlShutdown"
        return handle

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: object) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        gpu = self._gpu(handle)
        if gpu.energy_mj is None:
            raise self._unsupported()
        return gpu.energy_mj

    def nvmlDeviceGetFieldValues(
        self, handle: object, field_ids: list[int | tuple[int, int]]
    ) -> Any:
        """As pynvml: an entry is a field id, or (field id, scope id)."""
        gpu = self._gpu(handle)
        (entry,) = field_ids
        field_id, scope = entry if isinstance(entry, tuple) else (entry, 0)
        assert field_id == self._real.NVML_FI_DEV_POWER_INSTANT
        assert scope in (self._real.NVML_POWER_SCOPE_GPU, self._real.NVML_POWER_SCOPE_MODULE)
        values = (self._real.c_nvmlFieldValue_t * 1)()
        values[0].fieldId, values[0].scopeId = field_id, scope
        power = gpu.module_power_mw if scope == self._real.NVML_POWER_SCOPE_MODULE else gpu.power_mw
        if gpu.field_power and power is not None:
            values[0].nvmlReturn = self._real.NVML_SUCCESS
            values[0].valueType = self._real.NVML_VALUE_TYPE_UNSIGNED_INT
            values[0].value.uiVal = power
        else:  # the call succeeds; the field itself reports NotSupported
            values[0].nvmlReturn = self._real.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        gpu = self._gpu(handle)
        if gpu.power_mw is None:
            raise self._unsupported()
        return gpu.power_mw

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> Any:
        gpu = self._gpu(handle)
        if gpu.util is None:
            raise self._unsupported()
        return self._real.c_nvmlUtilization_t(gpu=gpu.util, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> Any:
        gpu = self._gpu(handle)
        if gpu.mem_used is None:
            raise self._unsupported()
        total = 80 * 2**30
        return self._real.c_nvmlMemory_t(total=total, free=total - gpu.mem_used, used=gpu.mem_used)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        gpu = self._gpu(handle)
        if gpu.power_limit_mw is None:
            raise self._unsupported()
        return gpu.power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        gpu = self._gpu(handle)
        assert sensor == self._real.NVML_TEMPERATURE_GPU
        if gpu.temp is None:
            raise self._unsupported()
        return gpu.temp


@pytest.fixture
def pynvml() -> ModuleType:
    """The real binding (nvidia-ml-py): its exception classes and ctypes structures."""
    module: ModuleType = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    return module


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_meter(
    pynvml: ModuleType, clock: FakeClock
) -> Iterator[Callable[..., tuple[NvmlMeter, FakeNvml]]]:
    """Build a meter on a fake NVML with an unstarted, hand-ticked sampler."""
    made: list[NvmlMeter] = []

    def make(gpus: list[FakeGpu], visible: str | None = None) -> tuple[NvmlMeter, FakeNvml]:
        fake = FakeNvml(pynvml, gpus)
        sampler = Sampler(20.0, clock=clock)
        meter = NvmlMeter(fake, visible_devices=visible, sampler=sampler)
        made.append(meter)
        return meter, fake

    yield make
    for meter in made:
        meter.close()


def _protocol_names() -> set[str]:
    names = {n for n in vars(NvmlApi) if n.startswith("nvml")}
    return names | set(NvmlApi.__annotations__)


# -- the fake is the real API ---------------------------------------------------------


def test_typed_subset_exists_in_real_pynvml(pynvml: ModuleType) -> None:
    missing = sorted(n for n in _protocol_names() if not hasattr(pynvml, n))
    assert missing == []


def test_fake_implements_exactly_the_typed_subset(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [])
    public = {n for n in dir(fake) if n.startswith(("nvml", "NVML"))}
    assert public == _protocol_names()


# -- counter path ------------------------------------------------------------------


def test_counter_path_energy_is_the_millijoule_delta(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    gpus = [FakeGpu(UUID_A, energy_mj=5_000_000), FakeGpu(UUID_B, energy_mj=123_456)]
    meter, _ = make_meter(gpus)
    start = meter.sample()
    gpus[0].energy_mj = 5_000_000 + 250_500  # 250.5 J
    gpus[1].energy_mj = 123_456 + 1_000  # 1 J
    clock.advance(2.0)
    end = meter.sample()

    assert [s.domain for s in start] == [GPU_A, GPU_B]
    assert meter.domain_labels == {GPU_A: "gpu 0 (Fake GPU)", GPU_B: "gpu 1 (Fake GPU)"}
    assert [s.provenance for s in end] == ["measured", "measured"]
    assert start[0].joules == pytest.approx(5_000.0)
    assert [e.joules - s.joules for s, e in zip(start, end, strict=True)] == pytest.approx(
        [250.5, 1.0]
    )
    assert end[0].t_ns - start[0].t_ns == 2 * S
    assert all(s.wrap_j == 0.0 for s in end)
    assert meter.counter_period_ns == 100_000_000


def test_counter_read_failure_is_meter_unavailable(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], pynvml: ModuleType
) -> None:
    gpus = [FakeGpu(UUID_A, energy_mj=1)]
    meter, fake = make_meter(gpus)

    def lost(handle: object) -> int:
        raise pynvml.NVMLError_GpuIsLost()

    fake.nvmlDeviceGetTotalEnergyConsumption = lost  # type: ignore[method-assign]
    with pytest.raises(
        MeterUnavailable, match=rf"NVML: reading {GPU_A} energy failed \(GPU is lost\)"
    ):
        meter.sample()


# -- power path --------------------------------------------------------------------


@pytest.mark.parametrize("field_power", [True, False], ids=["instant-field", "power-usage"])
def test_power_path_integrates_samples(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]],
    clock: FakeClock,
    field_power: bool,
) -> None:
    gpu = FakeGpu(UUID_A, energy_mj=None, power_mw=100_000, field_power=field_power)
    meter, _ = make_meter([gpu])  # construction reads 100 W at t=0
    assert meter.devices[0].energy == "power"
    assert meter.devices[0].power_source == ("field" if field_power else "usage")

    clock.advance(0.5)
    first = meter.sample()[0]  # forced read: 100 W over 0.5 s -> 50 J so far
    gpu.power_mw = 300_000
    clock.advance(1.0)
    meter.sampler.tick()  # 100 -> 300 W over 1 s: +200 J
    clock.advance(0.5)
    last = meter.sample()[0]  # 300 W over 0.5 s: +150 J

    assert first.provenance == last.provenance == "integrated"
    assert first.joules == pytest.approx(50.0)
    assert last.joules - first.joules == pytest.approx(350.0)
    assert last.t_ns - first.t_ns == int(1.5 * S)


def test_power_path_sample_is_non_decreasing_and_survives_a_failed_read(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    gpu = FakeGpu(UUID_A, energy_mj=None, power_mw=200_000)
    meter, _ = make_meter([gpu])
    clock.advance(1.0)
    a = meter.sample()[0]
    gpu.power_mw = None  # the reading fails for a while
    clock.advance(1.0)
    b = meter.sample()[0]
    gpu.power_mw = 200_000
    clock.advance(1.0)
    c = meter.sample()[0]

    assert (a.joules, b.joules) == pytest.approx((200.0, 200.0))  # held, not invented
    assert b.t_ns == a.t_ns  # the counter's time is that of its last good reading
    assert c.joules == pytest.approx(600.0)  # the gap is bridged by the trapezoid


def test_gpu_without_counter_or_power_is_unavailable(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A, energy_mj=None, power_mw=None)])
    with pytest.raises(MeterUnavailable, match="no visible GPU reports an energy counter"):
        NvmlMeter(fake, sampler=Sampler(clock=FakeClock()))
    assert fake.shutdowns == 1


# -- stats -------------------------------------------------------------------------


def test_gpu_stats_over_a_window(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    gpu = FakeGpu(UUID_A, energy_mj=0, power_mw=100_000, util=0, mem_used=2 * 2**30, temp=40)
    meter, _ = make_meter([gpu])
    t0 = clock()
    for util, mem_gib, temp, watts in [(50, 4, 50, 300), (100, 4, 60, 300), (50, 2, 50, 100)]:
        clock.advance(1.0)
        gpu.util, gpu.mem_used, gpu.temp, gpu.power_mw = util, mem_gib * 2**30, temp, watts * 1000
        meter.sampler.tick()
    stats = meter.gpu_stats(GPU_A, t0, clock())

    # Trapezoids over 3 s: util (0+50 + 50+100 + 100+50)/2/3 = 58.33...
    assert stats == pytest.approx(
        {
            "util_avg": 350 / 6,
            "util_max": 100.0,
            "mem_avg_mb": (6 + 8 + 6) * 1024 / 6,
            "mem_peak_mb": 4096.0,
            "temp_avg_c": (90 + 110 + 110) / 6,
            "temp_max_c": 60.0,
            "power_avg_w": (400 + 600 + 400) / 6,
            "power_max_w": 300.0,
        }
    )
    assert set(stats) == set(GPU_STAT_KEYS)


def test_unsupported_util_and_temperature_give_none_but_energy_works(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    gpu = FakeGpu(UUID_A, energy_mj=1_000, util=None, temp=None, mem_used=2**30)
    meter, _ = make_meter([gpu])
    t0 = clock()
    start = meter.sample()
    clock.advance(1.0)
    meter.sampler.tick()
    gpu.energy_mj = 3_000
    end = meter.sample()

    stats = meter.gpu_stats(GPU_A, t0, clock())
    assert stats["util_avg"] is None and stats["util_max"] is None
    assert stats["temp_avg_c"] is None and stats["temp_max_c"] is None
    assert stats["mem_peak_mb"] == pytest.approx(1024.0)
    assert stats["power_avg_w"] == pytest.approx(100.0)
    assert end[0].joules - start[0].joules == pytest.approx(2.0)
    assert set(meter.devices[0].unsupported) == {"util_pct", "temp_c"}


def test_a_transient_read_error_drops_only_that_metric_for_that_tick(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock, pynvml: ModuleType
) -> None:
    gpu = FakeGpu(UUID_A, util=10, power_mw=50_000)
    meter, fake = make_meter([gpu])
    healthy = fake.nvmlDeviceGetUtilizationRates

    def flaky(handle: object) -> Any:
        raise pynvml.NVMLError_Unknown()

    fake.nvmlDeviceGetUtilizationRates = flaky  # type: ignore[method-assign]
    clock.advance(1.0)
    meter.sampler.tick()
    fake.nvmlDeviceGetUtilizationRates = healthy  # type: ignore[method-assign]
    rows = meter.sampler.samples(GPU_A)
    assert rows[-1][1]["util_pct"] is None
    assert rows[-1][1]["power_w"] == pytest.approx(50.0)
    assert meter.sampler.errors(GPU_A) == 0
    assert "util_pct" in meter.devices[0].metrics  # still sampled on later ticks


def test_gpu_stats_of_a_foreign_domain_is_all_none(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]],
) -> None:
    meter, _ = make_meter([FakeGpu(UUID_A)])
    assert meter.gpu_stats("gpu-7", 0, 1) == dict.fromkeys(GPU_STAT_KEYS)


# -- device selection --------------------------------------------------------------


@pytest.mark.parametrize(
    "visible",
    ["1", UUID_B, UUID_B[:12], UUID_B.upper(), " 1 "],
    ids=["index", "uuid", "uuid-prefix", "uuid-upper", "spaces"],
)
def test_visible_devices_select_the_second_gpu(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock, visible: str
) -> None:
    gpus = [FakeGpu(UUID_A, energy_mj=10_000), FakeGpu(UUID_B, energy_mj=20_000)]
    meter, _ = make_meter(gpus, visible)
    samples = meter.sample()
    assert [(s.domain, s.joules) for s in samples] == [(GPU_B, 20.0)]
    assert meter.domain_labels == {GPU_B: "gpu 0 (Fake GPU)"}  # first visible here
    assert (meter.devices[0].index, meter.devices[0].uuid) == (1, UUID_B)


def test_cuda_visible_devices_env_is_read_and_argument_wins(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus = [FakeGpu(UUID_A, energy_mj=1_000), FakeGpu(UUID_B, energy_mj=2_000)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    meter, _ = make_meter(gpus)
    assert [(d.domain, d.position) for d in meter.devices] == [(GPU_B, 0), (GPU_A, 1)]
    other, _ = make_meter(gpus, "0")
    assert [d.uuid for d in other.devices] == [UUID_A]


@pytest.mark.parametrize(
    ("spec", "expected", "noted"),
    [
        (None, [0, 1, 2], False),
        ("2,0", [2, 0], False),
        ("1,7,0", [1], True),  # CUDA stops at the first invalid entry
        ("0,0,1", [0], True),  # a repeat ends the list too
        ("GPU-3", [2], False),  # unique prefix
        ("GPU-", [], True),
        ("GPU-9", [], True),
        ("-1", [], True),
        ("", [], True),
        ("abc,0", [], True),
    ],
)
def test_select_visible(spec: str | None, expected: list[int], noted: bool) -> None:
    uuids = ["GPU-1aaa", "GPU-1bbb", "GPU-3ccc"]
    chosen, notes = select_visible(spec, uuids)
    assert chosen == expected
    assert bool(notes) is noted


def test_ambiguous_uuid_prefix_matches_nothing() -> None:
    assert select_visible("GPU-1", ["GPU-1aaa", "GPU-1bbb"])[0] == []


def test_mig_instances_are_rejected(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A)])
    with pytest.raises(MeterUnavailable, match="MIG instance 'MIG-1234'.*not supported"):
        NvmlMeter(fake, visible_devices="MIG-1234", sampler=Sampler(clock=FakeClock()))
    assert fake.shutdowns == fake.inits == 1


def test_no_visible_gpu_is_unavailable_and_shuts_down(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A)])
    with pytest.raises(MeterUnavailable, match=r"CUDA_VISIBLE_DEVICES='3' leaves no visible GPU"):
        NvmlMeter(fake, visible_devices="3", sampler=Sampler(clock=FakeClock()))
    assert fake.shutdowns == 1


# -- unavailable -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("NVMLError_LibraryNotFound", "NVML: no NVIDIA driver (NVML Shared Library Not Found)"),
        ("NVMLError_DriverNotLoaded", "NVML: no NVIDIA driver (Driver Not Loaded)"),
        ("NVMLError_NoPermission", "NVML: nvmlInit failed (Insufficient Permissions)"),
    ],
)
def test_init_failure_is_unavailable_with_the_reason(
    pynvml: ModuleType, error: str, message: str
) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A)], init_error=getattr(pynvml, error)())
    with pytest.raises(MeterUnavailable) as info:
        NvmlMeter(fake)
    assert str(info.value) == message
    assert fake.shutdowns == 0


def test_enumeration_failure_is_unavailable_and_shuts_down(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A)])

    def denied(index: int) -> FakeGpu:
        raise pynvml.NVMLError_NoPermission()

    fake.nvmlDeviceGetHandleByIndex = denied  # type: ignore[method-assign]
    with pytest.raises(MeterUnavailable) as info:
        NvmlMeter(fake)
    assert str(info.value) == "NVML: enumerating GPUs failed (Insufficient Permissions)"
    assert fake.shutdowns == 1


def test_zero_devices_is_unavailable(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [])
    with pytest.raises(MeterUnavailable, match="no NVIDIA GPU"):
        NvmlMeter(fake)
    assert fake.shutdowns == 1


def test_missing_binding_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(MeterUnavailable) as info:
        NvmlMeter()
    assert str(info.value) == (
        "NVML: nvidia-ml-py not installed (pip install 'pytest-llmlab[nvml]')"
    )


# -- lifecycle ---------------------------------------------------------------------


def test_close_is_idempotent_and_leaves_no_thread(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A, energy_mj=None)])
    meter = NvmlMeter(fake, sampler_hz=20.0)  # owns and starts its sampler thread
    assert meter.sampler.running
    assert [t for t in threading.enumerate() if t.name == "llmlab-nvml"]
    assert f"gpu 0 (Fake GPU) {UUID_A} (power integrated at 20 Hz)" in meter.description

    meter.close()
    meter.close()
    assert fake.shutdowns == 1
    assert not meter.sampler.running
    assert not [t for t in threading.enumerate() if t.name == "llmlab-nvml"]
    with pytest.raises(MeterUnavailable, match="closed"):
        meter.sample()


def test_close_detaches_from_an_injected_sampler(pynvml: ModuleType) -> None:
    sampler = Sampler(clock=FakeClock())
    sampler.add_source("other", lambda: {"x": 1.0})
    with NvmlMeter(FakeNvml(pynvml, [FakeGpu(UUID_A)]), sampler=sampler) as meter:
        assert set(sampler.sources) == {"other", GPU_A}
        assert not sampler.running  # the caller owns an injected sampler's thread
    assert meter.sampler is sampler
    assert sampler.sources == ("other",)


# -- timeline.Sampler --------------------------------------------------------------


def _fed(points: list[tuple[float, float | None]], key: str = "power_w") -> Sampler:
    """A sampler whose one source ("s") read ``value`` at each ``t`` (seconds)."""
    clock = FakeClock(0)
    current: dict[str, float | None] = {}
    sampler = Sampler(clock=clock)
    sampler.add_source("s", lambda: dict(current), accumulate=key)
    for t, value in points:
        clock.now = round(t * S)
        current[key] = value
        sampler.tick()
    return sampler


def test_integrate_constant_power() -> None:
    sampler = _fed([(t, 100.0) for t in (0, 1, 2, 3)])
    assert sampler.integrate("s", int(0.5 * S), int(2.5 * S)) == pytest.approx(200.0)
    assert sampler.integrate("s", 0, 3 * S) == pytest.approx(300.0)
    # beyond the samples the value is held flat
    assert sampler.integrate("s", 3 * S, 5 * S) == pytest.approx(200.0)
    assert sampler.integrate("s", 2 * S, 2 * S) == 0.0


def test_integrate_ramp_interpolates_the_edges() -> None:
    sampler = _fed([(t, 10.0 * t) for t in (0, 1, 2, 3, 4)])  # P = 10 t W
    # exact for a linear ramp: integral of 10 t dt = 5 (t1^2 - t0^2)
    assert sampler.integrate("s", int(0.5 * S), int(3.5 * S)) == pytest.approx(60.0)
    # a window between two samples: both edges interpolated
    assert sampler.integrate("s", int(1.25 * S), int(1.75 * S)) == pytest.approx(7.5)
    stats = sampler.stats("s", int(0.5 * S), int(3.5 * S), "power_w")
    assert (stats.avg, stats.max, stats.n) == pytest.approx((20.0, 35.0, 3))
    at = sampler.stats("s", int(2.5 * S), int(2.5 * S), "power_w")
    assert (at.avg, at.max, at.n) == pytest.approx((25.0, 25.0, 0))


def test_none_readings_are_skipped() -> None:
    sampler = _fed([(0, 100.0), (1, None), (2, 300.0)])
    assert sampler.integrate("s", 0, 2 * S) == pytest.approx(400.0)  # 100 -> 300 over 2 s
    t_ns, joules = sampler.cumulative("s")
    assert t_ns == 2 * S
    assert joules == pytest.approx(400.0)
    assert sampler.samples("s")[1] == (1 * S, {"power_w": None})


def test_queries_without_samples() -> None:
    sampler = _fed([])
    with pytest.raises(NoSamples):
        sampler.integrate("s", 0, S)
    with pytest.raises(NoSamples):
        sampler.cumulative("s")
    with pytest.raises(NoSamples):
        _fed([(0, 1.0)]).stats("s", 0, S, "util_pct")
    with pytest.raises(KeyError, match="unknown sampler source 'nope'"):
        sampler.integrate("nope", 0, S)
    with pytest.raises(ValueError, match="ends before it starts"):
        _fed([(0, 1.0)]).integrate("s", S, 0)


def test_history_is_bounded_but_the_running_integral_is_not() -> None:
    clock = FakeClock(0)
    sampler = Sampler(10.0, retention_s=1.0, clock=clock)
    sampler.add_source("s", lambda: {"power_w": 2.0}, accumulate="power_w")
    for _ in range(1_000):
        sampler.tick()
        clock.advance(0.1)
    kept = sampler.samples("s")
    assert sampler.capacity == 11
    assert len(kept) <= sampler.capacity + sampler.capacity // 4
    assert kept[-1][0] == round(99.9 * S)  # the newest survive
    assert sampler.cumulative("s")[1] == pytest.approx(2.0 * 99.9)


def test_failing_source_is_counted_and_a_stalled_clock_is_ignored() -> None:
    clock = FakeClock(0)
    sampler = Sampler(clock=clock)

    def broken() -> dict[str, float | None]:
        raise RuntimeError("gauge broke")

    sampler.add_source("bad", broken)
    sampler.add_source("ok", lambda: {"v": 1.0})
    sampler.tick()
    sampler.tick()  # same clock value: not a new sample
    assert sampler.errors("bad") == 2
    assert sampler.samples("bad") == []
    assert len(sampler.samples("ok")) == 1
    with pytest.raises(ValueError, match="already registered"):
        sampler.add_source("ok", lambda: {"v": 2.0})


def test_sampler_thread_starts_once_and_stops_idempotently() -> None:
    ticked = threading.Event()
    calls = 0

    def source() -> dict[str, float | None]:
        nonlocal calls
        calls += 1
        if calls >= 3:
            ticked.set()
        return {"v": float(calls)}

    sampler = Sampler(100.0, name="llmlab-test-sampler")
    sampler.add_source("s", source)
    sampler.start()
    sampler.start()
    assert len([t for t in threading.enumerate() if t.name == "llmlab-test-sampler"]) == 1
    assert ticked.wait(5.0)
    sampler.stop()
    sampler.stop()
    assert not sampler.running
    assert not [t for t in threading.enumerate() if t.name == "llmlab-test-sampler"]
    assert [t for t, _ in sampler.samples("s")] == sorted({t for t, _ in sampler.samples("s")})


@pytest.mark.parametrize(("hz", "retention_s"), [(0.0, 60.0), (float("nan"), 60.0), (20.0, -1.0)])
def test_sampler_rejects_nonsense_settings(hz: float, retention_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Sampler(hz, retention_s=retention_s)


# -- real hardware -----------------------------------------------------------------


def test_real_nvml_hardware() -> None:
    try:
        meter = NvmlMeter()
    except MeterUnavailable as exc:
        pytest.skip(str(exc))
    try:
        start = meter.sample()
        time.sleep(0.3)
        end = meter.sample()
        assert [s.domain for s in start] == [s.domain for s in end] != []
        assert all(s.domain == f"gpu-{d.uuid}" for s, d in zip(start, meter.devices, strict=True))
        assert set(meter.domain_labels) == {s.domain for s in start}
        assert all(meter.power_scope(s.domain) in ("module", "gpu", None) for s in start)
        for a, b in zip(start, end, strict=True):
            assert b.joules >= a.joules >= 0.0
            assert b.t_ns > a.t_ns
            assert a.provenance in ("measured", "integrated")
        for sample in end:
            stats = meter.gpu_stats(sample.domain, start[0].t_ns, end[-1].t_ns)
            if stats["util_max"] is not None:
                assert 0.0 <= stats["util_max"] <= 100.0
            if stats["mem_peak_mb"] is not None:
                assert stats["mem_peak_mb"] > 0.0
            if stats["temp_max_c"] is not None:
                assert 0.0 < stats["temp_max_c"] < 130.0
            if stats["power_max_w"] is not None:
                assert 0.0 < stats["power_max_w"] < 2_000.0
    finally:
        meter.close()
    assert not meter.sampler.running


def test_window_shorter_than_the_counter_period_is_integrated_from_power(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    """NVML's energy counter moves about every 100 ms: a 50 ms window would read 0 J
    (or a whole update), so its energy comes from the power samples instead."""
    from pytest_llmlab.energy.meters import MeterSet

    gpu = FakeGpu(UUID_A, energy_mj=1_000_000, power_mw=200_000)
    meter, _ = make_meter([gpu])
    meter.sampler.tick()
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("short")
    clock.advance(0.05)  # the counter does not move within 50 ms
    short = window.close(completion_tokens=5)
    assert short.gpu is not None and short.gpu.provenance == "integrated"
    assert short.gpu.joules == pytest.approx(200.0 * 0.05)  # 200 W x 50 ms
    assert short.provenance == "integrated" and short.measured

    window = meters.open("long")
    assert gpu.energy_mj is not None
    gpu.energy_mj += 60_000  # 60 J over 0.3 s on the counter
    clock.advance(0.3)
    long = window.close(completion_tokens=5)
    assert long.gpu is not None and long.gpu.provenance == "measured"
    assert long.gpu.joules == pytest.approx(60.0)


# -- GPU domains across processes -------------------------------------------------------


def test_two_workers_on_different_gpus_keep_their_own_energy(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    """Two xdist workers on one host, CUDA_VISIBLE_DEVICES=0 and =1: each sees its GPU
    first, but the domain names the physical GPU, so attribution keeps them apart.
    Named by position both were ``gpu-0``: 2,001,500 J each, "negative slice clamped"."""
    from pytest_llmlab.energy.attribution import attribute
    from pytest_llmlab.energy.base import Window
    from pytest_llmlab.energy.meters import MeterSet
    from pytest_llmlab.report.attribution_pass import attribute_records

    gpus = [FakeGpu(UUID_A, energy_mj=5_000_000_000), FakeGpu(UUID_B, energy_mj=1_000_000_000)]
    workers = []
    for visible, pid in (("0", 1111), ("1", 2222)):  # two processes, one host
        meter, _ = make_meter(gpus, visible)
        meters = MeterSet([meter], "fake nvml")
        meters.process = f"{meters.host}:{pid}"
        workers.append(meters)
    first = workers[0].open("a")  # t = 0 s
    clock.advance(1.0)
    gpus[0].energy_mj = 5_001_500_000
    second = workers[1].open("b")  # t = 1 s
    clock.advance(1.0)
    gpus[0].energy_mj, gpus[1].energy_mj = 5_003_000_000, 1_001_500_000
    a = first.close(completion_tokens=10)  # t = 2 s: 3000 J on GPU A
    clock.advance(1.0)
    gpus[1].energy_mj = 1_003_000_000
    b = second.close(completion_tokens=10)  # t = 3 s: 3000 J on GPU B

    assert a.joules == pytest.approx(3000.0) and b.joules == pytest.approx(3000.0)
    windows = [Window.from_dict(w) for w in a.windows + b.windows]
    result = attribute(windows)
    kept = [r for by_domain in result.values() for r in by_domain.values()]
    assert [r.joules for r in kept] == pytest.approx([3000.0, 3000.0])
    assert [(r.shared, r.warning) for r in kept] == [(False, None)] * 2
    records = [{"energy": a.model_dump(mode="json")}, {"energy": b.model_dump(mode="json")}]
    assert not attribute_records(records)
    for record in records:
        energy = record["energy"]
        assert energy["joules"] == pytest.approx(3000.0)
        assert energy["provenance"] == "measured" and "attribution_warning" not in energy
    assert a.gpu is not None and b.gpu is not None
    assert (a.gpu.domains, b.gpu.domains) == ([GPU_A], [GPU_B])
    assert a.gpu.labels == {GPU_A: "gpu 0 (Fake GPU)"}
    assert b.gpu.labels == {GPU_B: "gpu 0 (Fake GPU)"}  # cuda:0 of its own process


def test_uuid_domains_reach_every_reading_field_and_csv_column(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    """``gpu-GPU-8f3c...`` is still kind ``gpu``: the reading's ``gpu`` component, the
    GPU statistics and the ``gpu_*`` CSV columns."""
    pytest.importorskip("pandas")
    from pytest_llmlab.energy.base import domain_kind
    from pytest_llmlab.energy.meters import MeterSet
    from pytest_llmlab.report.csvfile import records_frame

    assert domain_kind(GPU_A) == "gpu"
    gpu = FakeGpu(UUID_A, energy_mj=1_000_000, power_mw=250_000, util=50)
    meter, _ = make_meter([gpu])
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("gen")
    clock.advance(1.0)
    meter.sampler.tick()
    gpu.energy_mj = 1_250_000
    reading = window.close(completion_tokens=4)
    assert reading.gpu is not None and reading.gpu.joules == pytest.approx(250.0)
    assert reading.other == {} and reading.cpu is None
    assert reading.gpu_stats is not None and reading.gpu_stats.util_max == pytest.approx(50.0)
    frame = records_frame([{"energy": reading.model_dump(mode="json")}])
    row = frame.iloc[0]
    assert row["gpu_joules"] == pytest.approx(250.0)
    assert row["gpu_provenance"] == "measured"
    assert row["gpu_power_avg_w"] == pytest.approx(250.0)


# -- windows shorter than the counter period -------------------------------------------


def test_short_window_prefill_and_decode_split_the_integrated_energy(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    """A 50 ms window whose counter ticks (+20 J) before the first token: the end is
    integrated from power (10 J), so the first token must be too. Mixing the raw
    counter in gave joules 10, prefill 20, decode 0."""
    from pytest_llmlab.energy.meters import MeterSet

    gpu = FakeGpu(UUID_A, energy_mj=1_000_000, power_mw=200_000)
    meter, _ = make_meter([gpu])
    meter.sampler.tick()
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("short")
    clock.advance(0.025)
    gpu.energy_mj = 1_020_000  # one counter update lands inside the window
    window.mark_first_token()
    clock.advance(0.025)
    reading = window.close(completion_tokens=3)

    total, prefill, decode = reading.joules, reading.prefill_joules, reading.decode_joules
    assert total == pytest.approx(200.0 * 0.05)
    assert prefill == pytest.approx(200.0 * 0.025)
    assert decode == pytest.approx(200.0 * 0.025)
    assert prefill is not None and decode is not None
    assert prefill + decode == pytest.approx(total)


# -- CUDA_VISIBLE_DEVICES: ASCII indices only ---------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected", "noted"),
    [
        ("\u0661", [], True),  # ARABIC-INDIC DIGIT ONE
        ("0,\u0661", [0], True),  # ends the list like any entry that matches nothing
        ("\uff11", [], True),  # FULLWIDTH DIGIT ONE
        ("\u00b9", [], True),  # SUPERSCRIPT ONE
        ("1", [1], False),
    ],
    ids=["arabic-indic-1", "after-a-good-one", "fullwidth-1", "superscript-1", "ascii-1"],
)
def test_only_ascii_digits_are_indices(spec: str, expected: list[int], noted: bool) -> None:
    """``str.isdigit`` accepts ``"\u0661"`` (and ``int`` reads it as 1); CUDA does not."""
    chosen, notes = select_visible(spec, [UUID_A, UUID_B])
    assert chosen == expected
    assert bool(notes) is noted


def test_a_non_ascii_digit_selects_no_gpu(pynvml: ModuleType) -> None:
    fake = FakeNvml(pynvml, [FakeGpu(UUID_A), FakeGpu(UUID_B)])
    with pytest.raises(MeterUnavailable, match="leaves no visible GPU"):
        NvmlMeter(fake, visible_devices="\u0661", sampler=Sampler(clock=FakeClock()))


# -- power scope (Grace Hopper) -------------------------------------------------------------


def test_grace_hopper_power_is_read_at_module_scope(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    """GH200: the energy counter covers the module (GPU + Grace CPU + memory); power at
    GPU scope would leave the CPU out of every window integrated from power."""
    from pytest_llmlab.energy.meters import MeterSet

    gpu = FakeGpu(
        UUID_A, name="NVIDIA GH200 480GB", energy_mj=1_000_000, power_mw=300_000,
        module_power_mw=700_000,
    )  # fmt: skip
    meter, _ = make_meter([gpu])
    assert (meter.devices[0].power_source, meter.power_scope(GPU_A)) == ("field", "module")
    assert "power at module scope" in meter.description
    meter.sampler.tick()
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("short")
    clock.advance(0.05)
    reading = window.close(completion_tokens=1)
    assert reading.gpu is not None and reading.gpu.provenance == "integrated"
    assert reading.gpu.joules == pytest.approx(700.0 * 0.05)
    assert reading.gpu_stats is not None
    assert reading.gpu_stats.power_scope == "module"
    assert reading.gpu_stats.power_avg_w == pytest.approx(700.0)


def test_power_scope_falls_back_to_gpu_and_says_so(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    from pytest_llmlab.energy.meters import MeterSet

    gpu = FakeGpu(UUID_A, energy_mj=1_000_000, power_mw=300_000)  # module scope NotSupported
    meter, _ = make_meter([gpu])
    assert (meter.devices[0].power_source, meter.power_scope(GPU_A)) == ("field", "gpu")
    assert meter.power_scope("gpu-elsewhere") is None
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("gen")
    clock.advance(0.5)
    reading = window.close(completion_tokens=1)
    assert reading.gpu_stats is not None and reading.gpu_stats.power_scope == "gpu"
    assert reading.gpu_stats.power_avg_w == pytest.approx(300.0)


@pytest.mark.parametrize("field_power", [True, False], ids=["gpu-field", "power-usage"])
def test_a_binding_without_power_scopes_reads_gpu_scope(
    pynvml: ModuleType, clock: FakeClock, field_power: bool
) -> None:
    gpu = FakeGpu(UUID_A, power_mw=300_000, module_power_mw=700_000, field_power=field_power)
    fake = FakeNvml(pynvml, [gpu])
    del fake.NVML_POWER_SCOPE_MODULE  # nvidia-ml-py older than power scopes
    with NvmlMeter(fake, sampler=Sampler(20.0, clock=clock)) as meter:
        assert meter.power_scope(GPU_A) == "gpu"
        assert meter.devices[0].power_source == ("field" if field_power else "usage")
        assert meter.sampler.samples(GPU_A)[-1][1]["power_w"] == pytest.approx(300.0)


# -- power limits (plausibility) ------------------------------------------------------


def test_enforced_power_limits_bound_the_readings(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]], clock: FakeClock
) -> None:
    from pytest_llmlab.energy.meters import MeterSet

    gpus = [
        FakeGpu(UUID_A, energy_mj=0, power_limit_mw=700_000),
        FakeGpu(UUID_B, energy_mj=0, power_limit_mw=None),  # the driver does not say
    ]
    meter, _ = make_meter(gpus)
    assert meter.power_limits_w == {GPU_A: 700.0}
    meters = MeterSet([meter], "fake nvml")
    window = meters.open("gen")
    gpus[0].energy_mj = 2 * 900_000  # 900 W for 2 s, on a 700 W GPU
    gpus[1].energy_mj = 2 * 5_000_000  # 5 kW, but no stated limit
    clock.advance(2.0)
    reading = window.close(completion_tokens=1)
    assert reading.low_confidence_reason == (
        f"{GPU_A}: average power 900 W is above the device's 700 W limit"
    )


def test_a_module_wide_counter_is_not_bounded_by_the_gpu_limit(
    make_meter: Callable[..., tuple[NvmlMeter, FakeNvml]],
) -> None:
    gpu = FakeGpu(UUID_A, energy_mj=0, module_power_mw=900_000, power_limit_mw=700_000)
    meter, _ = make_meter([gpu])
    assert meter.power_scope(GPU_A) == "module" and meter.power_limits_w == {}


# -- bench/gpu_check.py without a GPU ---------------------------------------------------


def _gpu_check() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_check_says_there_is_no_gpu_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def no_driver() -> NvmlMeter:
        raise MeterUnavailable("NVML: no NVIDIA driver (NVML Shared Library Not Found)")

    assert _gpu_check().main([], open_meter=no_driver) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: no NVIDIA GPU to check on this machine: NVML: no NVIDIA")
    assert "Traceback" not in err


def test_gpu_check_compares_the_meter_with_its_own_power_integral(
    pynvml: ModuleType, clock: FakeClock
) -> None:
    """The bench's measuring path on the fake: a GPU at 300 W whose counter agrees."""
    check = _gpu_check()
    gpu = FakeGpu(UUID_A, energy_mj=1_000_000, power_mw=300_000)
    fake = FakeNvml(pynvml, [gpu])
    fake.nvmlInit()  # the bench's own NVML session, beside the meter's
    with NvmlMeter(fake, sampler=Sampler(20.0, clock=clock)) as meter:
        integrator = check.PowerIntegrator(fake, [UUID_A], clock=clock)
        integrator.read_once()

        def work() -> None:
            clock.advance(0.5)
            assert gpu.energy_mj is not None
            gpu.energy_mj += 150_000  # 300 W x 0.5 s
            integrator.read_once()

        result = check.measure(meter, integrator, None, "w", work, 0.0)
    assert result.meter_j == pytest.approx(150.0)
    assert result.integrated_j == pytest.approx(150.0)
    assert result.ratio == pytest.approx(1.0) and result.zeus_j is None


def test_the_power_trace_integrates_by_trapezoids() -> None:
    trace = _gpu_check().PowerTrace()
    for t_s, watts in [(0.0, 100.0), (1.0, 300.0), (2.0, 300.0)]:
        trace.add(round(t_s * S), watts)
    assert trace.joules(0, 2 * S) == pytest.approx(200.0 + 300.0)
    assert trace.joules(S // 2, S) == pytest.approx(0.5 * (200.0 + 300.0) / 2)
    assert trace.joules(S, S) == 0.0
