"""Cloud models: energy and carbon estimates through the EcoLogits methodology.

A model behind a remote API runs on hardware no local meter can see. For the providers
EcoLogits models (OpenAI among them), its bottom-up estimate from the model's size,
the output tokens and the request latency is the best available figure: we report its
mid-range as ``joules`` with provenance ``estimated`` and the range in the note.
EcoLogits is optional (the ``[cloud]`` extra); without it, cloud readings are
``unavailable`` and say how to get one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytest_llmlab.energy.reading import EnergyReading

__all__ = ["ECOLOGITS_PROVIDERS", "ecologits_reading", "zone_intensity"]

#: Our provider name -> EcoLogits provider name, for endpoints EcoLogits knows.
ECOLOGITS_PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google_genai",
}

_INSTALL_HINT = "pip install 'pytest-llmlab[cloud]'"


@contextmanager
def _quiet_ecologits() -> Iterator[None]:
    """EcoLogits logs a warning per call for closed models; we carry its warnings in
    the reading's note instead of printing them under every test."""
    logger = logging.getLogger("ecologits")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def zone_intensity(zone: str) -> float:
    """Grid carbon intensity of an EcoLogits electricity-mix zone (``FRA``, ``USA``,
    ``WOR`` for the world average) in gCO2e/kWh; ValueError if unknown or unavailable."""
    try:
        from ecologits.electricity_mix_repository import electricity_mixes
    except ImportError:
        raise ValueError(f"grid zones need EcoLogits: {_INSTALL_HINT}") from None
    mix = electricity_mixes.find_electricity_mix(zone.upper())
    if mix is None:
        raise ValueError(f"unknown EcoLogits grid zone {zone!r} (e.g. FRA, USA, DEU, WOR)")
    return float(mix.gwp) * 1000.0  # kgCO2eq/kWh -> g/kWh


def _mid(range_value: Any) -> tuple[float, float, float]:
    """EcoLogits values are a number or a RangeValue(min, max): (mid, low, high)."""
    low = float(getattr(range_value, "min", range_value))
    high = float(getattr(range_value, "max", range_value))
    return (low + high) / 2.0, low, high


def ecologits_reading(
    *,
    provider: str,
    model: str,
    completion_tokens: int,
    latency_s: float,
    zone: str | None,
) -> EnergyReading:
    """An `estimated` reading for one cloud generation, or `unavailable` with the reason."""
    ecologits_provider = ECOLOGITS_PROVIDERS.get(provider)
    if ecologits_provider is None:
        return EnergyReading.unavailable(
            f"{provider}:{model} runs on a remote endpoint: no local meter sees it and "
            "EcoLogits does not model this provider",
            duration_s=latency_s,
        )
    try:
        import ecologits
        from ecologits.tracers.utils import llm_impacts
    except ImportError:
        return EnergyReading.unavailable(
            f"{provider}:{model} runs in the cloud: install EcoLogits for an estimate "
            f"({_INSTALL_HINT})",
            duration_s=latency_s,
        )
    with _quiet_ecologits():
        # Unknown models and zones come back as `errors` on the result, not exceptions.
        impacts = llm_impacts(
            provider=ecologits_provider,
            model_name=model,
            output_token_count=completion_tokens,
            request_latency=latency_s,
            electricity_mix_zone=zone.upper() if zone else None,
        )
    energy = getattr(impacts, "energy", None)
    if energy is None:
        errors = getattr(impacts, "errors", None) or []
        why = "; ".join(str(getattr(e, "message", e)) for e in errors) or "model not registered"
        return EnergyReading.unavailable(
            f"EcoLogits has no estimate for {provider}:{model}: {why}", duration_s=latency_s
        )
    kwh, low, high = _mid(energy.value)
    version = getattr(ecologits, "__version__", "")
    warnings = "; ".join(
        str(getattr(w, "message", w)) for w in (getattr(impacts, "warnings", None) or [])
    )
    note = (
        f"EcoLogits {version} estimate for {provider}:{model}: "
        f"{low * 1000:.4g}-{high * 1000:.4g} Wh, mid-range reported"
        + (f" ({warnings})" if warnings else "")
    )
    gco2e = None
    gwp = getattr(impacts, "gwp", None)
    if zone and gwp is not None:
        gco2e = _mid(gwp.value)[0] * 1000.0  # kgCO2eq -> g
    return EnergyReading(
        joules=kwh * 3.6e6,
        duration_s=latency_s,
        provenance="estimated",
        measured=False,
        meter=["ecologits"],
        note=note,
        gco2e=gco2e,
    )
