"""Cloud models: EcoLogits estimates, grid zones, and the remote/unavailable labels."""

from __future__ import annotations

import sys

import pytest
from loopback import LoopbackServer, stream

from pytest_llmlab import LLM
from pytest_llmlab.energy.cloud import ecologits_reading, zone_intensity
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import parse_spec


def test_ecologits_estimate_for_an_openai_model() -> None:
    reading = ecologits_reading(
        provider="openai", model="gpt-4o-mini", completion_tokens=100, latency_s=2.0, zone=None
    )
    assert reading.provenance == "estimated" and not reading.measured
    assert reading.joules is not None and reading.joules > 0
    assert reading.meter == ["ecologits"]
    assert "EcoLogits" in (reading.note or "") and "mid-range reported" in (reading.note or "")
    # More output tokens cost more energy in the methodology.
    bigger = ecologits_reading(
        provider="openai", model="gpt-4o-mini", completion_tokens=1000, latency_s=2.0, zone=None
    )
    assert bigger.joules is not None and bigger.joules > reading.joules


def test_zone_gives_carbon() -> None:
    reading = ecologits_reading(
        provider="openai", model="gpt-4o-mini", completion_tokens=100, latency_s=2.0, zone="fra"
    )
    assert reading.gco2e is not None and reading.gco2e > 0
    assert zone_intensity("FRA") == pytest.approx(41.44, rel=0.5)  # a low-carbon grid
    assert zone_intensity("WOR") > zone_intensity("FRA")


def test_unknown_model_or_zone_is_unavailable_with_the_reason() -> None:
    reading = ecologits_reading(
        provider="openai", model="no-such-model", completion_tokens=10, latency_s=1.0, zone=None
    )
    assert reading.provenance == "unavailable" and reading.joules is None
    assert "Could not find model `no-such-model`" in (reading.note or "")
    with pytest.raises(ValueError, match="unknown EcoLogits grid zone 'XXX'"):
        zone_intensity("XXX")


def test_provider_ecologits_does_not_model() -> None:
    reading = ecologits_reading(
        provider="vllm", model="m", completion_tokens=10, latency_s=1.0, zone=None
    )
    assert reading.provenance == "unavailable"
    assert "EcoLogits does not model this provider" in (reading.note or "")


def test_without_ecologits_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "ecologits" or m.startswith("ecologits.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ecologits", None)
    reading = ecologits_reading(
        provider="openai", model="gpt-4o-mini", completion_tokens=10, latency_s=1.0, zone=None
    )
    assert reading.provenance == "unavailable"
    assert "pip install 'pytest-llmlab[cloud]'" in (reading.note or "")
    with pytest.raises(ValueError, match=r"pytest-llmlab\[cloud\]"):
        zone_intensity("FRA")


class CloudDouble(OpenAICompatible):
    """The OpenAI cloud as the plugin sees it, served by the loopback protocol double."""

    @property
    def runs_locally(self) -> bool:
        return False

    @property
    def cloud_provider(self) -> str | None:
        return "openai"


def test_cloud_generation_gets_the_ecologits_reading() -> None:
    """Against the loopback protocol double of the OpenAI streaming format (not a real
    server): a cloud generation is estimated by EcoLogits, with cost derived."""
    with LoopbackServer() as server:
        server.play(stream(["Paris"] * 20))
        provider = CloudDouble(
            model="gpt-4o-mini", display="openai:gpt-4o-mini", base_url=server.base_url
        )
        meters = MeterSet([], "no local meters", kwh_price=0.5)
        llm = LLM(
            model_spec=parse_spec("openai:gpt-4o-mini"),
            temperature=0.0,
            provider=provider,
            meters=meters,
        )
        gen = llm.generate("capital?")
        provider.close()
    energy = gen.energy
    assert energy is not None and energy.provenance == "estimated"
    assert energy.meter == ["ecologits"]
    assert energy.joules is not None and energy.joules > 0
    assert energy.wh is not None
    assert energy.wh_per_1k == pytest.approx(energy.wh / gen.usage.completion_tokens * 1000)
    assert energy.cost == pytest.approx(energy.wh / 1000 * 0.5)
    assert energy.duration_s == pytest.approx(gen.timings.total_s)


def test_other_remote_endpoints_are_unavailable() -> None:
    provider = OpenAICompatible(model="m", display="vllm:m", base_url="http://10.255.255.1:8000/v1")
    assert not provider.runs_locally and provider.cloud_provider is None
    official = OpenAICompatible(model="m", display="m", base_url="https://api.openai.com/v1")
    assert official.cloud_provider == "openai" and not official.runs_locally
    provider.close()
    official.close()


def test_bad_grid_zone_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--llm-grid-zone=XXX")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-grid-zone: unknown EcoLogits grid zone 'XXX'*"])


@pytest.mark.parametrize(
    ("ours", "theirs"), [("anthropic", "anthropic"), ("google", "google_genai")]
)
def test_anthropic_and_gemini_map_to_ecologits_providers(ours: str, theirs: str) -> None:
    """The cloud providers of the new protocol modules get EcoLogits estimates: a model
    EcoLogits lists for that provider gives an estimated reading."""
    pytest.importorskip("ecologits")
    from ecologits.model_repository import models

    from pytest_llmlab.energy.cloud import ECOLOGITS_PROVIDERS, ecologits_reading

    assert ECOLOGITS_PROVIDERS[ours] == theirs
    listed = [
        m.name
        for m in models.list_models()
        if str(getattr(m.provider, "value", m.provider)) == theirs
    ]
    reading = ecologits_reading(
        provider=ours, model=listed[0], completion_tokens=100, latency_s=2.0, zone=None
    )
    assert reading.provenance == "estimated" and (reading.joules or 0) > 0
