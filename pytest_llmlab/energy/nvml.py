"""The NVIDIA GPU meter: NVML energy counters, or integrated power where there are none.

Per visible GPU, one domain ``gpu-<uuid>`` (``gpu-GPU-8f3c...``, the UUID as NVML and
``nvidia-smi -L`` print it): a physical GPU has one name in every process, so two xdist
workers with ``CUDA_VISIBLE_DEVICES=0`` and ``=1`` never report the same domain for two
GPUs (attribution would merge them). The position in this process's visible list is
the label beside it (``gpu 0 (NVIDIA H100 80GB HBM3)``, :attr:`NvmlMeter.domain_labels`).

* **counter path** (Volta and newer): ``nvmlDeviceGetTotalEnergyConsumption`` is a
  64-bit millijoule counter since the driver loaded; ``sample()`` reads it directly,
  provenance ``measured``. NVML refreshes it about every 100 ms
  (:attr:`NvmlMeter.counter_period_ns`), so shorter windows are mostly quantization.
* **power path** (older GPUs, where that call raises ``NotSupported``): the timeline
  sampler integrates power (``NVML_FI_DEV_POWER_INSTANT``, else
  ``nvmlDeviceGetPowerUsage``, both milliwatts) into a running joule count;
  ``sample()`` forces one fresh reading so the value is current at the window edge;
  provenance ``integrated``.

**Power scope.** On Grace Hopper (GH200) the energy counter covers the whole module
(GPU, Grace CPU, memory) while power is read at GPU scope by default. Where the driver
answers ``NVML_FI_DEV_POWER_INSTANT`` at ``NVML_POWER_SCOPE_MODULE`` (as Zeus reads
it), power is read at module scope, so short windows integrated from power and the
power statistics cover what the counter covers; elsewhere GPU scope.
:meth:`NvmlMeter.power_scope` says which, and readings carry it
(``gpu_stats.power_scope``).

The sampler thread (:class:`~pytest_llmlab.energy.timeline.Sampler`, one daemon thread
in this process, no subprocess) also records power, GPU utilization, memory used and
temperature for :meth:`NvmlMeter.gpu_stats`; a metric the GPU does not support is read
once, found ``NotSupported`` and reported as ``None`` from then on.

GPU selection follows ``CUDA_VISIBLE_DEVICES`` (or the ``visible_devices`` argument):
a comma list of indices (ASCII digits only: an Arabic-Indic or fullwidth digit, which
``str.isdigit`` accepts, is no index) or UUIDs (``GPU-...``, a unique prefix is enough,
as CUDA allows). The first entry that matches no GPU (or repeats one) ends the list, as
in CUDA. **Assumption:** an index means the NVML index (PCI bus order); CUDA numbers GPUs
the same way only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (its default orders fastest
first), so on mixed multi-GPU boxes prefer UUIDs. ``MIG-...`` instances are rejected:
NVML energy and power are per physical GPU, not per MIG instance.

``pynvml`` (the ``nvidia-ml-py`` distribution) is untyped: :class:`NvmlApi` is the typed
subset this module calls, and tests inject a fake of exactly that.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self, cast

from pytest_llmlab.energy.base import CounterSample, MeterUnavailable
from pytest_llmlab.energy.timeline import DEFAULT_HZ, NoSamples, Sampler

__all__ = [
    "COUNTER_PERIOD_NS",
    "GPU_STAT_KEYS",
    "NvmlApi",
    "NvmlDevice",
    "NvmlMeter",
    "select_visible",
]

#: NVML refreshes the total-energy counter about every 100 ms.
COUNTER_PERIOD_NS = 100_000_000

#: A CUDA_VISIBLE_DEVICES index: ASCII digits only (``str.isdigit`` accepts any script's).
_INDEX = re.compile(r"[0-9]+")

#: Keys of :meth:`NvmlMeter.gpu_stats` (the fields of ``reading.GpuStats``).
GPU_STAT_KEYS = (
    "util_avg",
    "util_max",
    "mem_avg_mb",
    "mem_peak_mb",
    "temp_avg_c",
    "temp_max_c",
    "power_avg_w",
    "power_max_w",
)

_INSTALL_HINT = "NVML: nvidia-ml-py not installed (pip install 'pytest-llmlab[nvml]')"

#: nvmlValueType_t -> the member of the c_nvmlValue_t union that holds the value.
_VALUE_MEMBERS = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}

#: Sampler metric keys and the gpu_stats names of their average and maximum.
_STAT_METRICS = (
    ("util_pct", "util_avg", "util_max"),
    ("mem_mb", "mem_avg_mb", "mem_peak_mb"),
    ("temp_c", "temp_avg_c", "temp_max_c"),
    ("power_w", "power_avg_w", "power_max_w"),
)


# -- the typed subset of pynvml ---------------------------------------------------


class _Utilization(Protocol):
    gpu: int  # percent of the last sample period a kernel was running


class _Memory(Protocol):
    used: int  # bytes


class _FieldValue(Protocol):
    nvmlReturn: int  # per-field status, 0 = NVML_SUCCESS
    valueType: int
    value: object  # c_nvmlValue_t union


class NvmlApi(Protocol):
    """The part of ``pynvml`` (nvidia-ml-py) that :class:`NvmlMeter` uses."""

    NVMLError: type[Exception]
    NVMLError_LibraryNotFound: type[Exception]
    NVMLError_DriverNotLoaded: type[Exception]
    NVML_TEMPERATURE_GPU: int
    NVML_FI_DEV_POWER_INSTANT: int
    NVML_POWER_SCOPE_MODULE: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> object: ...
    def nvmlDeviceGetUUID(self, handle: object, /) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: object, /) -> str | bytes: ...
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object, /) -> int: ...
    def nvmlDeviceGetFieldValues(
        self, handle: object, field_ids: list[int | tuple[int, int]], /
    ) -> Sequence[_FieldValue]: ...
    def nvmlDeviceGetPowerUsage(self, handle: object, /) -> int: ...
    def nvmlDeviceGetUtilizationRates(self, handle: object, /) -> _Utilization: ...
    def nvmlDeviceGetMemoryInfo(self, handle: object, /) -> _Memory: ...
    def nvmlDeviceGetTemperature(self, handle: object, sensor: int, /) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object, /) -> int: ...


def _load_pynvml() -> NvmlApi:
    """Import nvidia-ml-py's ``pynvml`` or say how to install it."""
    try:
        module = importlib.import_module("pynvml")
    except ImportError as exc:
        raise MeterUnavailable(_INSTALL_HINT) from exc
    return cast(NvmlApi, module)


def _text(value: str | bytes) -> str:
    """NVML strings arrive as ``str`` from nvidia-ml-py, ``bytes`` from old bindings."""
    return value.decode() if isinstance(value, bytes) else value


# -- CUDA_VISIBLE_DEVICES ---------------------------------------------------------


def select_visible(spec: str | None, uuids: Sequence[str]) -> tuple[list[int], list[str]]:
    """NVML indices of the GPUs ``spec`` (a ``CUDA_VISIBLE_DEVICES`` value) makes
    visible, in visible order, and notes on ignored entries.

    ``None`` = every GPU. Entries are NVML indices (ASCII digits only) or ``GPU-`` UUIDs
    (exact or a unique prefix, case-insensitive); the first entry that matches nothing,
    is ambiguous or repeats a GPU ends the list (CUDA ignores it and all after it). ``MIG-`` entries
    raise :class:`MeterUnavailable`.
    """
    if spec is None:
        return list(range(len(uuids))), []
    chosen: list[int] = []
    notes: list[str] = []
    lowered = [u.lower() for u in uuids]
    for raw in spec.split(","):
        entry = raw.strip()
        index = _match_entry(entry, lowered)
        if index is None or index in chosen:
            why = "repeats a GPU" if index is not None else "matches no GPU"
            notes.append(
                f"CUDA_VISIBLE_DEVICES entry {entry!r} {why}: it and later entries ignored"
            )
            break
        chosen.append(index)
    return chosen, notes


def _match_entry(entry: str, lowered_uuids: Sequence[str]) -> int | None:
    """One ``CUDA_VISIBLE_DEVICES`` entry -> NVML index, or None if it matches nothing."""
    if entry.upper().startswith("MIG-"):
        raise MeterUnavailable(
            f"NVML: CUDA_VISIBLE_DEVICES selects MIG instance {entry!r}; NVML measures "
            "energy per physical GPU, not per MIG instance, so MIG is not supported"
        )
    if _INDEX.fullmatch(entry):
        index = int(entry)
        return index if index < len(lowered_uuids) else None
    if entry.upper().startswith("GPU-") and len(entry) > 4:
        hits = [i for i, u in enumerate(lowered_uuids) if u.startswith(entry.lower())]
        return hits[0] if len(hits) == 1 else None
    return None


# -- one GPU ----------------------------------------------------------------------


@dataclass
class NvmlDevice:
    """One visible GPU and how it is metered."""

    domain: str  # gpu-<uuid>
    index: int  # NVML index
    uuid: str
    name: str
    handle: object = field(repr=False)
    #: "counter" (total-energy counter) or "power" (integrated power samples).
    energy: Literal["counter", "power"] = "counter"
    #: "field" (instant power field), "usage" (nvmlDeviceGetPowerUsage) or None.
    power_source: Literal["field", "usage"] | None = None
    #: What the power reading covers: "module" (Grace Hopper: GPU + CPU + memory, as
    #: the energy counter does), "gpu", or None without a power reading.
    power_scope: Literal["module", "gpu"] | None = None
    #: Sampler metrics this GPU supports (util_pct, mem_mb, temp_c, power_w).
    metrics: set[str] = field(default_factory=set)
    #: Why a metric or the energy counter is missing, for the header / debugging.
    unsupported: dict[str, str] = field(default_factory=dict)
    #: Position in this process's visible list (CUDA's device ordinal here).
    position: int = 0
    #: The power limit the driver enforces (W), None where NVML does not say.
    power_limit_w: float | None = None

    @property
    def label(self) -> str:
        """How a person names it in this process: ``gpu 0 (NVIDIA H100 80GB HBM3)``."""
        return f"gpu {self.position} ({self.name})"


class NvmlMeter:
    """NVIDIA GPU energy per visible device (see the module docstring).

    ``nvml`` defaults to ``import pynvml``; ``sampler`` injects a (possibly unstarted)
    :class:`Sampler` whose lifecycle the caller owns -- otherwise the meter starts its
    own at ``sampler_hz`` and stops it on :meth:`close`.
    """

    name = "nvml"
    #: NVML's energy counter update period: windows near this length are low-confidence.
    counter_period_ns = COUNTER_PERIOD_NS

    def __init__(
        self,
        nvml: NvmlApi | None = None,
        sampler_hz: float = DEFAULT_HZ,
        visible_devices: str | None = None,
        *,
        sampler: Sampler | None = None,
    ) -> None:
        self._api = nvml if nvml is not None else _load_pynvml()
        self._closed = False
        self._close_lock = threading.Lock()
        self.notes: list[str] = []
        self.devices: list[NvmlDevice] = []
        self._sources: list[str] = []  # what this meter registered with the sampler
        self._owns_sampler = sampler is None
        self.sampler = sampler if sampler is not None else Sampler(sampler_hz, name="llmlab-nvml")
        self._init_nvml()
        try:
            spec = visible_devices
            if spec is None:
                spec = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.devices = self._open_devices(spec)
            for dev in self.devices:
                accumulate = "power_w" if dev.energy == "power" else None
                self.sampler.add_source(dev.domain, self._reader(dev), accumulate=accumulate)
                self._sources.append(dev.domain)
                self.sampler.tick_source(dev.domain)  # stats and the power integral start now
            if self._owns_sampler:
                self.sampler.start()
        except self._api.NVMLError as exc:
            self.close()
            raise MeterUnavailable(f"NVML: enumerating GPUs failed ({exc})") from exc
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------------

    def _init_nvml(self) -> None:
        """nvmlInit, translating a missing driver into MeterUnavailable."""
        api = self._api
        try:
            api.nvmlInit()
        except (api.NVMLError_LibraryNotFound, api.NVMLError_DriverNotLoaded) as exc:
            raise MeterUnavailable(f"NVML: no NVIDIA driver ({exc})") from exc
        except api.NVMLError as exc:
            raise MeterUnavailable(f"NVML: nvmlInit failed ({exc})") from exc

    def _open_devices(self, spec: str | None) -> list[NvmlDevice]:
        """Enumerate GPUs, apply the visible list, probe what each one supports."""
        api = self._api
        count = api.nvmlDeviceGetCount()
        if count <= 0:
            raise MeterUnavailable("NVML: the driver reports no NVIDIA GPU")
        handles = [api.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(api.nvmlDeviceGetUUID(h)) for h in handles]
        chosen, notes = select_visible(spec, uuids)
        self.notes.extend(notes)
        if not chosen:
            raise MeterUnavailable(
                f"NVML: CUDA_VISIBLE_DEVICES={spec!r} leaves no visible GPU "
                f"(NVML sees {count}: {', '.join(uuids)})"
            )
        if (
            spec is not None
            and len(uuids) > 1
            and any(_INDEX.fullmatch(e.strip()) for e in spec.split(","))
            and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID"
        ):
            self.notes.append(
                "CUDA_VISIBLE_DEVICES indices taken as NVML (PCI bus) indices; set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs to be sure CUDA agrees"
            )
        devices = [
            self._probe(pos, index, handles[index], uuids[index])
            for pos, index in enumerate(chosen)
        ]
        if not any(d.energy == "counter" or d.power_source for d in devices):
            raise MeterUnavailable(
                "NVML: no visible GPU reports an energy counter or power reading"
            )
        return [d for d in devices if d.energy == "counter" or d.power_source]

    def _probe(self, position: int, index: int, handle: object, uuid: str) -> NvmlDevice:
        """Find the energy path, the power scope and the supported sampler metrics of
        one GPU (the ``position``-th visible one)."""
        api = self._api
        try:
            name = _text(api.nvmlDeviceGetName(handle))
        except api.NVMLError:
            name = "NVIDIA GPU"
        dev = NvmlDevice(
            domain=f"gpu-{uuid}",
            index=index,
            uuid=uuid,
            name=name,
            handle=handle,
            position=position,
        )
        try:
            api.nvmlDeviceGetTotalEnergyConsumption(handle)
        except api.NVMLError as exc:
            dev.energy = "power"
            dev.unsupported["energy_counter"] = str(exc)
        if self._field_power(handle, "module") is not None:
            dev.power_source, dev.power_scope = "field", "module"
        elif self._field_power(handle, "gpu") is not None:
            dev.power_source, dev.power_scope = "field", "gpu"
        elif self._try(dev, "power_w", lambda: api.nvmlDeviceGetPowerUsage(handle)):
            dev.power_source, dev.power_scope = "usage", "gpu"
        try:
            dev.power_limit_w = api.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        except api.NVMLError as exc:
            dev.unsupported["power_limit"] = str(exc)
        if dev.power_source:
            dev.metrics.add("power_w")
        elif dev.energy == "power":
            self.notes.append(f"{dev.label} ({uuid}): no energy counter and no power reading")
        probes = {
            "util_pct": lambda: api.nvmlDeviceGetUtilizationRates(handle).gpu,
            "mem_mb": lambda: api.nvmlDeviceGetMemoryInfo(handle).used,
            "temp_c": lambda: api.nvmlDeviceGetTemperature(handle, api.NVML_TEMPERATURE_GPU),
        }
        for metric, probe in probes.items():
            if self._try(dev, metric, probe):
                dev.metrics.add(metric)
        return dev

    def _try(self, dev: NvmlDevice, metric: str, probe: Callable[[], object]) -> bool:
        """Call ``probe`` once; False (and the reason noted) if NVML refuses."""
        try:
            probe()
        except self._api.NVMLError as exc:
            dev.unsupported[metric] = str(exc)
            return False
        return True

    # -- readings -----------------------------------------------------------------

    def _field_power(self, handle: object, scope: Literal["module", "gpu"]) -> float | None:
        """Instant power in W from NVML_FI_DEV_POWER_INSTANT at ``scope``, None if
        unavailable (GPU scope is the field's default; module scope asks for it)."""
        api = self._api
        field_id: int | None = getattr(api, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None or not hasattr(api, "nvmlDeviceGetFieldValues"):
            return None  # a binding older than the field
        request: int | tuple[int, int] = field_id
        if scope == "module":
            module: int | None = getattr(api, "NVML_POWER_SCOPE_MODULE", None)
            if module is None:
                return None  # a binding older than power scopes
            request = (field_id, module)
        try:
            value = api.nvmlDeviceGetFieldValues(handle, [request])[0]
        except api.NVMLError:
            return None
        member = _VALUE_MEMBERS.get(value.valueType)
        if value.nvmlReturn != 0 or member is None:
            return None
        return float(getattr(value.value, member)) / 1000.0

    def _power(self, dev: NvmlDevice) -> float | None:
        """Current power of one GPU in W (None if this read failed)."""
        if dev.power_source == "field" and dev.power_scope is not None:
            return self._field_power(dev.handle, dev.power_scope)
        if dev.power_source == "usage":
            return self._api.nvmlDeviceGetPowerUsage(dev.handle) / 1000.0
        return None

    def _reader(self, dev: NvmlDevice) -> Callable[[], dict[str, float | None]]:
        """The sampler source of one GPU: its supported metrics, None where a read fails."""
        api = self._api
        handle = dev.handle
        getters: dict[str, Callable[[], float | None]] = {
            "power_w": lambda: self._power(dev),
            "util_pct": lambda: float(api.nvmlDeviceGetUtilizationRates(handle).gpu),
            "mem_mb": lambda: api.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
            "temp_c": lambda: float(api.nvmlDeviceGetTemperature(handle, api.NVML_TEMPERATURE_GPU)),
        }
        active = [(k, g) for k, g in getters.items() if k in dev.metrics]

        def read() -> dict[str, float | None]:
            values: dict[str, float | None] = {}
            for key, getter in active:
                try:
                    result = getter()
                except api.NVMLError:
                    result = None
                values[key] = result
            return values

        return read

    # -- the Meter protocol -------------------------------------------------------

    def sample(self) -> list[CounterSample]:
        """Every visible GPU's cumulative joules now (counter or integrated power)."""
        if self._closed:
            raise MeterUnavailable("NVML: meter is closed")
        return [self._sample_one(dev) for dev in self.devices]

    def _sample_one(self, dev: NvmlDevice) -> CounterSample:
        """One GPU's counter sample; NVML failures become MeterUnavailable."""
        if dev.energy == "counter":
            t_ns = self.sampler.clock()
            try:
                millijoules = self._api.nvmlDeviceGetTotalEnergyConsumption(dev.handle)
            except self._api.NVMLError as exc:
                raise MeterUnavailable(f"NVML: reading {dev.domain} energy failed ({exc})") from exc
            return CounterSample(domain=dev.domain, joules=millijoules / 1000.0, t_ns=t_ns)
        self.sampler.tick_source(dev.domain)
        try:
            t_ns, joules = self.sampler.cumulative(dev.domain)
        except NoSamples as exc:
            raise MeterUnavailable(f"NVML: {dev.domain}: no power reading yet") from exc
        return CounterSample(domain=dev.domain, joules=joules, t_ns=t_ns, provenance="integrated")

    def short_window_joules(self, domain: str, t0_ns: int, t1_ns: int) -> float | None:
        """Energy of a window shorter than the counter's update period, from the power
        samples (the counter may not have moved at all); None when this is not one of
        this meter's counter-path GPUs or there is no power sample."""
        counter_domains = {d.domain for d in self.devices if d.energy == "counter"}
        if domain not in counter_domains or t1_ns - t0_ns >= self.counter_period_ns:
            return None
        self.sampler.tick_source(domain)  # a power reading at the window's end
        try:
            return self.sampler.integrate(domain, t0_ns, t1_ns, "power_w")
        except (NoSamples, ValueError):
            return None

    @property
    def domain_labels(self) -> dict[str, str]:
        """Each GPU domain and how a person names it here (``gpu 0 (NVIDIA ...)``):
        `MeterSet` puts these beside the domains of every reading."""
        return {dev.domain: dev.label for dev in self.devices}

    @property
    def power_limits_w(self) -> dict[str, float]:
        """Each GPU's enforced power limit in W, where NVML gives one: a window's
        average above it is implausible. Not for GPUs whose counter covers a whole
        module (Grace Hopper): the GPU's limit does not bound the module's power."""
        return {
            dev.domain: dev.power_limit_w
            for dev in self.devices
            if dev.power_limit_w is not None
            and dev.power_limit_w > 0
            and dev.power_scope != "module"
        }

    def power_scope(self, domain: str) -> Literal["module", "gpu"] | None:
        """What ``domain``'s power reading covers: ``module`` (Grace Hopper's GPU + CPU
        + memory, like its energy counter), ``gpu``, or None (not this meter's, or no
        power reading)."""
        for dev in self.devices:
            if dev.domain == domain:
                return dev.power_scope
        return None

    def gpu_stats(self, domain: str, t0_ns: int, t1_ns: int) -> dict[str, float | None]:
        """Utilization %, memory MiB, temperature C and power W of one GPU over
        [t0_ns, t1_ns]: averages (time-weighted) and maxima; None where the GPU does
        not report a metric, nothing was sampled, or ``domain`` is not this meter's."""
        stats: dict[str, float | None] = dict.fromkeys(GPU_STAT_KEYS)
        if domain not in self.sampler.sources:
            return stats
        t1_ns = max(t0_ns, t1_ns)
        for key, avg_name, max_name in _STAT_METRICS:
            try:
                summary = self.sampler.stats(domain, t0_ns, t1_ns, key)
            except NoSamples:
                continue
            stats[avg_name] = summary.avg
            stats[max_name] = summary.max
        return stats

    @property
    def description(self) -> str:
        """One line for the terminal header: which GPUs, and how each is metered."""
        parts = []
        for dev in self.devices:
            how = "energy counter"
            if dev.energy == "power":
                how = f"power integrated at {self.sampler.hz:g} Hz"
            if dev.power_scope == "module":
                how += ", power at module scope"
            parts.append(f"{dev.label} {dev.uuid} ({how})")
        return "; ".join(parts + self.notes)

    def close(self) -> None:
        """Stop the sampler (or detach from an injected one), shut NVML down. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_sampler:
            self.sampler.stop()
        else:
            for source in self._sources:
                self.sampler.remove_source(source)
        self._shutdown_nvml()

    def _shutdown_nvml(self) -> None:
        """nvmlShutdown, ignoring NVML's complaints (we are leaving anyway)."""
        try:
            self._api.nvmlShutdown()
        except self._api.NVMLError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
