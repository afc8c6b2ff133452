"""The issue's cross-process example end to end: two processes' RAPL meters on one fake
powercap tree, an injected clock, windows closed through `MeterSet`, attributed by the
session-end pass over the records.

Device: 15 W over [0, 300 s], then 280 W; a 65,713 J range (AMD), no stated maximum
power (so 1000 W is assumed: one wrap in 65.7 s, polls every 5 s). Process 1 starts its
meter at -10 s and meters window A [0, 600 s]; process 2 starts at 250 s and meters B
[300, 900 s]. Each meter's poller is driven at its own poll interval, out of phase.
True energy 172,500 J: A 4,500 + 42,000, B 42,000 + 84,000 (no tokens: even split).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_rapl import FakeClock, set_energy, zone

from pytest_llmlab.energy.meters import MeterSet, OpenWindow
from pytest_llmlab.energy.rapl import RaplMeter
from pytest_llmlab.report.attribution_pass import attribute_records

RANGE_UJ = 65_713_000_000
S = 1_000_000_000


def device_uj(t_ns: int) -> int:
    """Cumulative energy since t = 0 (the register starts at 0 then)."""
    if t_ns <= 300 * S:
        return max(t_ns, 0) * 15 // 1000
    return 4_500_000_000 + (t_ns - 300 * S) * 280 // 1000


@pytest.fixture
def run_issue(tmp_path: Path) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    meters: list[RaplMeter] = []

    def run(*, stall_s: tuple[float, float] | None = None) -> list[dict[str, Any]]:
        """The two records; ``stall_s`` = a span where process 1's poller stalls."""
        pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0, range_uj=RANGE_UJ)
        clock = FakeClock(-10 * S)
        sets: dict[str, MeterSet] = {}
        rapl: dict[str, RaplMeter] = {}
        windows: dict[str, OpenWindow] = {}
        readings: list[dict[str, Any]] = []

        def start(process: str) -> None:
            meter = RaplMeter(tmp_path, poll_interval_s=3600.0, clock=clock)
            meters.append(meter)
            rapl[process] = meter
            assert meter.required_poll_interval_s == 5.0
            sets[process] = MeterSet([meter], "rapl")
            sets[process].host, sets[process].process = "h", process
            # The first poll, out of phase between the processes.
            heapq.heappush(plan, (clock.t_ns + (5 if process == "h:1" else 2.5) * S, 0, process))

        plan: list[tuple[float, int, str]] = [
            (-10 * S, 1, "start h:1"),
            (0, 1, "open a"),
            (250 * S, 1, "start h:2"),
            (300 * S, 1, "open b"),
            (600 * S, 1, "close a"),
            (900 * S, 1, "close b"),
        ]
        heapq.heapify(plan)
        while plan and len(readings) < 2:
            t_ns, kind, what = heapq.heappop(plan)
            clock.t_ns = int(t_ns)
            set_energy(pkg, device_uj(clock.t_ns) % RANGE_UJ)
            if kind == 0:  # a poll of process `what`, then the next one
                stalled = stall_s is not None and stall_s[0] * S <= t_ns < stall_s[1] * S
                if not (what == "h:1" and stalled):
                    rapl[what]._poll()
                heapq.heappush(plan, (t_ns + 5 * S, 0, what))
            elif what.startswith("start"):
                start(what.split()[1])
            elif what.startswith("open"):
                label = what.split()[1]
                windows[label] = sets["h:1" if label == "a" else "h:2"].open(label)
            else:
                readings.append(windows[what.split()[1]].close().model_dump())
        return [{"test": f"w{i}", "energy": energy} for i, energy in enumerate(readings)]

    yield run
    for meter in meters:
        meter.close()


def test_cross_process_wraps_from_poll_evidence_are_exact(
    run_issue: Callable[..., list[dict[str, Any]]],
) -> None:
    a, b = run_issue()
    assert (a["energy"]["joules"], b["energy"]["joules"]) == pytest.approx((88_500, 168_000))
    assert [w["wraps_end"] - w["wraps_start"] for r in (a, b) for w in r["energy"]["windows"]] == [
        1,
        2,
    ]
    attribute_records([a, b])
    assert (a["energy"]["joules"], b["energy"]["joules"]) == pytest.approx(
        (46_500.0, 126_000.0), abs=1e-6
    )
    for record in (a, b):
        assert not record["energy"]["low_confidence"]
        assert record["energy"]["provenance"] == "measured-apportioned"
        assert "attribution_warning" not in record["energy"]


def test_without_the_evidence_the_guess_is_flagged(
    run_issue: Callable[..., list[dict[str, Any]]],
) -> None:
    """Records of an older meter (no wrap counts on the windows): the 300 s gap fits
    two counts; the readings say so instead of silently taking 238,213 J."""
    records = run_issue()
    for record in records:
        for window in record["energy"]["windows"]:
            for key in ("wraps_start", "wraps_end", "events"):
                window.pop(key)
    attribute_records(records)
    assert sum(r["energy"]["joules"] for r in records) == pytest.approx(238_213.0)
    for record in records:
        energy = record["energy"]
        assert energy["low_confidence"]
        assert "wrap count between h:1 and h:2 not unique" in energy["low_confidence_reason"]
        assert "not unique" in energy["attribution_warning"]


def test_a_stalled_poller_flags_both_shared_readings(
    run_issue: Callable[..., list[dict[str, Any]]],
) -> None:
    """Process 1's poller misses [400 s, 540 s): 145 s between its reads (395 s and
    540 s), more than one wrap period at 1000 W. Its own reading is low-confidence at once; after attribution
    B, which shares slices valued on process 1's counter, is too."""
    a, b = run_issue(stall_s=(400, 540))
    assert a["energy"]["low_confidence"]
    assert "RAPL package-0: 145 s between reads" in a["energy"]["low_confidence_reason"]
    assert not b["energy"]["low_confidence"]
    attribute_records([a, b])
    assert b["energy"]["low_confidence"]
    assert b["energy"]["low_confidence_reason"].startswith("h:1: RAPL package-0: 145 s between")
