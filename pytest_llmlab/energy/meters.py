"""Choosing meters (``--llm-meter``) and metering windows with them.

``auto`` uses every hardware meter the machine can provide (RAPL for CPU packages and
DRAM, NVML for NVIDIA GPUs) and falls back to the CPU estimate when there is none.
With a calibration (``--llm-energy-coefficients``), the estimate is the calibrated one
(`energy.calibration.CalibratedMeter`) instead of CPU time. What was chosen, and why
the others were not, is one line for the terminal header.
"""

from __future__ import annotations

import itertools
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from pytest_llmlab.energy.base import CounterSample, Meter, MeterUnavailable, TokenSegment
from pytest_llmlab.energy.cpu import CpuEstimateMeter, CpuScope, estimate_scope
from pytest_llmlab.energy.reading import EnergyReading, GpuStats, reading_from_samples

if TYPE_CHECKING:
    from pytest_llmlab.config import Settings

__all__ = [
    "EnergyMeter",
    "MeterSelectionError",
    "MeterSet",
    "OpenWindow",
    "select_meters",
]

#: The idle baseline is sampled in this many parts: the spread of their powers is the
#: baseline's noise (`MeterSet.baseline_noise_w`), which the plausibility check of net
#: energy allows for.
BASELINE_PARTS = 10


class _TokenMeter(Protocol):
    """A meter whose joules come from a window's tokens (`CalibratedMeter`)."""

    def token_joules(
        self, prefill_tokens: int, decode_tokens: int
    ) -> dict[str, tuple[float, float]]: ...


class MeterSelectionError(MeterUnavailable, ValueError):
    """An explicitly requested meter cannot run here; the message says why."""


def _try(factory: Callable[[], Meter]) -> tuple[Meter | None, str]:
    try:
        return factory(), ""
    except MeterUnavailable as exc:
        return None, str(exc)


def _rapl() -> Meter:
    from pytest_llmlab.energy.rapl import RaplMeter

    return RaplMeter()


def _nvml() -> Meter:
    from pytest_llmlab.energy.nvml import NvmlMeter

    return NvmlMeter()


def select_meters(
    choice: Sequence[str],
    *,
    cpu_tdp: float | None = None,
    cpu_scope: CpuScope = "machine",
    cpu_scope_why: str = "",
    calibrated: Meter | None = None,
    extra: Sequence[Meter] = (),
    factories: dict[str, Callable[[], Meter]] | None = None,
    grid_gco2_per_kwh: float | None = None,
    grid_zone: str | None = None,
    kwh_price: float | None = None,
) -> MeterSet:
    """Build the session's meters; raise MeterSelectionError for an impossible request.

    The carbon intensity, grid zone and electricity price are given to every reading.
    ``cpu_scope`` is whose CPU time the CPU estimate counts (`CpuEstimateMeter`), and
    ``cpu_scope_why`` why (shown in the description). ``calibrated`` (a
    `CalibratedMeter`) replaces the CPU estimate wherever the estimate would run.
    """
    costs: dict[str, Any] = {
        "grid_gco2_per_kwh": grid_gco2_per_kwh,
        "grid_zone": grid_zone,
        "kwh_price": kwh_price,
    }
    makers: dict[str, Callable[[], Meter]] = {"rapl": _rapl, "nvml": _nvml}
    makers.update(factories or {})
    meters: list[Meter] = list(extra)
    notes: list[str] = []
    if "none" in choice:
        # Plugin meters were asked for by installing them: `none` turns off ours only.
        note = "built-in meters off (--llm-meter=none)"
        if extra:
            note += "; plugin meters: " + ", ".join(m.name for m in extra)
        return MeterSet(meters, note, **costs)
    hardware = ("rapl", "nvml") if "auto" in choice else tuple(c for c in choice if c in makers)
    for name in hardware:
        meter, why = _try(makers[name])
        if meter is not None:
            meters.append(meter)
            notes.append(f"{name.upper()}: {getattr(meter, 'description', 'available')}")
        elif "auto" in choice:
            notes.append(why)
        else:
            for m in meters:
                m.close()
            raise MeterSelectionError(f"--llm-meter={','.join(choice)}: {why}")
    wants_estimate = "estimate" in choice or ("auto" in choice and not meters)
    if calibrated is not None:
        if wants_estimate:
            meters.append(calibrated)
            notes.append(f"using {getattr(calibrated, 'description', calibrated.name)}")
        else:
            notes.append(
                "--llm-energy-coefficients not used: measured meters run "
                "(--llm-meter=estimate uses the calibration instead)"
            )
    elif wants_estimate:
        estimate = CpuEstimateMeter(
            watts_per_logical_cpu=cpu_tdp, scope=cpu_scope, why=cpu_scope_why
        )
        meters.append(estimate)
        notes.append(f"using {estimate.description}")
    if extra:
        notes.append("plugin meters: " + ", ".join(m.name for m in extra))
    return MeterSet(meters, "; ".join(notes) or "no meter", **costs)


@dataclass
class OpenWindow:
    """A window being metered: opened by `MeterSet.open`, closed by `close`."""

    owner: MeterSet
    label: str
    start: list[CounterSample]
    first_token: list[CounterSample] | None = None
    reading: EnergyReading | None = None
    _closed: bool = field(default=False, repr=False)

    def mark_first_token(self) -> None:
        """Sample at the first output token: the prefill/decode split point."""
        if self.first_token is None:
            self.first_token = self.owner.sample()

    def close(
        self,
        *,
        segments: Sequence[TokenSegment] = (),
        completion_tokens: int | None = None,
    ) -> EnergyReading:
        """Sample again and build the gross reading of the window (idempotent)."""
        if self.reading is not None:
            return self.reading
        end = self.owner.sample()
        self.reading = self.owner.build_reading(
            self.start, end, self.first_token, segments, completion_tokens
        )
        return self.reading

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MeterSet:
    """The session's meters, sampled together at every window edge."""

    def __init__(
        self,
        meters: Sequence[Meter],
        description: str,
        *,
        baseline_w: float | None = None,
        grid_gco2_per_kwh: float | None = None,
        kwh_price: float | None = None,
        grid_zone: str | None = None,
    ) -> None:
        self.meters = list(meters)
        self.grid_zone = grid_zone
        self.description = description
        self.baseline_w = baseline_w
        self.grid_gco2_per_kwh = grid_gco2_per_kwh
        self.kwh_price = kwh_price
        self.host = socket.gethostname()
        self.process = f"{self.host}:{os.getpid()}"
        self._ids = itertools.count(1)
        self._has_gpu_stats = any(hasattr(m, "gpu_stats") for m in self.meters)
        self._short_window = [
            m.short_window_joules for m in self.meters if hasattr(m, "short_window_joules")
        ]
        #: Meters whose joules come from a window's tokens (a calibrated estimate).
        self._token_meters = [
            cast(_TokenMeter, m) for m in self.meters if hasattr(m, "token_joules")
        ]
        #: domain -> the device's stated maximum power (W), for plausibility checks.
        self.power_limits_w: dict[str, float] = {}
        for meter in self.meters:
            self.power_limits_w.update(getattr(meter, "power_limits_w", None) or {})
        #: Standard deviation of idle power over the baseline's parts (W), once measured.
        self.baseline_noise_w: float | None = None
        #: domain -> how a person names it (a meter's optional ``domain_labels``).
        self._labels: dict[str, str] = {}
        for meter in self.meters:
            self._labels.update(getattr(meter, "domain_labels", None) or {})

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        extra: Sequence[Meter] = (),
        calibrated: Meter | None = None,
    ) -> MeterSet:
        """The meters ``--llm-meter`` asks for, with the session's carbon intensity
        (``--llm-grid-gco2-per-kwh``, else the ``--llm-grid-zone`` mix) and price.

        The CPU estimate counts this process's CPU time unless a model of
        ``--llm-models`` is served by another process on this machine, then every
        process's (`estimate_scope`); ``calibrated`` (the session's calibration, see
        ``--llm-energy-coefficients``) replaces the CPU estimate.

        Raises MeterSelectionError for a meter the machine lacks and ValueError for an
        unknown grid zone.
        """
        carbon = settings.grid_gco2_per_kwh
        if carbon is None and settings.grid_zone:
            from pytest_llmlab.energy.cloud import zone_intensity

            carbon = zone_intensity(settings.grid_zone)
        scope, why = estimate_scope(
            (m.spec, m.provider, settings.base_urls.get(m.provider)) for m in settings.models
        )
        return select_meters(
            settings.meter,
            cpu_tdp=settings.cpu_tdp,
            cpu_scope=scope,
            cpu_scope_why=why,
            calibrated=calibrated,
            extra=extra,
            grid_gco2_per_kwh=carbon,
            grid_zone=settings.grid_zone,
            kwh_price=settings.kwh_price,
        )

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.meters]

    @property
    def token_only(self) -> bool:
        """Every meter estimates from tokens: there is no idle power to measure."""
        return bool(self.meters) and len(self._token_meters) == len(self.meters)

    def sample(self) -> list[CounterSample]:
        samples: list[CounterSample] = []
        for meter in self.meters:
            samples.extend(meter.sample())
        return samples

    def open(self, label: str = "") -> OpenWindow:
        return OpenWindow(owner=self, label=label, start=self.sample())

    def build_reading(
        self,
        start: list[CounterSample],
        end: list[CounterSample],
        first_token: list[CounterSample] | None,
        segments: Sequence[TokenSegment],
        completion_tokens: int | None,
    ) -> EnergyReading:
        if not self.meters:
            return EnergyReading.unavailable(self.description)
        # next() on itertools.count is atomic under the GIL: ids stay unique across
        # threads without a lock.
        identity = {
            "window_id": f"{self.process}:{next(self._ids)}",
            "host": self.host,
            "process": self.process,
            "segments": [
                {"t0_ns": g.t0_ns, "t1_ns": g.t1_ns, "tokens": g.tokens} for g in segments
            ],
        }
        if self._token_meters:
            if not segments and self.token_only:
                return EnergyReading.unavailable(
                    f"{self.description}: a calibrated estimate needs a generation's tokens "
                    "(a meter.window has none)"
                )
            end, first_token = self._token_estimates(start, end, first_token, segments)
        if self._short_window:
            end, first_token = self._integrate_short_windows(start, end, first_token)
        return reading_from_samples(
            start=start,
            end=end,
            first_token=first_token,
            meters=self.names,
            window=identity,
            gpu_stats=self._gpu_stats(start, end) if self._has_gpu_stats else None,
            note=self.description,
            completion_tokens=completion_tokens,
            baseline_w=self.baseline_w,
            grid_gco2_per_kwh=self.grid_gco2_per_kwh,
            kwh_price=self.kwh_price,
            labels=self._labels,
            power_limits_w=self.power_limits_w,
            baseline_noise_w=self.baseline_noise_w,
        )

    def _token_estimates(
        self,
        start: list[CounterSample],
        end: list[CounterSample],
        first_token: list[CounterSample] | None,
        segments: Sequence[TokenSegment],
    ) -> tuple[list[CounterSample], list[CounterSample] | None]:
        """The end (and first-token) samples of token-estimate domains, set from the
        window's tokens: prefill tokens are those of segments that end by the first
        token (the prompt), decode tokens the rest (the output). The first-token sample
        is the start plus the prefill estimate, so the split is the estimate's own."""
        t_mark = first_token[0].t_ns if first_token else None
        prefill_tokens = decode_tokens = 0
        for segment in segments:
            if t_mark is None or segment.t1_ns <= t_mark:
                prefill_tokens += segment.tokens
            else:
                decode_tokens += segment.tokens
        estimates: dict[str, tuple[float, float]] = {}
        for meter in self._token_meters:
            estimates.update(meter.token_joules(prefill_tokens, decode_tokens))
        begin = {s.domain: s for s in start}
        end = [
            s._replace(joules=begin[s.domain].joules + sum(estimates[s.domain]))
            if s.domain in estimates and s.domain in begin
            else s
            for s in end
        ]
        if first_token:
            first_token = [
                s._replace(joules=begin[s.domain].joules + estimates[s.domain][0])
                if s.domain in estimates and s.domain in begin
                else s
                for s in first_token
            ]
        return end, first_token

    def _integrate_short_windows(
        self,
        start: list[CounterSample],
        end: list[CounterSample],
        first_token: list[CounterSample] | None,
    ) -> tuple[list[CounterSample], list[CounterSample] | None]:
        """GPU energy counters update about every 100 ms: a shorter window's counter
        delta is mostly quantization, so its energy comes from power samples instead
        (provenance ``integrated``). The first-token sample of such a domain is
        integrated from the same power samples, so prefill and decode split the
        integrated energy, not a raw counter value against an integrated end."""
        begin = {s.domain: s for s in start}
        marks = {s.domain: s for s in first_token} if first_token else {}
        replaced: list[CounterSample] = []
        for sample in end:
            first = begin.get(sample.domain)
            if first is None:
                replaced.append(sample)
                continue
            for integrate in self._short_window:
                joules = integrate(sample.domain, first.t_ns, sample.t_ns)
                if joules is not None:
                    break
            else:
                replaced.append(sample)
                continue
            replaced.append(sample._replace(joules=first.joules + joules, provenance="integrated"))
            mark = marks.get(sample.domain)
            if mark is not None:
                # The same power samples up to the first token (clamped into the
                # window, and to the end's integral so the two agree); by time if
                # that integral fails.
                t_mark = min(max(mark.t_ns, first.t_ns), sample.t_ns)
                part = integrate(sample.domain, first.t_ns, t_mark)
                if part is None:
                    span = sample.t_ns - first.t_ns
                    part = joules * (t_mark - first.t_ns) / span if span > 0 else 0.0
                part = min(max(part, 0.0), joules)
                marks[sample.domain] = mark._replace(
                    joules=first.joules + part, provenance="integrated"
                )
        if first_token:
            first_token = [marks.get(s.domain, s) for s in first_token]
        return replaced, first_token

    def _gpu_stats(self, start: list[CounterSample], end: list[CounterSample]) -> GpuStats | None:
        t0 = min((s.t_ns for s in start), default=0)
        t1 = max((s.t_ns for s in end), default=t0)
        per_gpu: list[dict[str, Any]] = []
        scopes: set[str] = set()
        for meter in self.meters:
            stats = getattr(meter, "gpu_stats", None)
            if stats is None:
                continue
            power_scope = getattr(meter, "power_scope", None)
            for sample in end:
                if sample.domain.startswith("gpu-"):
                    per_gpu.append(stats(sample.domain, t0, t1))
                    scope = power_scope(sample.domain) if power_scope is not None else None
                    if scope is not None:
                        scopes.add(scope)
        if not per_gpu:
            return None
        combined = _combine_gpu_stats(per_gpu)
        if scopes:
            combined.power_scope = scopes.pop() if len(scopes) == 1 else "mixed"
        return combined

    def cloud_reading(
        self, *, provider: str, model: str, completion_tokens: int, latency_s: float
    ) -> EnergyReading:
        """The EcoLogits estimate of a cloud generation, with carbon and cost derived.

        EcoLogits models a request's energy from its output tokens and latency, not its
        prompt, so all of it is decode: ``prefill_joules`` 0, ``decode_joules`` the total.
        """
        from pytest_llmlab.energy.cloud import ecologits_reading

        reading = ecologits_reading(
            provider=provider,
            model=model,
            completion_tokens=completion_tokens,
            latency_s=latency_s,
            zone=self.grid_zone,
        )
        reading = reading.derived(
            completion_tokens=completion_tokens,
            baseline_w=None,
            grid_gco2_per_kwh=self.grid_gco2_per_kwh if self.grid_zone is None else None,
            kwh_price=self.kwh_price,
        )
        if reading.joules is None:
            return reading
        return reading.model_copy(update={"prefill_joules": 0.0, "decode_joules": reading.joules})

    def measure_baseline(
        self, seconds: float, sleep: Callable[[float], None] = time.sleep
    ) -> float:
        """Idle power over `seconds` with nothing running: W summed over domains.

        Sampled in `BASELINE_PARTS` parts; the standard deviation of the parts' powers
        is `baseline_noise_w`."""
        edges = [self.sample()]
        for _ in range(BASELINE_PARTS):
            sleep(seconds / BASELINE_PARTS)
            edges.append(self.sample())
        self.baseline_w = _idle_power(edges[0], edges[-1])
        parts = [_idle_power(a, b) for a, b in itertools.pairwise(edges)]
        self.baseline_noise_w = statistics.stdev(parts) if len(parts) > 1 else None
        return self.baseline_w

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


class EnergyMeter:
    """The ``meter`` fixture: meter any block of code with the session's meters."""

    def __init__(self, meters: MeterSet) -> None:
        self._meters = meters

    @property
    def description(self) -> str:
        """What meters run here and why (the line the terminal summary shows)."""
        return self._meters.description

    @property
    def names(self) -> list[str]:
        return self._meters.names

    @property
    def baseline_w(self) -> float | None:
        return self._meters.baseline_w

    def window(self, label: str = "") -> OpenWindow:
        """``with meter.window("tokenize") as w: ...`` then ``w.reading``.

        Windows may nest and overlap: each reports the gross energy of its own span.
        """
        return self._meters.open(label)


def _idle_power(start: list[CounterSample], end: list[CounterSample]) -> float:
    """W summed over domains between two samplings (0 where no time passed)."""
    if not start or not end:
        return 0.0
    begin = {s.domain: s for s in start}
    joules = sum(max(0.0, s.joules - begin[s.domain].joules) for s in end if s.domain in begin)
    elapsed = (max(s.t_ns for s in end) - min(s.t_ns for s in start)) / 1e9
    return joules / elapsed if elapsed > 0 else 0.0


def _combine_gpu_stats(per_gpu: list[dict[str, Any]]) -> GpuStats:
    """Average the averages, take the max of maxima; memory and power add up over GPUs."""

    def values(key: str) -> list[float]:
        return [float(s[key]) for s in per_gpu if s.get(key) is not None]

    def avg(key: str) -> float | None:
        v = values(key)
        return sum(v) / len(v) if v else None

    def peak(key: str) -> float | None:
        v = values(key)
        return max(v) if v else None

    def total(key: str) -> float | None:
        v = values(key)
        return sum(v) if v else None

    return GpuStats(
        util_avg=avg("util_avg"),
        util_max=peak("util_max"),
        mem_avg_mb=total("mem_avg_mb"),
        mem_peak_mb=total("mem_peak_mb"),
        temp_avg_c=avg("temp_avg_c"),
        temp_max_c=peak("temp_max_c"),
        power_avg_w=total("power_avg_w"),
        power_max_w=total("power_max_w"),
    )
