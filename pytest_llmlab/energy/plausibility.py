"""Physical bounds on a reading: outside them it is low-confidence, with the reason.

A reading is flagged (``low_confidence``, the reason appended to
``low_confidence_reason``), never changed or dropped, when

- a domain's average power over the window is above the device's stated limit
  (RAPL's largest ``constraint_*_max_power_uw``, NVML's enforced power limit), by more
  than :data:`POWER_LIMIT_MARGIN`, or its counter went backwards (power below zero);
- net energy (gross minus idle power x duration) is below zero by more than the
  baseline's noise: :data:`NET_NOISE_SIGMAS` standard deviations of the idle power
  measured in parts of the baseline interval, over the window's duration;
- decode energy per 1000 output tokens lies outside :data:`WH_PER_1K_RANGE` (the whole
  reading's where there is no prefill/decode split): prefill energy grows with the
  prompt, not the output, so a long prompt with a short answer is no reason to doubt.

The power check is skipped for windows shorter than the counters' resolution allows
(`reading.LOW_CONFIDENCE_BELOW_S`: those are flagged already, and a quantized delta
over a short span reads as a power spike), and the energy range below
:data:`MIN_TOKENS_FOR_RANGE` output tokens.

These are cheap float comparisons: they run at the end of every generation.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "MIN_TOKENS_FOR_RANGE",
    "NET_NOISE_SIGMAS",
    "POWER_LIMIT_MARGIN",
    "UNKNOWN_NOISE_SHARE",
    "WH_PER_1K_RANGE",
    "join_reasons",
    "net_doubt",
    "power_doubt",
    "wh_per_1k_doubt",
]

#: How far above a device's stated power limit a window's average may lie before it is
#: flagged: power sensors are accurate to about 5 % (NVML states +-5 %), and a RAPL
#: package may briefly draw above its long-term limit.
POWER_LIMIT_MARGIN = 0.10

#: Net energy below ``-NET_NOISE_SIGMAS x (stdev of idle power) x duration`` is flagged.
NET_NOISE_SIGMAS = 3.0

#: Where the baseline's noise is unknown (a baseline given, not measured), this share of
#: the idle energy over the window is the tolerance instead.
UNKNOWN_NOISE_SHARE = 0.10

#: Wh per 1000 output tokens outside this range is flagged. Published anchors, as orders
#: of magnitude: Llama-3.1-8B on an H100 with vLLM at batch 64, about 0.03 Wh/1k output
#: tokens (ML.ENERGY leaderboard); TinyLlama-1.1B Q4 on a desktop CPU about 0.07 Wh/1k
#: above idle, Mistral-7B about 0.96 (Greening of Streaming, wattlab); LLaMA-65B on
#: V100/A100 0.8-1.1 Wh/1k ("From Words to Watts", arXiv 2310.03003). The bounds lie
#: more than two orders of magnitude beyond them on each side (a small model at a large
#: batch; a large model on a CPU), so what falls outside is a unit slip, a double count
#: or a counter glitch, not a slow or a fast machine.
WH_PER_1K_RANGE: tuple[float, float] = (1e-4, 100.0)

#: Fewer output tokens than this are too few to judge energy per token.
MIN_TOKENS_FOR_RANGE = 8


def power_doubt(domain: str, joules: float, duration_s: float, limit_w: float | None) -> str | None:
    """Why one domain's counter delta over ``duration_s`` is not a possible power:
    negative, or above ``limit_w`` (None: no stated limit) plus the margin."""
    if duration_s <= 0:
        return None
    watts = joules / duration_s
    if watts < 0:
        return f"{domain}: average power {watts:.3g} W is below zero (the counter went back)"
    if limit_w is not None and limit_w > 0 and watts > limit_w * (1 + POWER_LIMIT_MARGIN):
        return f"{domain}: average power {watts:.4g} W is above the device's {limit_w:g} W limit"
    return None


def net_doubt(
    net_joules: float | None,
    *,
    baseline_w: float | None,
    noise_w: float | None,
    duration_s: float,
) -> str | None:
    """Why a net energy below zero is more than the baseline's noise, or None."""
    if net_joules is None or baseline_w is None or net_joules >= 0:
        return None
    if noise_w is not None:
        tolerance = NET_NOISE_SIGMAS * noise_w * duration_s
        noise = f"{NET_NOISE_SIGMAS:g} x {noise_w:.3g} W idle noise"
    else:
        tolerance = UNKNOWN_NOISE_SHARE * baseline_w * duration_s
        noise = f"{UNKNOWN_NOISE_SHARE:.0%} of the idle energy (its noise is unknown)"
    if -net_joules <= tolerance:
        return None
    return (
        f"net energy {net_joules:.4g} J is below zero by more than {noise} over "
        f"{duration_s:.3g} s: the window drew less than the idle baseline of {baseline_w:.3g} W"
    )


def wh_per_1k_doubt(
    *,
    joules: float | None,
    decode_joules: float | None,
    completion_tokens: int | None,
    bounds: tuple[float, float] = WH_PER_1K_RANGE,
) -> str | None:
    """Why the energy per 1000 output tokens is outside ``bounds``, or None.

    With a prefill/decode split, the decode energy over the tokens after the first
    (the first is prefill's); else the whole reading over every output token.
    """
    if joules is None or completion_tokens is None or completion_tokens < MIN_TOKENS_FOR_RANGE:
        return None
    if decode_joules is not None:
        energy, tokens, what = decode_joules, completion_tokens - 1, "decode"
    else:
        energy, tokens, what = joules, completion_tokens, "energy"
    wh_per_1k = energy / 3600.0 / tokens * 1000.0
    low, high = bounds
    if low <= wh_per_1k <= high:
        return None
    side = "below" if wh_per_1k < low else "above"
    return (
        f"{what} {wh_per_1k:.3g} Wh per 1000 output tokens is {side} the plausible "
        f"range {low:g}-{high:g} (see README, Plausibility)"
    )


def join_reasons(existing: str | None, more: Iterable[str | None]) -> str | None:
    """``existing`` with the reasons in ``more`` not already in it, ``; ``-joined."""
    reasons = [existing] if existing else []
    for reason in more:
        if reason and not any(reason in r for r in reasons):
            reasons.append(reason)
    return "; ".join(reasons) or None
