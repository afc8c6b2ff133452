"""The EnergyReading of one metered span (a generation, or a `meter.window`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from pytest_llmlab.energy.base import CounterSample, Provenance, Window, domain_kind

__all__ = [
    "LOW_CONFIDENCE_BELOW_S",
    "PROVENANCE_ORDER",
    "DomainEnergy",
    "EnergyReading",
    "GpuStats",
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


def weakest(provenances: Iterable[Provenance]) -> Provenance:
    """The weakest of several provenances (``unavailable`` for none)."""
    ranks = [PROVENANCE_ORDER.index(p) for p in provenances]
    return PROVENANCE_ORDER[max(ranks)] if ranks else "unavailable"


class DomainEnergy(BaseModel):
    """The energy of one kind of component (cpu, dram, gpu, or a plugin's)."""

    joules: float
    provenance: Provenance
    domains: list[str] = Field(default_factory=list)  # e.g. ["package-0", "package-1"]


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


class EnergyReading(BaseModel):
    """Energy of one metered span, with where every number comes from.

    ``joules`` is gross (everything the meters saw during the window); ``net_joules``
    subtracts the idle baseline. ``wh_per_1k`` is Wh per 1000 completion tokens: the
    energy-weighted output token, prefill and decode energy amortized over the output.
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
    #: The raw windows (plain dicts) the controller re-attributes at session end.
    windows: list[dict[str, Any]] = Field(default_factory=list, repr=False)

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
        wh = self.joules / 3600.0
        net = None
        if baseline_w is not None:
            net = self.joules - baseline_w * self.duration_s
        return self.model_copy(
            update={
                "wh": wh,
                "wh_per_1k": wh / completion_tokens * 1000.0 if completion_tokens else None,
                "completion_tokens": completion_tokens,
                "avg_power_w": self.joules / self.duration_s if self.duration_s > 0 else None,
                "baseline_w": baseline_w,
                "net_joules": net,
                # An estimator's own carbon figure (EcoLogits' zone) stays unless the
                # user gave an intensity.
                "gco2e": (
                    wh / 1000.0 * grid_gco2_per_kwh if grid_gco2_per_kwh is not None else self.gco2e
                ),
                "cost": wh / 1000.0 * kwh_price if kwh_price is not None else self.cost,
            }
        )


def _delta_by_domain(
    start: Sequence[CounterSample], end: Sequence[CounterSample]
) -> dict[str, tuple[float, Provenance]]:
    begin = {s.domain: s for s in start}
    deltas: dict[str, tuple[float, Provenance]] = {}
    for sample in end:
        first = begin.get(sample.domain)
        if first is not None:
            deltas[sample.domain] = (max(0.0, sample.joules - first.joules), sample.provenance)
    return deltas


def group_by_kind(
    deltas: dict[str, tuple[float, Provenance]],
) -> dict[str, DomainEnergy]:
    """Sum domain deltas into cpu / dram / gpu / other kinds."""
    kinds: dict[str, DomainEnergy] = {}
    for domain, (joules, provenance) in sorted(deltas.items()):
        kind = domain_kind(domain)
        current = kinds.get(kind)
        if current is None:
            kinds[kind] = DomainEnergy(joules=joules, provenance=provenance, domains=[domain])
        else:
            kinds[kind] = DomainEnergy(
                joules=current.joules + joules,
                provenance=weakest([current.provenance, provenance]),
                domains=[*current.domains, domain],
            )
    return kinds


def reading_from_samples(
    *,
    start: Sequence[CounterSample],
    end: Sequence[CounterSample],
    first_token: Sequence[CounterSample] | None,
    meters: Sequence[str],
    windows: Sequence[Window],
    gpu_stats: GpuStats | None = None,
) -> EnergyReading:
    """The gross reading of one window from its edge samples."""
    t_start = min((s.t_ns for s in start), default=0)
    t_end = max((s.t_ns for s in end), default=t_start)
    duration_s = max(0.0, (t_end - t_start) / 1e9)
    deltas = _delta_by_domain(start, end)
    if not deltas:
        return EnergyReading.unavailable("no meter produced a reading", duration_s=duration_s)
    kinds = group_by_kind(deltas)
    total = sum(k.joules for k in kinds.values())
    prefill = decode = None
    if first_token:
        prefill = sum(j for j, _ in _delta_by_domain(start, first_token).values())
        decode = sum(j for j, _ in _delta_by_domain(first_token, end).values())
    provenance = weakest(k.provenance for k in kinds.values())
    low = duration_s < LOW_CONFIDENCE_BELOW_S
    return EnergyReading(
        joules=total,
        cpu=kinds.pop("cpu", None),
        dram=kinds.pop("dram", None),
        gpu=kinds.pop("gpu", None),
        other=kinds,
        prefill_joules=prefill,
        decode_joules=decode,
        duration_s=duration_s,
        provenance=provenance,
        measured=provenance in _MEASURED,
        low_confidence=low,
        low_confidence_reason=(
            f"window of {duration_s:.3f} s is shorter than {LOW_CONFIDENCE_BELOW_S:g} s: "
            "counter updates (1-100 ms) dominate the delta"
            if low
            else None
        ),
        meter=list(meters),
        gpu_stats=gpu_stats,
        windows=[w.to_dict() for w in windows],
    )
