"""The session-end attribution pass: rewrite records' energy with their shares.

The algorithm is `pytest_llmlab.energy.attribution.attribute` (pure, over windows);
this module applies it to the records of a session.

A generation's reading is the gross energy of its own window: all its meters saw. When
generations overlap on one host (xdist workers on one machine), gross readings count
the shared energy more than once. At session end the controller holds every record of
every worker; `attribute_records` runs `attribute` over all their windows and rewrites
each affected reading with its share. Shared measured components become
``measured-apportioned``; an estimate stays ``estimated``. A rewritten reading keeps
``prefill_joules + decode_joules == joules``, and is checked against the plausible range
of energy per output token again (`energy.plausibility`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_llmlab.energy.attribution import Attributed, attribute
from pytest_llmlab.energy.base import Window
from pytest_llmlab.energy.plausibility import join_reasons, wh_per_1k_doubt
from pytest_llmlab.energy.reading import PROVENANCE_ORDER, weakest

__all__ = ["attribute_records"]

_KINDS = ("cpu", "dram", "gpu")


def _comparable(window: Window) -> Window:
    """Counters built inside one process (integrated power, this process's CPU time)
    cannot be compared with another process's: group those per process. A calibrated
    estimate (``*-calibrated``) comes from the window's own tokens: it shares with
    nobody, so each such window is a group of its own."""
    if window.domain.endswith("-calibrated"):
        return replace(window, host=f"{window.host}|{window.window_id}")
    if window.provenance == "integrated" or window.domain.endswith("-process"):
        return replace(window, host=f"{window.host}|{window.process}")
    return window


def _windows(records: Sequence[Mapping[str, Any]]) -> list[Window]:
    windows: list[Window] = []
    for record in records:
        energy = record.get("energy")
        if isinstance(energy, dict):
            windows.extend(_comparable(Window.from_dict(w)) for w in energy.get("windows", ()))
    return windows


def _apportioned(provenance: str, shared: bool) -> str:
    if shared and provenance == "measured":
        return "measured-apportioned"
    return provenance


def _rewrite(energy: dict[str, Any], results: dict[str, Attributed]) -> None:
    """Replace each component's joules by its attributed share, and every figure
    derived from the total."""
    old_total = energy.get("joules") or 0.0
    components: dict[str, dict[str, Any]] = {k: energy[k] for k in _KINDS if energy.get(k)}
    components.update(energy.get("other") or {})
    for component in components.values():
        joules = 0.0
        shared = False
        for domain in component.get("domains", []):
            result = results.get(domain)
            if result is None:
                continue
            joules += result.joules
            shared = shared or result.shared
        component["joules"] = joules
        component["provenance"] = _apportioned(component["provenance"], shared)
        component["shared"] = shared
    total = sum(c["joules"] for c in components.values())
    energy["gross_joules"] = old_total
    energy["joules"] = total
    energy["provenance"] = weakest(c["provenance"] for c in components.values())
    energy["measured"] = PROVENANCE_ORDER.index(energy["provenance"]) <= 2
    energy["wh"] = total / 3600.0
    tokens = energy.get("completion_tokens")
    if energy.get("wh_per_1k") is not None and tokens:
        energy["wh_per_1k"] = total / 3600.0 / tokens * 1000.0
    keys = ("gco2e", "cost") if tokens else ("wh_per_1k", "gco2e", "cost")
    for key in keys:
        if energy.get(key) is not None and total != old_total:
            # Proportional to energy; from 0 J nothing says how much (None: unknown).
            energy[key] = energy[key] * total / old_total if old_total else None
    if energy.get("prefill_joules") is not None:
        if old_total:
            prefill = energy["prefill_joules"] * total / old_total
        else:
            prefill = total * _prefill_share_by_time(energy)
        prefill = min(max(prefill, 0.0), total)
        energy["prefill_joules"] = prefill
        energy["decode_joules"] = total - prefill  # prefill + decode == total, exactly
    duration = energy.get("duration_s") or 0.0
    if energy.get("avg_power_w") is not None and duration > 0:
        energy["avg_power_w"] = total / duration
    if energy.get("baseline_w") is not None:
        energy["net_joules"] = total - energy["baseline_w"] * duration
    doubt = wh_per_1k_doubt(
        joules=total, decode_joules=energy.get("decode_joules"), completion_tokens=tokens
    )
    if doubt is not None:
        energy["low_confidence"] = True
        energy["low_confidence_reason"] = join_reasons(energy.get("low_confidence_reason"), [doubt])


def _prefill_share_by_time(energy: Mapping[str, Any]) -> float:
    """The share of a window's span before its first output token (the end of its
    first, prefill, segment): how a total attributed to a window whose own delta was 0
    is split. 0 (all decode) where the window has no segments."""
    windows: Sequence[Mapping[str, Any]] = energy.get("windows") or []
    if not windows:
        return 0.0
    window = windows[0]
    segments: Sequence[Mapping[str, int]] = window.get("segments") or []
    span = int(window["t_end_ns"]) - int(window["t_start_ns"])
    if len(segments) < 2 or span <= 0:
        return 0.0
    return min(max((segments[0]["t1_ns"] - int(window["t_start_ns"])) / span, 0.0), 1.0)


def attribute_records(records: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """Attribute over all records' windows; rewrite shared readings in place.

    Returns how many readings changed, by their provenance after the change
    (``measured-apportioned``, ``estimated``...): empty when none did. Records whose
    windows overlap nothing keep their gross reading untouched (attributed energy
    equals the window's own delta).
    """
    changed: Counter[str] = Counter()
    windows = _windows(records)
    if not windows:
        return changed
    attributed = attribute(windows)
    for record in records:
        energy = record.get("energy")
        if not isinstance(energy, dict) or not energy.get("windows"):
            continue
        window_id = energy["windows"][0]["window_id"]
        results = attributed.get(window_id, {})
        if not any(r.shared or r.warning or r.low_confidence for r in results.values()):
            continue
        _rewrite(energy, results)
        warnings = sorted({r.warning for r in results.values() if r.warning})
        doubts = sorted({r.low_confidence_reason or "" for r in results.values()} - {""})
        if warnings or doubts:
            energy["attribution_warning"] = "; ".join(warnings + doubts)
        if doubts:
            # The share rests on a guess (a wrap count): the reading says so, and why.
            energy["low_confidence"] = True
            reasons = [r for r in [energy.get("low_confidence_reason")] if r]
            reasons.extend(d for d in doubts if not any(d in r for r in reasons))
            energy["low_confidence_reason"] = "; ".join(reasons)
        changed[str(energy.get("provenance"))] += 1
    return changed
