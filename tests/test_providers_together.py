"""Every provider through the plugin, by its spec: the same suite on the OpenAI-compatible,
Ollama, Anthropic and Gemini doubles in one session gives one leaderboard."""

from __future__ import annotations

import json

import pytest
from anthropic_double import serve_anthropic
from anthropic_double import text_stream as anthropic_text
from gemini_double import KEY as GEMINI_KEY
from gemini_double import response as gemini_response
from gemini_double import serve_gemini
from gemini_double import stream as gemini_stream
from loopback import LoopbackServer, point_vllm_at, stream
from ollama_double import serve_ollama
from ollama_double import text_stream as ollama_text

from pytest_llmlab.report.leaderboard import leaderboard

MODELS = "vllm:tiny,ollama:llama3.2,anthropic:claude-sonnet-4-5,gemini:gemini-2.5-flash"
SUITE = """
cases:
  - id: capital
    category: geography
    prompt: Capital of France? One word.
    points: 2
    checks: [{icontains: paris}]
"""


def test_one_suite_on_four_providers_gives_one_leaderboard(
    pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_vllm_at(monkeypatch, server)
    server.play(stream(["Paris"]))
    with serve_ollama() as ollama, serve_anthropic() as anthropic, serve_gemini() as gemini:
        ollama.play(ollama_text(["Paris"]))
        anthropic.play(anthropic_text(("Paris",)))
        gemini.play(gemini_stream(gemini_response("Lyon", finish="STOP")))
        monkeypatch.setenv("LLMLAB_OLLAMA_BASE_URL", ollama.base_url)
        monkeypatch.setenv("LLMLAB_ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-loopback-key")
        monkeypatch.setenv("LLMLAB_GEMINI_BASE_URL", gemini.base_url)
        monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
        pytester.path.joinpath("capital.suite.yaml").write_text(SUITE, encoding="utf-8")
        result = pytester.runpytest(f"--llm-models={MODELS}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    records = [
        json.loads(line)
        for line in (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(r["provider"] for r in records) == ["anthropic", "gemini", "ollama", "vllm"]
    by_provider = {r["provider"]: r for r in records}
    facts = by_provider["ollama"]["backend"]
    assert facts["runtime"] == "ollama" and facts["quantization"]  # from /api/show
    assert by_provider["vllm"]["backend"] is None
    rows = {row.model: row for row in leaderboard(records)}
    assert set(rows) == set(MODELS.split(","))
    assert rows["gemini:gemini-2.5-flash"].points == {"geography": 0.0}
    assert all(rows[m].points == {"geography": 2.0} for m in rows if not m.startswith("gemini"))
    assert any("points by category" in line for line in result.outlines)


def test_models_list_endpoint_ollama(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llmlab models list --endpoint ollama`: /api/tags with the model facts, and which
    of them /api/ps says are loaded."""
    from ollama_double import DOC_PS, DOC_TAGS

    from pytest_llmlab.cli import main

    with serve_ollama() as ollama:
        monkeypatch.setenv("LLMLAB_OLLAMA_BASE_URL", ollama.base_url)
        assert main(["models", "list", "--endpoint", "ollama"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [model["name"] for model in DOC_TAGS["models"]]
    loaded = {model["name"] for model in DOC_PS["models"]}
    assert [line.split()[0] for line in lines] == names
    for line, model in zip(lines, DOC_TAGS["models"], strict=True):
        assert model["details"]["quantization_level"] in line
        assert line.endswith("loaded") == (model["name"] in loaded)
