"""Prefill + decode = total on every energy path, each within [0, total].

Property tests over synthetic samples: counters read raw (quantized, out of order with
the end, missing at the first token), power integrated, both mixed in one reading, the
CPU estimate, windows shorter than the counter period (their end and first-token
samples integrated from power) and the EcoLogits cloud estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.energy.base import CounterSample, Provenance
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.energy.reading import EnergyReading, reading_from_samples

DOMAINS = (
    "package-0",
    "dram-0",
    "gpu-GPU-8f3c0e1a-aaaa-4bbb-8ccc-000000000000",
    "gpu-GPU-22222222-dddd-4eee-8fff-000000000000",
    "cpu-estimate",
    "plug-0",
)
PERIOD_NS = 100_000_000  # the fake GPU counter's update period

joules = st.floats(min_value=-1e6, max_value=1e9, allow_nan=False, allow_infinity=False)
PATHS: dict[str, st.SearchStrategy[Provenance]] = {
    "counter": st.just("measured"),
    "integrated": st.just("integrated"),
    "mixed": st.sampled_from(["measured", "integrated"]),
    "estimate": st.sampled_from(["estimated", "measured"]),
}


def assert_split(reading: EnergyReading) -> None:
    """The invariant: both set, each in [0, total], adding up to the total."""
    total, prefill, decode = reading.joules, reading.prefill_joules, reading.decode_joules
    assert total is not None and prefill is not None and decode is not None
    assert 0.0 <= prefill <= total
    assert 0.0 <= decode <= total
    assert prefill + decode == pytest.approx(total, rel=1e-12, abs=1e-9)


@st.composite
def windows(
    draw: st.DrawFn, provenance: st.SearchStrategy[Provenance]
) -> tuple[list[CounterSample], list[CounterSample], list[CounterSample]]:
    """(start, first token, end) of one window: counters anywhere, first-token values
    beyond either edge, a domain now and then not sampled at the first token."""
    domains = draw(st.lists(st.sampled_from(DOMAINS), min_size=1, unique=True))
    t0 = draw(st.integers(0, 10**15))
    t_first = t0 + draw(st.integers(0, 10**10))
    t_end = t_first + draw(st.integers(0, 10**10))
    start, first, end = [], [], []
    for domain in domains:
        how = draw(provenance)
        # Each sample is read a little apart, as a meter reads domain after domain.
        start.append(CounterSample(domain, draw(joules), t0 + draw(st.integers(0, 1000)), 0, how))
        if draw(st.booleans()) or domain == domains[0]:
            first.append(CounterSample(domain, draw(joules), t_first, provenance=how))
        end.append(CounterSample(domain, draw(joules), t_end + draw(st.integers(0, 1000)), 0, how))
    return start, first, end


@pytest.mark.parametrize("path", sorted(PATHS))
def test_prefill_plus_decode_is_the_total_on_every_path(path: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(windows(PATHS[path]))
    def check(
        window: tuple[list[CounterSample], list[CounterSample], list[CounterSample]],
    ) -> None:
        start, first, end = window
        reading = reading_from_samples(start=start, end=end, first_token=first, meters=["x"])
        assert_split(reading)

    check()


class ShortWindowMeter:
    """A GPU-like meter: raw counters, and power integrals for windows shorter than
    its counter period (`NvmlMeter.short_window_joules`)."""

    name = "fake-gpu"

    def __init__(self, power_w: dict[str, float]) -> None:
        self.power_w = power_w

    def sample(self) -> list[CounterSample]:  # the tests pass samples in directly
        raise NotImplementedError

    def close(self) -> None:
        pass

    def short_window_joules(self, domain: str, t0_ns: int, t1_ns: int) -> float | None:
        watts = self.power_w.get(domain)
        if watts is None or t1_ns - t0_ns >= PERIOD_NS:
            return None
        return watts * (t1_ns - t0_ns) / 1e9


def _samples(
    values: Sequence[tuple[str, float]], t_ns: int, provenance: Provenance = "measured"
) -> list[CounterSample]:
    return [CounterSample(d, j, t_ns, provenance=provenance) for d, j in values]


@settings(max_examples=200, deadline=None)
@given(
    gpus=st.lists(
        st.tuples(st.sampled_from(DOMAINS[2:4]), joules, joules, joules, st.floats(0.0, 2_000.0)),
        min_size=1,
        max_size=2,
        unique_by=lambda g: g[0],
    ),
    package=st.none() | st.tuples(joules, joules, joules),
    t_first_ns=st.integers(0, 3 * PERIOD_NS),
    t_end_ns=st.integers(0, 3 * PERIOD_NS),
)
def test_short_windows_split_the_integrated_energy(
    gpus: list[tuple[str, float, float, float, float]],
    package: tuple[float, float, float] | None,
    t_first_ns: int,
    t_end_ns: int,
) -> None:
    """Through `MeterSet.build_reading`: windows shorter than the counter period are
    integrated at both the first token and the end, so prefill is the power integral
    up to the first token; longer ones keep the raw counters. A RAPL-like package
    counter rides along (the mixed path)."""
    t0 = 10**12
    t_end = t0 + t_end_ns
    t_first = t0 + min(t_first_ns, t_end_ns)
    meter = ShortWindowMeter({g[0]: g[4] for g in gpus})
    meters = MeterSet([meter], "fake")
    start = _samples([(g[0], g[1]) for g in gpus], t0)
    first = _samples([(g[0], g[2]) for g in gpus], t_first)
    end = _samples([(g[0], g[3]) for g in gpus], t_end)
    if package is not None:
        start += _samples([("package-0", package[0])], t0)
        first += _samples([("package-0", package[1])], t_first)
        end += _samples([("package-0", package[2])], t_end)
    reading = meters.build_reading(start, end, first, (), 10)
    assert_split(reading)
    if t_end_ns < PERIOD_NS and package is None:
        watts = sum(g[4] for g in gpus)
        # Integrals ride on the start counter: they are exact up to its rounding.
        tol = 1e-9 + 1e-15 * max(abs(g[1]) for g in gpus)
        assert reading.provenance == "integrated"
        assert reading.joules == pytest.approx(watts * t_end_ns / 1e9, rel=1e-9, abs=tol)
        assert reading.prefill_joules == pytest.approx(
            watts * (t_first - t0) / 1e9, rel=1e-9, abs=tol
        )


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_cloud_estimates_are_all_decode(kwh_joules: float) -> None:
    """EcoLogits models energy from output tokens and latency: prefill 0, decode all."""
    from pytest_llmlab.energy import cloud

    def estimate(**_: object) -> EnergyReading:
        return EnergyReading(joules=kwh_joules, duration_s=2.0, provenance="estimated")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cloud, "ecologits_reading", estimate)
        reading = MeterSet([], "none").cloud_reading(
            provider="openai", model="m", completion_tokens=10, latency_s=2.0
        )
    assert_split(reading)
    assert reading.prefill_joules == 0.0 and reading.decode_joules == reading.joules


def test_real_ecologits_estimate_is_split_too() -> None:
    pytest.importorskip("ecologits")
    reading = MeterSet([], "none").cloud_reading(
        provider="openai", model="gpt-4o-mini", completion_tokens=100, latency_s=2.0
    )
    assert_split(reading)


def test_unavailable_and_unsplit_readings_have_no_split() -> None:
    unknown = MeterSet([], "none").cloud_reading(
        provider="vllm", model="m", completion_tokens=1, latency_s=1.0
    )
    assert unknown.joules is None
    assert unknown.prefill_joules is None and unknown.decode_joules is None
    # No first token (a `meter.window`): nothing to split at.
    plain = reading_from_samples(
        start=_samples([("package-0", 1.0)], 0),
        end=_samples([("package-0", 3.0)], 10),
        first_token=None,
        meters=["x"],
    )
    assert plain.joules == 2.0
    assert plain.prefill_joules is None and plain.decode_joules is None


def test_a_domain_missing_at_the_first_token_is_split_by_time() -> None:
    reading = reading_from_samples(
        start=_samples([("package-0", 0.0), ("dram-0", 0.0)], 0),
        first_token=_samples([("package-0", 4.0)], 25),
        end=_samples([("package-0", 10.0), ("dram-0", 8.0)], 100),
        meters=["x"],
    )
    assert reading.prefill_joules == pytest.approx(4.0 + 8.0 * 0.25)
    assert reading.decode_joules == pytest.approx(6.0 + 8.0 * 0.75)
