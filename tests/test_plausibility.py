"""Readings outside physical bounds are low-confidence, with the reason."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.energy.base import CounterSample
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.energy.plausibility import (
    MIN_TOKENS_FOR_RANGE,
    NET_NOISE_SIGMAS,
    POWER_LIMIT_MARGIN,
    WH_PER_1K_RANGE,
    net_doubt,
    power_doubt,
    wh_per_1k_doubt,
)
from pytest_llmlab.energy.reading import reading_from_samples
from pytest_llmlab.report.attribution_pass import attribute_records

S = 1_000_000_000
README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def samples(t_s: float, **joules: float) -> list[CounterSample]:
    return [CounterSample(d.replace("_", "-"), j, round(t_s * S)) for d, j in joules.items()]


# -- power ------------------------------------------------------------------------


def test_power_above_the_limit_beyond_the_margin_is_flagged() -> None:
    limit = 700.0
    assert power_doubt("gpu-x", 700.0 * 2, 2.0, limit) is None
    assert power_doubt("gpu-x", limit * (1 + POWER_LIMIT_MARGIN) * 0.99 * 2, 2.0, limit) is None
    doubt = power_doubt("gpu-x", 900.0 * 2, 2.0, limit)
    assert doubt == "gpu-x: average power 900 W is above the device's 700 W limit"
    assert power_doubt("gpu-x", 1e9, 2.0, None) is None  # no stated limit, no check


def test_power_below_zero_is_flagged() -> None:
    doubt = power_doubt("plug-0", -3.0, 1.5, None)
    assert doubt == "plug-0: average power -2 W is below zero (the counter went back)"


def test_a_reading_over_the_limit_names_the_domain_and_the_limit() -> None:
    reading = reading_from_samples(
        start=samples(10, package_0=0.0, gpu_a=0.0),
        end=samples(12, package_0=100.0, gpu_a=3_000.0),
        first_token=None,
        meters=["rapl", "nvml"],
        power_limits_w={"gpu-a": 700.0, "package-0": 250.0},
    )
    assert reading.low_confidence
    assert reading.low_confidence_reason == (
        "gpu-a: average power 1500 W is above the device's 700 W limit"
    )
    assert reading.joules == 3_100.0  # flagged, never changed


def test_short_windows_are_not_power_checked_but_negative_steps_always_are() -> None:
    short = reading_from_samples(
        start=samples(10, gpu_a=0.0),
        end=samples(10.2, gpu_a=1_000.0),  # 5 kW over 0.2 s: quantization, flagged as short
        first_token=None,
        meters=["nvml"],
        power_limits_w={"gpu-a": 700.0},
    )
    assert short.low_confidence_reason is not None
    assert "shorter than 1 s" in short.low_confidence_reason
    assert "limit" not in short.low_confidence_reason
    back = reading_from_samples(
        start=samples(10, plug_0=50.0),
        end=samples(13, plug_0=20.0),
        first_token=None,
        meters=["plug"],
    )
    assert back.joules == 0.0 and back.low_confidence
    assert back.low_confidence_reason == (
        "plug-0: average power -10 W is below zero (the counter went back)"
    )


def test_a_plausible_reading_is_not_flagged() -> None:
    reading = reading_from_samples(
        start=samples(10, package_0=0.0),
        end=samples(13, package_0=300.0),
        first_token=samples(11, package_0=100.0),
        meters=["rapl"],
        completion_tokens=200,
        baseline_w=20.0,
        baseline_noise_w=1.0,
        power_limits_w={"package-0": 250.0},
    )
    assert not reading.low_confidence and reading.low_confidence_reason is None


# -- net energy -------------------------------------------------------------------


def test_net_below_zero_within_the_noise_is_not_flagged() -> None:
    tolerance = NET_NOISE_SIGMAS * 0.5 * 4.0  # 3 sigma of 0.5 W over 4 s = 6 J
    assert net_doubt(-tolerance * 0.9, baseline_w=10.0, noise_w=0.5, duration_s=4.0) is None
    doubt = net_doubt(-tolerance * 1.1, baseline_w=10.0, noise_w=0.5, duration_s=4.0)
    assert doubt is not None and doubt.startswith("net energy -6.6 J is below zero by more than 3")
    assert "idle baseline of 10 W" in doubt
    assert net_doubt(-1.0, baseline_w=None, noise_w=None, duration_s=4.0) is None


def test_net_below_zero_with_unknown_noise_allows_a_tenth_of_the_idle_energy() -> None:
    assert net_doubt(-3.9, baseline_w=10.0, noise_w=None, duration_s=4.0) is None
    doubt = net_doubt(-4.1, baseline_w=10.0, noise_w=None, duration_s=4.0)
    assert doubt is not None and "10% of the idle energy (its noise is unknown)" in doubt


class Scripted:
    """A meter whose counter follows a script: one value per sample call."""

    name = "scripted"

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls = 0

    def sample(self) -> list[CounterSample]:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return [CounterSample("package-0", value, time.monotonic_ns())]

    def close(self) -> None:
        pass


def test_the_baseline_measures_its_noise_and_readings_use_it() -> None:
    # Idle steps of 1.9 J and 2.1 J alternating over ten parts: mean 2 J per part.
    steps = [1.9, 2.1] * 5
    values = [sum(steps[:i]) for i in range(11)]
    meter = Scripted(values + [20.0, 20.0])  # then a window that draws nothing
    meters = MeterSet([meter], "scripted")
    watts = meters.measure_baseline(0.5, sleep=lambda s: time.sleep(s))
    assert watts == pytest.approx(20.0 / 0.5, rel=0.2)
    assert meters.baseline_noise_w is not None and meters.baseline_noise_w > 0
    window = meters.open()
    time.sleep(0.3)
    reading = window.close()
    assert reading.net_joules is not None and reading.net_joules < 0
    assert "is below zero by more than" in (reading.low_confidence_reason or "")


# -- energy per output token --------------------------------------------------------


@pytest.mark.parametrize(
    ("decode_j", "tokens", "side"),
    [(0.0, 100, "below"), (1e-6, 100, "below"), (1e6, 100, "above"), (0.36 * 99, 100, None)],
)
def test_decode_energy_per_output_token_outside_the_range_is_flagged(
    decode_j: float, tokens: int, side: str | None
) -> None:
    doubt = wh_per_1k_doubt(
        joules=decode_j + 50.0, decode_joules=decode_j, completion_tokens=tokens
    )
    if side is None:
        assert doubt is None
    else:
        assert doubt is not None and f"is {side} the plausible range" in doubt
        assert doubt.startswith("decode ")


def test_a_long_prompt_with_a_short_answer_is_not_implausible() -> None:
    # 5 kJ of prefill, 20 output tokens at 0.36 J: the headline is 70 Wh/1k, decode 0.005.
    assert wh_per_1k_doubt(joules=5_007.2, decode_joules=7.2, completion_tokens=21) is None


def test_without_a_split_the_whole_reading_is_judged_and_few_tokens_are_not() -> None:
    high = WH_PER_1K_RANGE[1]
    per_token_j = high * 2 * 3.6  # twice the top of the range
    doubt = wh_per_1k_doubt(joules=per_token_j * 50, decode_joules=None, completion_tokens=50)
    assert doubt is not None and doubt.startswith("energy 200 Wh per 1000 output tokens is above")
    few = MIN_TOKENS_FOR_RANGE - 1
    assert wh_per_1k_doubt(joules=1e9, decode_joules=None, completion_tokens=few) is None
    assert wh_per_1k_doubt(joules=None, decode_joules=None, completion_tokens=50) is None


def test_the_range_and_its_anchors_are_in_the_readme() -> None:
    low, high = WH_PER_1K_RANGE
    section = README.split("**Plausibility**:", 1)[1].split("\n\n", 1)[0]
    assert f"{low:g}" in section and f"{high:g}" in section
    for anchor in ("0.03", "0.07", "0.96", "0.8-1.1", "2310.03003", "ML.ENERGY", "wattlab"):
        assert anchor in README, anchor


# -- after attribution ---------------------------------------------------------------


def record(window_id: str, t0: int, t1: int, c0: float, c1: float, process: str, tokens: int,
           *, split: float) -> dict[str, Any]:  # fmt: skip
    """A reading whose first output token came at ``t0 + split x (t1 - t0)``."""
    mark = t0 + round(split * (t1 - t0))
    joules = c1 - c0
    return {
        "energy": {
            "joules": joules,
            "cpu": {"joules": joules, "provenance": "measured", "domains": ["package-0"]},
            "wh": joules / 3600,
            "wh_per_1k": joules / 3600 / tokens * 1000,
            "completion_tokens": tokens,
            "prefill_joules": joules * split,
            "decode_joules": joules * (1 - split),
            "duration_s": (t1 - t0) / S,
            "avg_power_w": joules / ((t1 - t0) / S),
            "provenance": "measured",
            "measured": True,
            "gco2e": joules / 3600 / 1000 * 100 if joules else 0.0,
            "cost": None,
            "windows": [
                {
                    "window_id": window_id, "host": "h", "process": process,
                    "domain": "package-0", "t_start_ns": t0, "t_end_ns": t1,
                    "counter_start_j": c0, "counter_end_j": c1, "provenance": "measured",
                    "segments": [
                        {"t0_ns": t0, "t1_ns": mark, "tokens": 5},
                        {"t0_ns": mark, "t1_ns": t1, "tokens": tokens},
                    ],
                }
            ],
        }
    }  # fmt: skip


def test_a_share_of_a_window_whose_own_delta_was_zero_keeps_prefill_plus_decode() -> None:
    # B's counter read the same value at both edges (a stuck read), but C's edges inside
    # B's span say energy flowed: B's share of those slices is not 0, its own delta was.
    a = record("a", 0, 4 * S, 0.0, 400.0, "h:1", 100, split=0.5)
    b = record("b", 1 * S, 3 * S, 100.0, 100.0, "h:1", 100, split=0.25)
    c = record("c", 2 * S, 5 * S // 2, 150.0, 160.0, "h:1", 100, split=0.25)
    attribute_records([a, b, c])
    energy = b["energy"]
    assert energy["gross_joules"] == 0.0 and energy["joules"] > 0
    assert energy["prefill_joules"] + energy["decode_joules"] == energy["joules"]
    # Split by time at the first token: a quarter of the window.
    assert energy["prefill_joules"] == pytest.approx(energy["joules"] * 0.25)
    assert energy["wh"] == pytest.approx(energy["joules"] / 3600)
    assert energy["wh_per_1k"] == pytest.approx(energy["joules"] / 3600 / 100 * 1000)
    assert energy["gco2e"] is None  # from 0 J nothing says what the intensity was
    for rec in (a, b, c):
        e = rec["energy"]
        assert e["prefill_joules"] + e["decode_joules"] == e["joules"]


def test_a_share_outside_the_range_is_flagged_after_attribution() -> None:
    # Two overlapping windows on one host, the second with an absurd counter jump.
    a = record("a", 0, 4 * S, 0.0, 400.0, "h:1", 100, split=0.5)
    b = record("b", 1 * S, 3 * S, 100.0, 2e8, "h:1", 100, split=0.5)
    attribute_records([a, b])
    flagged = [
        r["energy"]
        for r in (a, b)
        if "above the plausible range" in (r["energy"].get("low_confidence_reason") or "")
    ]
    assert flagged and all(energy["low_confidence"] for energy in flagged)
