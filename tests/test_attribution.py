"""Tests of `attribute`: hand-computed examples, then properties on random counters.

The properties run on a synthetic device: a piecewise-linear cumulative counter with
integer power per time step, sampled at window edges. In the cross-process scenarios
each process sees the raw register (the true counter modulo ``wrap_j``) and unfolds
wraps on its own, starting from its own wrap count, so its values differ from the other
processes' by whole wraps, as RAPL's do between xdist workers.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.energy.attribution import Attributed, attribute
from pytest_llmlab.energy.base import CounterEvent, TokenSegment, Window

S = 1_000_000_000  # ns per second


def win(
    window_id: str,
    start_s: float,
    end_s: float,
    c0: float,
    c1: float,
    *,
    process: str = "h:1",
    host: str = "h",
    domain: str = "package-0",
    wrap: float = 0.0,
    segments: tuple[tuple[float, float, int], ...] = (),
) -> Window:
    """A window with times in seconds and segments as (t0_s, t1_s, tokens)."""
    return Window(
        window_id=window_id,
        host=host,
        process=process,
        domain=domain,
        t_start_ns=round(start_s * S),
        t_end_ns=round(end_s * S),
        counter_start_j=c0,
        counter_end_j=c1,
        wrap_j=wrap,
        segments=tuple(TokenSegment(round(a * S), round(b * S), n) for a, b, n in segments),
    )


def joules(result: dict[str, dict[str, Attributed]], domain: str = "package-0") -> dict[str, float]:
    return {wid: by_domain[domain].joules for wid, by_domain in result.items()}


# -- examples computed by hand -------------------------------------------------------


def test_two_overlapping_windows_in_one_process() -> None:
    """[0,5] is W1's alone (50 J), [5,10] is shared evenly (50 J), [10,15] W2's (60 J)."""
    result = attribute([win("w1", 0, 10, 100, 200), win("w2", 5, 15, 150, 260)])
    w1, w2 = result["w1"]["package-0"], result["w2"]["package-0"]
    assert (w1.joules, w2.joules) == pytest.approx((75.0, 85.0))
    assert (w1.gross_joules, w2.gross_joules) == (100.0, 110.0)
    assert w1.shared and w2.shared
    assert (w1.share, w2.share) == pytest.approx((0.75, 85 / 110))
    assert w1.warning is None and w2.warning is None


def test_two_processes_with_wrapping_counter() -> None:
    """Process 2 unfolded one wrap fewer: its values are the device's minus 1000 J.

    Device counter: 900 at 0 s, 1060 at 4 s, 1140 at 6 s, 1300 at 10 s. Slices: 160 J
    for A alone, 80 J shared, 160 J for A alone.
    """
    a = win("a", 0, 10, 900, 1300, process="h:1", wrap=1000)
    b = win("b", 4, 6, 60, 140, process="h:2", wrap=1000)
    result = attribute([a, b])
    assert joules(result) == pytest.approx({"a": 360.0, "b": 40.0})
    assert result["a"]["package-0"].gross_joules == 400.0
    assert result["b"]["package-0"].share == pytest.approx(0.5)


def test_slice_longer_than_a_wrap_keeps_its_wraps() -> None:
    """A 100 s window at 20 W (2000 J) around a 1 s window of another process, with a
    500 J range. The tail slice [46 s, 100 s] holds 1080 J; taken modulo the range it
    would be 80 J. The 45 s gap before B could hold 400, 900, 1400 or 1900 J: A's average
    power says 900, so B's offset is three wraps and every slice stays whole."""
    a = win("a", 0, 100, 0, 2000, process="h:1", wrap=500)
    b = win("b", 45, 46, 2400, 2420, process="h:2", wrap=500)  # device + 3 wraps
    result = attribute([a, b])
    assert joules(result) == pytest.approx({"a": 1990.0, "b": 10.0})


def test_ambiguous_gap_takes_the_wrap_count_nearest_the_estimate() -> None:
    """20 W throughout, a 100 J range, so every slice holds more than one wrap. A and C
    (process 1) and B (process 2, device + 3 wraps). The closest cross-process pair,
    B's end at 70 s and C's at 75 s, could be 0, 100, ..., 500 J apart (C's 500 J
    bounds it); C's average power says 100 J. By hand: [0,40] 800 A; [40,50] 200 A/B;
    [50,70] 400 A/B/C; [70,75] 100 A/C; [75,100] 500 A."""
    result = attribute(
        [
            win("a", 0, 100, 0, 2000, process="h:1", wrap=100),
            win("b", 40, 70, 1100, 1700, process="h:2", wrap=100),
            win("c", 50, 75, 1000, 1500, process="h:1", wrap=100),
        ]
    )
    third = 400 / 3
    assert joules(result) == pytest.approx(
        {"a": 800 + 100 + third + 50 + 500, "b": 100 + third, "c": third + 50}
    )


def test_offsets_come_from_the_closest_samples() -> None:
    """38 W for 50 s, then 2 W. Judged by A's average power, the 80 s gap before B
    would be 1600 J, and the 500 J range would put it at 1460 J instead of 1960 J; the
    5 s gaps between B and C, bounded by B's 20 J, leave no choice. By hand:
    [0,80] 1960 A; [80,85] 10 A/B; [85,90] 10 A/B/C; [90,95] 10 A/C; [95,100] 10 A."""
    result = attribute(
        [
            win("a", 0, 100, 0, 2000, process="h:1", wrap=500),
            win("b", 80, 90, 2960, 2980, process="h:2", wrap=500),  # device + 2 wraps
            win("c", 85, 95, 1970, 1990, process="h:1", wrap=500),
        ]
    )
    third = 10 / 3
    assert joules(result) == pytest.approx(
        {"a": 1960 + 5 + third + 5 + 10, "b": 5 + third, "c": third + 5}
    )
    assert all(r["package-0"].warning is None for r in result.values())


def test_gap_is_bounded_by_the_smallest_covering_window() -> None:
    """120 W for 5 s, then 2 W. X (process 1) [0,10] holds 610 J, Y (process 2, device
    + 1 wrap) [6,36] only 60 J. The closest pair, Y's start and X's end 4 s later,
    could be 8, 108, 208... J apart; X's average power would say 244 J, but Y around
    the gap caps it at 60 J. By hand: [0,6] 602 X; [6,10] 8 X/Y; [10,36] 52 Y."""
    result = attribute(
        [
            win("x", 0, 10, 0, 610, process="h:1", wrap=100),
            win("y", 6, 36, 702, 762, process="h:2", wrap=100),
        ]
    )
    assert joules(result) == pytest.approx({"x": 606.0, "y": 56.0})


def test_nested_windows_even_then_token_weighted() -> None:
    """10 W; W2 [2,4] inside W1 [0,10]. Without tokens the 20 J of [2,4] split evenly;
    with tokens W1 processed 6 there (30 over 10 s) and W2 14, so 6:14."""
    even = attribute([win("w1", 0, 10, 0, 100), win("w2", 2, 4, 20, 40)])
    assert joules(even) == pytest.approx({"w1": 90.0, "w2": 10.0})
    weighted = attribute(
        [
            win("w1", 0, 10, 0, 100, segments=((0, 10, 30),)),
            win("w2", 2, 4, 20, 40, segments=((2, 4, 14),)),
        ]
    )
    assert joules(weighted) == pytest.approx({"w1": 86.0, "w2": 14.0})


def test_unknown_tokens_in_one_window_make_the_split_even() -> None:
    result = attribute(
        [
            win("w1", 0, 10, 0, 100, segments=((0, 10, 30),)),
            win("w2", 2, 4, 20, 40),
        ]
    )
    assert joules(result) == pytest.approx({"w1": 90.0, "w2": 10.0})


def test_touching_windows_do_not_overlap() -> None:
    """W2 starts where W1 ends; even with a different reading at that instant (another
    process), each keeps exactly its own delta."""
    result = attribute(
        [
            win("w1", 0, 10, 0, 100),
            win("w2", 10, 20, 100, 250),
            win("w3", 20, 30, 251, 300, process="h:2"),
        ]
    )
    assert joules(result) == {"w1": 100.0, "w2": 150.0, "w3": 49.0}
    for by_domain in result.values():
        assert not by_domain["package-0"].shared
        assert by_domain["package-0"].share == 1.0


def test_different_hosts_never_share() -> None:
    result = attribute([win("a", 0, 10, 0, 100, host="h1"), win("b", 0, 10, 5, 55, host="h2")])
    assert joules(result) == {"a": 100.0, "b": 50.0}
    assert not result["a"]["package-0"].shared


def test_different_domains_never_share() -> None:
    """One span's windows in two domains: keyed by domain, each its own delta."""
    result = attribute(
        [
            win("a", 0, 10, 0, 100, domain="package-0"),
            win("a", 0, 10, 0, 30, domain="dram-0"),
            win("b", 5, 15, 50, 150, domain="gpu-0"),
        ]
    )
    assert result["a"]["package-0"].joules == 100.0
    assert result["a"]["dram-0"].joules == 30.0
    assert result["b"]["gpu-0"].joules == 100.0
    assert not any(r.shared for by_domain in result.values() for r in by_domain.values())


def test_idle_stretch_between_segments_splits_evenly() -> None:
    """10 W. In [4,6] none of the three windows processed a token, so its 20 J split
    evenly, even though W1's overlapping segments before it leave rates that do not
    cancel exactly in floating point. [0,4] (40 J) is W1's by tokens, [6,10] (40 J)
    splits 1:1 between W1 and W2."""
    result = attribute(
        [
            win("w1", 0, 10, 0, 100, segments=((0, 3, 1), (1, 2, 2), (8, 10, 1))),
            win("w2", 0, 10, 0, 100, segments=((8, 10, 1),)),
            win("w3", 4, 6, 40, 60, segments=((4, 6, 0),)),
        ]
    )
    third = 20 / 3
    assert joules(result) == pytest.approx({"w1": 40 + third + 20, "w2": third + 20, "w3": third})


def test_token_at_the_window_end_counts_in_its_last_slice() -> None:
    """10 W. W1's 5 tokens are stamped at its closing edge (t = 10 s); W2 [5,10]
    processed 5. [5,10] (50 J) splits 5:5, not 0:5."""
    result = attribute(
        [
            win("w1", 0, 10, 0, 100, segments=((10, 10, 5),)),
            win("w2", 5, 10, 50, 100, segments=((5, 10, 5),)),
        ]
    )
    assert joules(result) == pytest.approx({"w1": 75.0, "w2": 25.0})


def test_token_instant_on_a_cut_counts_in_the_slice_it_starts() -> None:
    """10 W. W1's 10 tokens at t = 5 s fall in [5,10), not [0,5): [0,5] goes to W2
    (5 tokens against 0); [5,10] splits 10:5:0 among W1, W2 and W3."""
    result = attribute(
        [
            win("w1", 0, 10, 0, 100, segments=((5, 5, 10),)),
            win("w2", 0, 10, 0, 100, segments=((0, 10, 10),)),
            win("w3", 5, 10, 50, 100, segments=((5, 10, 0),)),
        ]
    )
    assert joules(result) == pytest.approx({"w1": 100 / 3, "w2": 50 + 50 / 3, "w3": 0.0})


def test_zero_duration_window_keeps_its_own_delta() -> None:
    result = attribute([win("w1", 0, 10, 0, 100), win("w2", 5, 5, 50, 50)])
    assert joules(result) == {"w1": 100.0, "w2": 0.0}
    assert not result["w1"]["package-0"].shared


def test_negative_slice_is_clamped_and_warned() -> None:
    """Edges at 0/5/10/15 s read 0/150/100/200: [5,10] comes out -50 J (bad data)."""
    result = attribute(
        [win("w1", 0, 10, 0, 100), win("w2", 5, 15, 150, 200), win("w3", 20, 30, 300, 400)]
    )
    assert joules(result) == pytest.approx({"w1": 150.0, "w2": 100.0, "w3": 100.0})
    for wid in ("w1", "w2"):
        warning = result[wid]["package-0"].warning
        assert warning is not None and "negative" in warning
    assert result["w3"]["package-0"].warning is None


def test_lone_window_with_backwards_counter_is_clamped_and_warned() -> None:
    result = attribute([win("w1", 0, 10, 100, 40)])["w1"]["package-0"]
    assert (result.joules, result.gross_joules) == (0.0, -60.0)
    assert result.warning is not None and "backwards" in result.warning


def test_disagreeing_wrap_ranges_are_warned() -> None:
    result = attribute(
        [win("a", 0, 10, 0, 100, wrap=1000), win("b", 20, 30, 0, 100, process="h:2", wrap=500)]
    )
    assert all("wrap_j" in (r["package-0"].warning or "") for r in result.values())


def test_window_ending_before_it_starts_is_an_error() -> None:
    with pytest.raises(ValueError, match="'bad'.*ends before it starts"):
        attribute([win("ok", 0, 10, 0, 1), win("bad", 10, 9, 0, 1)])


def test_same_window_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'w1'.*appears twice"):
        attribute([win("w1", 0, 10, 0, 1), win("w1", 20, 30, 0, 1)])


def test_non_finite_counter_is_an_error() -> None:
    with pytest.raises(ValueError, match="'w1'.*non-finite"):
        attribute([win("w1", 0, 10, 0, float("nan"))])


# -- properties on a synthetic device ------------------------------------------------

PROCESSES = ("h:1", "h:2", "h:3")
PROPERTIES = settings(max_examples=200, derandomize=True, database=None, deadline=None)


@dataclass(frozen=True)
class Device:
    """A cumulative counter with integer power per 1 ns step, read by processes that
    unfold wraps on their own."""

    energy: tuple[int, ...]  # true cumulative energy at t = 0, 1, 2, ...
    wrap: int  # 0: does not wrap
    base: int  # register value at t = 0
    first_wraps: tuple[int, ...]  # wrap count each process started from

    def read(self, t: int, process: str) -> float:
        """What ``process`` reports at ``t``: raw register plus its own wrap count."""
        if self.wrap == 0:
            return float(self.energy[t])
        total = self.energy[t] + self.base
        raw = total % self.wrap
        seen = total // self.wrap - self.first_wraps[PROCESSES.index(process)]
        return float(raw + seen * self.wrap)

    def between(self, t0: int, t1: int) -> int:
        return self.energy[t1] - self.energy[t0]


@dataclass(frozen=True)
class Span:
    """A window before it is read: edges, process, token segments."""

    start: int
    end: int
    process: str
    segments: tuple[TokenSegment, ...] = ()


def make_windows(device: Device, spans: list[Span]) -> list[Window]:
    return [
        Window(
            window_id=f"w{i}",
            host="h",
            process=s.process,
            domain="package-0",
            t_start_ns=s.start,
            t_end_ns=s.end,
            counter_start_j=device.read(s.start, s.process),
            counter_end_j=device.read(s.end, s.process),
            wrap_j=float(device.wrap),
            segments=s.segments,
        )
        for i, s in enumerate(spans)
    ]


def union_energy(device: Device, spans: list[Span]) -> int:
    """The true energy over the union of the spans (merged intervals)."""
    total, reach = 0, None
    for s in sorted(spans, key=lambda s: s.start):
        if reach is None or s.start > reach:
            total += device.between(s.start, s.end)
            reach = s.end
        elif s.end > reach:
            total += device.between(reach, s.end)
            reach = s.end
    return total


@st.composite
def devices(draw: st.DrawFn, horizon: int = 40, wrapping: bool | None = None) -> Device:
    """A device over [0, horizon]. When it wraps, the range exceeds the whole run's
    energy, so no data is ambiguous; scenes that need a tighter range narrow it."""
    powers = draw(st.lists(st.integers(0, 30), min_size=horizon, max_size=horizon))
    energy = [0]
    for p in powers:
        energy.append(energy[-1] + p)
    if wrapping is None:
        wrapping = draw(st.booleans())
    wrap = energy[-1] + draw(st.integers(1, 40)) if wrapping else 0
    base = draw(st.integers(0, max(wrap - 1, 0)))
    first = tuple(draw(st.integers(-3, 3)) for _ in PROCESSES)
    return Device(tuple(energy), wrap, base, first)


def segments_for(draw: st.DrawFn, start: int, end: int) -> tuple[TokenSegment, ...]:
    """Random token segments within a span: stretches and instants (edges included)."""
    count = draw(st.integers(0, 3))
    result = []
    for _ in range(count):
        t0 = draw(st.integers(start, end))
        t1 = draw(st.integers(t0, end))
        result.append(TokenSegment(t0, t1, draw(st.integers(0, 50))))
    return tuple(result)


@st.composite
def scenes(draw: st.DrawFn, horizon: int = 40) -> tuple[Device, list[Span]]:
    """Random overlapping windows of random processes over a random device."""
    device = draw(devices(horizon))
    spans: list[Span] = []
    for _ in range(draw(st.integers(1, 12))):
        start = draw(st.integers(0, horizon))
        end = draw(st.integers(start, min(horizon, start + draw(st.integers(0, horizon)))))
        process = draw(st.sampled_from(PROCESSES))
        spans.append(Span(start, end, process, segments_for(draw, start, end)))
    if device.wrap:
        # Keep the range above every window's energy (unambiguous data) but as small
        # as that allows, so that unions, and the distance between edges of windows
        # that do not overlap, often exceed it.
        widest = max(device.between(s.start, s.end) for s in spans)
        wrap = widest + draw(st.integers(1, 20))
        base = draw(st.integers(0, wrap - 1))
        device = Device(device.energy, wrap, base, device.first_wraps)
    return device, spans


@PROPERTIES
@given(scenes())
def test_group_sums_to_its_union_energy(scene: tuple[Device, list[Span]]) -> None:
    """(b): nothing counted twice or lost; each window gets between 0 and its own delta;
    and the processes' wrap offsets do not change a single number."""
    device, spans = scene
    windows = make_windows(device, spans)
    result = attribute(windows)
    attributed = [result[w.window_id]["package-0"] for w in windows]
    total = sum(a.joules for a in attributed)
    assert total == pytest.approx(union_energy(device, spans), abs=1e-6)
    for window, a in zip(windows, attributed, strict=True):
        assert a.warning is None
        assert a.gross_joules == window.joules
        assert -1e-9 <= a.joules <= a.gross_joules + 1e-6
    plain = Device(device.energy, 0, 0, device.first_wraps)
    unwrapped = attribute(make_windows(plain, spans))
    for window, a in zip(windows, attributed, strict=True):
        assert a.joules == pytest.approx(unwrapped[window.window_id]["package-0"].joules)


@settings(PROPERTIES, max_examples=100)
@given(scenes(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(scene: tuple[Device, list[Span]], rnd: random.Random) -> None:
    device, spans = scene
    windows = make_windows(device, spans)
    shuffled = list(windows)
    rnd.shuffle(shuffled)
    assert attribute(shuffled) == attribute(windows)


@st.composite
def disjoint_scenes(draw: st.DrawFn) -> tuple[Device, list[Span]]:
    """Windows one after another: gaps of zero (touching) or more, zero-length allowed."""
    spans: list[Span] = []
    t = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(1, 8))):
        start = t + draw(st.integers(0, 3))
        end = start + draw(st.integers(0, 6))
        spans.append(Span(start, end, draw(st.sampled_from(PROCESSES))))
        t = end
    device = draw(devices(horizon=t, wrapping=True))
    # A small range: whole windows may span several wraps here (each process's own
    # delta is still exact).
    wrap = draw(st.integers(1, 60))
    base = draw(st.integers(0, wrap - 1))
    device = Device(device.energy, wrap, base, device.first_wraps)
    return device, spans


@PROPERTIES
@given(disjoint_scenes())
def test_lone_window_keeps_exactly_its_own_delta(scene: tuple[Device, list[Span]]) -> None:
    """(a)"""
    device, spans = scene
    windows = make_windows(device, spans)
    result = attribute(windows)
    for window in windows:
        a = result[window.window_id]["package-0"]
        assert a == Attributed(window.joules, window.joules, shared=False, share=1.0)
        assert a.joules == device.between(window.t_start_ns, window.t_end_ns)


@PROPERTIES
@given(
    devices(horizon=30),
    st.integers(0, 29),
    st.integers(1, 30),
    st.lists(st.sampled_from(PROCESSES), min_size=1, max_size=6),
    st.booleans(),
)
def test_identical_concurrent_windows_split_evenly(
    device: Device, start: int, length: int, processes: list[str], with_tokens: bool
) -> None:
    """(c): k identical windows (any processes, same tokens or none) get 1/k each."""
    end = min(start + length, 30)
    segments = (TokenSegment(start, end, 7),) if with_tokens else ()
    spans = [Span(start, end, p, segments) for p in processes]
    result = attribute(make_windows(device, spans))
    expected = device.between(start, end) / len(spans)
    for by_domain in result.values():
        a = by_domain["package-0"]
        assert a.joules == pytest.approx(expected)
        assert a.shared == (len(spans) > 1)


@PROPERTIES
@given(
    devices(horizon=30),
    st.integers(0, 20),
    st.integers(1, 10),
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10), st.integers(1, 5)), max_size=3),
    st.sampled_from(PROCESSES),
    st.sampled_from(PROCESSES),
    st.one_of(st.none(), st.tuples(st.integers(0, 10), st.integers(0, 10))),
)
def test_fully_overlapping_windows_split_by_tokens(
    device: Device,
    start: int,
    length: int,
    a: int,
    b: int,
    shape: list[tuple[int, int, int]],
    process_a: str,
    process_b: str,
    third: tuple[int, int] | None,
) -> None:
    """(d): two windows over the same span whose tokens follow the same shape in time
    (weights w_j over the same segments, scaled by a and b) split a:b, even where a third
    window that processed nothing cuts the span into more slices."""
    end = start + length
    # Every slice of the span holds tokens of both (when a, b > 0): one whole-span segment.
    shape = [(0, length, 1), *((min(x, y), max(x, y), w) for x, y, w in shape)]

    def segments(scale: int) -> tuple[TokenSegment, ...]:
        return tuple(
            TokenSegment(start + min(t0, length), start + min(t1, length), scale * w)
            for t0, t1, w in shape
        )

    spans = [Span(start, end, process_a, segments(a)), Span(start, end, process_b, segments(b))]
    if third is not None:
        t0, t1 = sorted(start + min(t, length) for t in third)
        spans.append(Span(t0, t1, "h:3", (TokenSegment(t0, t1, 0),)))
    result = attribute(make_windows(device, spans))
    got_a, got_b = (result[w]["package-0"].joules for w in ("w0", "w1"))
    delta = device.between(start, end)
    assert got_a + got_b == pytest.approx(delta)
    if a + b > 0:
        assert got_a == pytest.approx(delta * a / (a + b))
        assert got_b == pytest.approx(delta * b / (a + b))
    else:
        assert got_a == pytest.approx(got_b)
    if third is not None and a + b > 0:
        assert result["w2"]["package-0"].joules == pytest.approx(0.0)


# -- scale -------------------------------------------------------------------------


def test_twenty_thousand_windows_attribute_in_reasonable_time() -> None:
    """A hang guard, not a speed target: 20k windows of 8 processes on two domains,
    about 8 at a time, with a wrapping counter; the sums still hold."""
    rnd = random.Random(20_000)
    wrap = 4_000.0  # joules; windows hold < 120 J, the run over ten wraps

    def device_j(t: int) -> float:
        """20 W in even seconds, 60 W in odd ones: increasing, not linear."""
        second, rest = divmod(t, S)
        return 20.0 * second + 40.0 * (second // 2) + (20 + 40 * (second % 2)) * rest / S

    spans: list[tuple[int, int, str]] = []
    t = 0
    while len(spans) < 10_000:
        t += rnd.randrange(0, 250_000_000)
        spans.append((t, t + rnd.randrange(1, 2 * S), f"h:{rnd.randrange(8)}"))
    first_wraps = {f"h:{i}": rnd.randrange(-5, 5) for i in range(8)}

    def read(t: int, process: str) -> float:
        total = device_j(t)
        return total % wrap + (total // wrap - first_wraps[process]) * wrap

    windows = [
        Window(
            window_id=f"w{i}",
            host="h",
            process=process,
            domain=domain,
            t_start_ns=start,
            t_end_ns=end,
            counter_start_j=read(start, process),
            counter_end_j=read(end, process),
            wrap_j=wrap,
            segments=(
                TokenSegment(start, start + (end - start) // 10, 100),
                TokenSegment(start + (end - start) // 10, end, 50),
            ),
        )
        for i, (start, end, process) in enumerate(spans)
        for domain in ("package-0", "dram-0")
    ]
    began = time.perf_counter()
    result = attribute(windows)
    elapsed = time.perf_counter() - began
    assert elapsed < 10.0
    assert len(result) == 10_000
    union = 0.0
    reach = -1
    for start, end, _ in spans:  # already sorted by start
        lo = max(start, reach)
        if end > lo:
            union += device_j(end) - device_j(lo)
        reach = max(reach, end)
    for domain in ("package-0", "dram-0"):
        total = sum(by_domain[domain].joules for by_domain in result.values())
        assert total == pytest.approx(union, rel=1e-9)
    assert all(r.warning is None for by_domain in result.values() for r in by_domain.values())


# -- wrap counts between processes: evidence, never a silent guess --------------------

AMD_RANGE = 65_713.0  # joules: AMD's max_energy_range_uj, 65.7 kJ


def with_evidence(
    window: Window,
    wraps_start: int,
    wraps_end: int,
    *events: tuple[float, float, float, float, int],
) -> Window:
    """The window as a meter that tracks wraps records it: its process's wrap count at
    both edges and the wraps it counted inside, (t0_s, j0, t1_s, j1, wraps after)."""
    return dataclasses.replace(
        window,
        wraps_start=wraps_start,
        wraps_end=wraps_end,
        events=tuple(
            CounterEvent(round(a * S), j0, round(b * S), j1, n) for a, j0, b, j1, n in events
        ),
    )


def issue_windows() -> tuple[Window, Window]:
    """The issue's example: 15 W over [0, 300 s], then 280 W; window A [0, 600] (process
    1, which had counted 3 wraps by t=0), window B [300, 900] (process 2, counting from
    0). The true energy is 4,500 + 84,000 + 84,000 = 172,500 J; the register wraps at
    518.6 s and 753.3 s."""
    r = AMD_RANGE
    a = win("a", 0, 600, 3 * r, 3 * r + 88_500, process="h:1", wrap=r)
    b = win("b", 300, 900, 4_500, 172_500, process="h:2", wrap=r)
    return a, b


def test_issue_example_guess_is_low_confidence_not_silent() -> None:
    """Without poll evidence, 4,500 J and 70,213 J both fit the 300 s before B starts
    (A's 88,500 J bounds it); average power (147.5 W x 300 s = 44,250 J) prefers the
    wrong one: 238,213 J in all, one wrap too many. The count is a guess, and both
    readings say so."""
    result = attribute(issue_windows())
    assert sum(joules(result).values()) == pytest.approx(172_500 + AMD_RANGE)
    for by_domain in result.values():
        a = by_domain["package-0"]
        assert a.low_confidence
        assert (a.low_confidence_reason or "").startswith(
            "wrap count between h:1 and h:2 not unique: 2 counts of the 65713 J range fit "
            "the 300 s between their samples at 0 and 300000000000 ns, and no window "
            "records its process's wraps there; took the one nearest average power "
            "(70213 J)"
        )


def test_issue_example_with_poll_evidence_is_exact() -> None:
    """The same windows as the meters record them (polls every 5 s): process 1 counted
    its wrap between its polls at 515 s and 520 s, process 2 its two between 517.5 s and
    522.5 s and between 752.5 s and 757.5 s. At B's start (300 s) A knows process 1 had
    3 wraps, B knows process 2 had 0: three wraps apart, exactly. [0,300] 4,500 J A;
    [300,600] 84,000 J even; [600,900] 84,000 J B: 46,500 + 126,000 = 172,500 J."""
    r = AMD_RANGE
    a, b = issue_windows()
    a = with_evidence(a, 3, 4, (515, 3 * r + 64_700, 520, 3 * r + 66_100, 4))
    b = with_evidence(
        b, 0, 2, (517.5, 65_400, 522.5, 66_800, 1), (752.5, 131_200, 757.5, 132_600, 2)
    )
    result = attribute([a, b])
    assert joules(result) == pytest.approx({"a": 46_500.0, "b": 126_000.0}, abs=1e-6)
    for by_domain in result.values():
        assert not by_domain["package-0"].low_confidence
        assert by_domain["package-0"].warning is None


def test_sample_between_the_polls_around_a_wrap_is_placed_by_its_value() -> None:
    """10 W, a 1000 J range. Process 1 (5 wraps by t=0) counted a wrap between its polls
    at 97.5 s (5,975 J) and 102.5 s (6,025 J); process 2's window Y [99, 101] starts in
    between, at raw 990 J: 5,990 J on process 1's scale fits, 6,990 J does not. Without
    the evidence both 49 s and 99 s gaps fit two counts."""
    x = win("x", 0, 150, 5_000, 6_500, process="h:1", wrap=1000)
    y = win("y", 99, 101, 990, 1_010, process="h:2", wrap=1000)
    guessed = attribute([x, y])
    assert all(r["package-0"].low_confidence for r in guessed.values())
    x = with_evidence(x, 5, 6, (97.5, 5_975, 102.5, 6_025, 6))
    y = with_evidence(y, 0, 1, (99, 990, 101, 1_010, 1))
    result = attribute([x, y])
    assert joules(result) == pytest.approx({"x": 1_490.0, "y": 10.0})
    assert not any(r["package-0"].low_confidence for r in result.values())


def test_a_meters_own_doubt_makes_the_shared_windows_low_confidence() -> None:
    """Process 2's poller stalled inside Y: its wrap count there is a guess, and so is
    every slice value built on it; X (process 1) shares those slices."""
    x = with_evidence(win("x", 0, 10, 0, 100, process="h:1", wrap=1000), 0, 0)
    y = dataclasses.replace(
        with_evidence(win("y", 2, 8, 20, 80, process="h:2", wrap=1000), 0, 0),
        events=(CounterEvent(2 * S, 20.0, 8 * S, 80.0, 0, "RAPL package-0: stalled"),),
    )
    result = attribute([x, y])
    assert joules(result) == pytest.approx({"x": 70.0, "y": 30.0})
    for by_domain in result.values():
        assert by_domain["package-0"].low_confidence_reason == "h:2: RAPL package-0: stalled"
    alone = attribute([dataclasses.replace(y, window_id="lone")])["lone"]["package-0"]
    assert not alone.low_confidence  # a lone window's doubt is its reading's already


def count_at(device: Device, t: int, process: str) -> int:
    """The wraps ``process`` has counted by ``t`` (the part of `Device.read` above raw)."""
    return (device.energy[t] + device.base) // device.wrap - device.first_wraps[
        PROCESSES.index(process)
    ]


def make_windows_with_evidence(device: Device, spans: list[Span]) -> list[Window]:
    """Windows as meters that read the register at every time step record them: each
    step holds less than one wrap (power <= 30 < range), so every wrap is counted."""
    windows = []
    for window, span in zip(make_windows(device, spans), spans, strict=True):
        events = [
            CounterEvent(
                t - 1,
                device.read(t - 1, span.process),
                t,
                device.read(t, span.process),
                count_at(device, t, span.process),
            )
            for t in range(span.start + 1, span.end + 1)
            if count_at(device, t, span.process) != count_at(device, t - 1, span.process)
        ]
        windows.append(
            dataclasses.replace(
                window,
                wraps_start=count_at(device, span.start, span.process),
                wraps_end=count_at(device, span.end, span.process),
                events=tuple(events),
            )
        )
    return windows


@st.composite
def tightly_wrapping_scenes(draw: st.DrawFn) -> tuple[Device, list[Span]]:
    """Random scenes on a range of 31-60 J: windows and gaps hold many wraps, so
    without evidence most cross-process counts would be guesses."""
    device, spans = draw(scenes())
    wrap = draw(st.integers(31, 60))
    base = draw(st.integers(0, wrap - 1))
    return Device(device.energy, wrap, base, device.first_wraps), spans


@PROPERTIES
@given(tightly_wrapping_scenes())
def test_evidence_makes_every_wrap_count_exact(scene: tuple[Device, list[Span]]) -> None:
    """With the processes' wrap tracking on the windows, attribution over a tightly
    wrapping counter gives exactly what it gives on the unwrapped counter, and nothing
    is low-confidence."""
    device, spans = scene
    result = attribute(make_windows_with_evidence(device, spans))
    plain = attribute(make_windows(Device(device.energy, 0, 0, device.first_wraps), spans))
    for window_id, by_domain in result.items():
        a = by_domain["package-0"]
        assert a.joules == pytest.approx(plain[window_id]["package-0"].joules, abs=1e-6)
        assert a.warning is None and not a.low_confidence
