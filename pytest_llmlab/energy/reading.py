"""The EnergyReading of one metered span (a generation, or a `meter.window`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, SkipValidation

from pytest_llmlab.energy.base import (
    CounterSample,
    Provenance,
    counter_doubt,
    domain_kind,
    wrap_fields,
)
from pytest_llmlab.energy.plausibility import (
    join_reasons,
    net_doubt,
    power_doubt,
    wh_per_1k_doubt,
)

__all__ = [
    "LOW_CONFIDENCE_BELOW_S",
    "PROVENANCE_ORDER",
    "DomainEnergy",
    "EnergyReading",
    "GpuStats",
    "split_at_first_token",
    "weakest",
]

#: Windows shorter than this are flagged: counters update every 1-100 ms (RAPL, NVML,
#: clock ticks), so a short window's delta is mostly quantization.
LOW_CONFIDENCE_BELOW_S = 1.0

#: From strongest to weakest evidence. A total is only as strong as its weakest part.
PROVENANCE_ORDER: tuple[Provenance, ...] = (
    "measured",
    "measured-apportioned",
    "integrated",
    "replayed",
    "estimated",
    "unavailable",
)
_MEASURED: frozenset[str] = frozenset({"measured", "measured-apportioned", "integrated"})


_RANK: dict[str, int] = {p: i for i, p in enumerate(PROVENANCE_ORDER)}


def weakest(provenances: Iterable[Provenance]) -> Provenance:
    """The weakest of several provenances (``unavailable`` for none)."""
    worst = max((_RANK[p] for p in provenances), default=len(PROVENANCE_ORDER) - 1)
    return PROVENANCE_ORDER[worst]


class DomainEnergy(BaseModel):
    """The energy of one kind of component (cpu, dram, gpu, or a plugin's)."""

    joules: float
    provenance: Provenance
    domains: list[str] = Field(default_factory=list)  # e.g. ["package-0", "package-1"]
    #: How a person names a domain, where its meter says: GPU domains are named by UUID
    #: (``gpu-GPU-8f3c...``), labelled by their position in this process's visible list
    #: (``"gpu 0 (NVIDIA H100 80GB HBM3)"``).
    labels: dict[str, str] = Field(default_factory=dict)


class GpuStats(BaseModel):
    """What the GPU sampler saw during the window (None where NVML does not say)."""

    util_avg: float | None = None
    util_max: float | None = None
    mem_avg_mb: float | None = None
    mem_peak_mb: float | None = None
    temp_avg_c: float | None = None
    temp_max_c: float | None = None
    power_avg_w: float | None = None
    power_max_w: float | None = None
    #: What the power figures cover: ``module`` (the whole module, e.g. Grace Hopper's
    #: GPU + CPU + memory, as its energy counter does), ``gpu``, or ``mixed`` (GPUs
    #: read at different scopes); None where no power is read.
    power_scope: str | None = None


class EnergyReading(BaseModel):
    """Energy of one metered span, with where every number comes from.

    ``joules`` is gross (everything the meters saw during the window); ``net_joules``
    subtracts the idle baseline. ``wh_per_1k`` is Wh per 1000 completion tokens: the
    energy-weighted output token, prefill and decode energy amortized over the output.

    ``prefill_joules`` (to the first output token) and ``decode_joules`` (after it) are
    both set or both None (no first token: a `meter.window`); when set, each lies in
    ``[0, joules]`` and they add up to ``joules``, whatever path the energy took.
    """

    joules: float | None
    cpu: DomainEnergy | None = None
    dram: DomainEnergy | None = None
    gpu: DomainEnergy | None = None
    #: Components from third-party meters, by kind (``pdu``, ``plug``...).
    other: dict[str, DomainEnergy] = Field(default_factory=dict)
    wh: float | None = None
    wh_per_1k: float | None = None
    completion_tokens: int | None = None
    prefill_joules: float | None = None
    decode_joules: float | None = None
    duration_s: float = 0.0
    avg_power_w: float | None = None
    baseline_w: float | None = None
    net_joules: float | None = None
    provenance: Provenance = "unavailable"
    measured: bool = False
    low_confidence: bool = False
    low_confidence_reason: str | None = None
    #: Why there is no energy, or what the estimate is based on.
    note: str | None = None
    meter: list[str] = Field(default_factory=list)
    gpu_stats: GpuStats | None = None
    gco2e: float | None = None
    cost: float | None = None
    #: The raw windows (plain dicts) the controller re-attributes at session end. Built
    #: by `MeterSet` itself, so not re-validated (that copied every dict per window).
    windows: SkipValidation[list[dict[str, Any]]] = Field(default_factory=list, repr=False)

    @classmethod
    def unavailable(cls, reason: str, *, duration_s: float = 0.0) -> EnergyReading:
        return cls(joules=None, duration_s=duration_s, provenance="unavailable", note=reason)

    def derived(
        self,
        *,
        completion_tokens: int | None,
        baseline_w: float | None,
        grid_gco2_per_kwh: float | None,
        kwh_price: float | None,
    ) -> EnergyReading:
        """Fill the figures computed from joules: Wh, Wh/1k, net, carbon, cost."""
        if self.joules is None:
            return self.model_copy(update={"completion_tokens": completion_tokens})
        return self.model_copy(
            update=derived_figures(
                self.joules,
                self.duration_s,
                completion_tokens=completion_tokens,
                baseline_w=baseline_w,
                grid_gco2_per_kwh=grid_gco2_per_kwh,
                kwh_price=kwh_price,
                gco2e=self.gco2e,
                cost=self.cost,
            )
        )


def derived_figures(
    joules: float,
    duration_s: float,
    *,
    completion_tokens: int | None,
    baseline_w: float | None,
    grid_gco2_per_kwh: float | None,
    kwh_price: float | None,
    gco2e: float | None = None,
    cost: float | None = None,
) -> dict[str, Any]:
    """Wh, Wh/1k, average power, net energy, carbon and cost from the total joules.

    An estimator's own carbon figure (EcoLogits' zone) and cost stay unless the user
    gave an intensity or a price.
    """
    wh = joules / 3600.0
    return {
        "wh": wh,
        "wh_per_1k": wh / completion_tokens * 1000.0 if completion_tokens else None,
        "completion_tokens": completion_tokens,
        "avg_power_w": joules / duration_s if duration_s > 0 else None,
        "baseline_w": baseline_w,
        "net_joules": joules - baseline_w * duration_s if baseline_w is not None else None,
        "gco2e": wh / 1000.0 * grid_gco2_per_kwh if grid_gco2_per_kwh is not None else gco2e,
        "cost": wh / 1000.0 * kwh_price if kwh_price is not None else cost,
    }


def split_at_first_token(
    parts: Sequence[tuple[CounterSample, CounterSample, float]],
    first_token: Sequence[CounterSample],
    total: float,
) -> tuple[float, float]:
    """``(prefill, decode)`` of a window whose domains are ``parts``: (start sample, end
    sample, the domain's joules, never negative) and ``total`` their sum.

    Each domain's prefill is its counter at the first token minus its start, clamped to
    ``[0, its joules]`` (a counter read raw at the first token can lie beyond an end
    that was integrated, or quantized back); a domain not sampled at the first token is
    split by time there. Decode is the rest, so ``prefill + decode == total`` and both
    lie in ``[0, total]`` on every path.
    """
    marks: dict[str, CounterSample] = {}
    t_mark = first_token[0].t_ns
    for sample in first_token:
        marks[sample.domain] = sample
        t_mark = max(t_mark, sample.t_ns)
    prefill = 0.0
    for first, last, joules in parts:
        mark = marks.get(first.domain)
        if mark is not None:
            part = mark.joules - first.joules
        elif last.t_ns > first.t_ns:
            part = joules * (t_mark - first.t_ns) / (last.t_ns - first.t_ns)
        else:
            part = 0.0
        prefill += min(max(part, 0.0), joules)
    prefill = min(prefill, total)
    return prefill, total - prefill


def reading_from_samples(
    *,
    start: Sequence[CounterSample],
    end: Sequence[CounterSample],
    first_token: Sequence[CounterSample] | None,
    meters: Sequence[str],
    window: dict[str, Any] | None = None,
    gpu_stats: GpuStats | None = None,
    note: str | None = None,
    completion_tokens: int | None = None,
    baseline_w: float | None = None,
    grid_gco2_per_kwh: float | None = None,
    kwh_price: float | None = None,
    labels: Mapping[str, str] | None = None,
    power_limits_w: Mapping[str, float] | None = None,
    baseline_noise_w: float | None = None,
) -> EnergyReading:
    """The gross reading of one window from its edge samples, every figure filled.

    ``window`` (``window_id``, ``host``, ``process``, ``segments``) names the window:
    the reading then carries one `Window` dict per domain for session-end attribution.
    ``labels`` (domain -> how a person names it) go on the components that have them.
    ``first_token`` splits the energy into prefill and decode (`split_at_first_token`).
    ``power_limits_w`` (domain -> the device's stated maximum power) and
    ``baseline_noise_w`` (stdev of idle power) feed the plausibility checks
    (`energy.plausibility`): a reading outside physical bounds is low-confidence.

    Runs at every generation's end (the bench's 100 us window target), so it makes one
    pass over the samples and builds each pydantic model once.
    """
    # Plain loops, no generator expressions: this is the hot end of every generation.
    begin: dict[str, CounterSample] = {}
    t_start = start[0].t_ns if start else 0
    for sample in start:
        begin[sample.domain] = sample
        t_start = min(t_start, sample.t_ns)
    t_end = t_start
    total = 0.0
    worst = 0
    # kind -> (joules, worst provenance rank, domains), in sample order.
    kinds: dict[str, tuple[float, int, list[str]]] = {}
    windows: list[dict[str, Any]] = []
    parts: list[tuple[CounterSample, CounterSample, float]] = []
    doubt: str | None = None  # why a counter's delta cannot be trusted (RAPL wraps)
    implausible: list[str | None] = []  # power outside a domain's physical bounds
    for sample in end:
        first = begin.get(sample.domain)
        if first is None:
            continue
        if window is not None:
            # The fields of `Window`, as the plain dict records carry.
            windows.append(
                {
                    "window_id": window["window_id"],
                    "host": window["host"],
                    "process": window["process"],
                    "domain": sample.domain,
                    "t_start_ns": first.t_ns,
                    "t_end_ns": sample.t_ns,
                    "counter_start_j": first.joules,
                    "counter_end_j": sample.joules,
                    "wrap_j": sample.wrap_j,
                    "provenance": sample.provenance,
                    "segments": window["segments"],
                }
            )
            if sample.wrap_j:
                windows[-1].update(wrap_fields(first, sample))  # RAPL's wrap evidence
        if sample.events:
            doubt = doubt or counter_doubt(first, sample)
        t_end = max(t_end, sample.t_ns)
        joules = sample.joules - first.joules
        if joules < 0 or power_limits_w:
            span_s = (sample.t_ns - first.t_ns) / 1e9
            if joules < 0 or span_s >= LOW_CONFIDENCE_BELOW_S:
                limit = power_limits_w.get(sample.domain) if power_limits_w else None
                implausible.append(power_doubt(sample.domain, joules, span_s, limit))
        joules = max(joules, 0.0)
        rank = _RANK[sample.provenance]
        worst = max(worst, rank)
        total += joules
        if first_token:
            parts.append((first, sample, joules))
        kind = domain_kind(sample.domain)
        previous = kinds.get(kind)
        if previous is None:
            kinds[kind] = (joules, rank, [sample.domain])
        else:
            previous[2].append(sample.domain)
            kinds[kind] = (previous[0] + joules, max(previous[1], rank), previous[2])
    duration_s = (t_end - t_start) / 1e9 if t_end > t_start else 0.0
    if not kinds:
        return EnergyReading.unavailable("no meter produced a reading", duration_s=duration_s)
    components = {
        kind: DomainEnergy(
            joules=j,
            provenance=PROVENANCE_ORDER[r],
            domains=d,
            labels={x: labels[x] for x in d if x in labels} if labels else {},
        )
        for kind, (j, r, d) in kinds.items()
    }
    provenance = PROVENANCE_ORDER[worst]
    prefill = decode = None
    if first_token:
        prefill, decode = split_at_first_token(parts, first_token, total)
    low = duration_s < LOW_CONFIDENCE_BELOW_S
    reason = (
        f"window of {duration_s:.3f} s is shorter than {LOW_CONFIDENCE_BELOW_S:g} s: "
        "counter updates (1-100 ms) dominate the delta"
        if low
        else None
    )
    if doubt is not None:
        reason = doubt if reason is None else f"{reason}; {doubt}"
    figures = derived_figures(
        total,
        duration_s,
        completion_tokens=completion_tokens,
        baseline_w=baseline_w,
        grid_gco2_per_kwh=grid_gco2_per_kwh,
        kwh_price=kwh_price,
    )
    implausible.append(
        net_doubt(
            figures["net_joules"],
            baseline_w=baseline_w,
            noise_w=baseline_noise_w,
            duration_s=duration_s,
        )
    )
    implausible.append(
        wh_per_1k_doubt(joules=total, decode_joules=decode, completion_tokens=completion_tokens)
    )
    reason = join_reasons(reason, implausible)
    return EnergyReading(
        joules=total,
        cpu=components.pop("cpu", None),
        dram=components.pop("dram", None),
        gpu=components.pop("gpu", None),
        other=components,
        prefill_joules=prefill,
        decode_joules=decode,
        duration_s=duration_s,
        provenance=provenance,
        measured=provenance in _MEASURED,
        low_confidence=reason is not None,
        low_confidence_reason=reason,
        note=note,
        meter=list(meters),
        gpu_stats=gpu_stats,
        windows=windows,
        **figures,
    )
