"""``--llm-cost-budget``: the session's spend on priced generations, held across xdist
workers by one ledger file.

The pytester runs talk to the loopback double of tests/loopback.py (not a model: a
scripted server of OpenAI's documented chat-completions stream, usage in a last chunk
as the ``stream_options.include_usage`` documentation shows) under the priced name
``openai:gpt-4o-mini``, so every generation costs what genai-prices' snapshot says
for the usage the double reports; the double counts the requests it was sent.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.data import providers
from genai_prices.types import ModelPrice
from loopback import LoopbackServer, point_vllm_at, stream

from pytest_llmlab.config import SettingsError, build_settings
from pytest_llmlab.models.spec import parse_spec
from pytest_llmlab.report.prices import format_usd
from pytest_llmlab.results import Record
from pytest_llmlab.spend import CostBudget, budget_reason, ledger_path

PRICED = "openai:gpt-4o-mini"
PROMPT_TOKENS, COMPLETION = 10_000, ("a", "b", "c", "d", "e")
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio")

TESTS = """
import pytest

@pytest.mark.parametrize("n", range(10))
def test_ask(llm, n):
    llm.generate("hi", max_tokens=8)
"""


def one_generation_usd() -> float:
    """What one answer of the double costs at the snapshot's gpt-4o-mini prices."""
    openai = next(p for p in providers if p.id == "openai")
    model = next(m for m in openai.models if m.is_match("gpt-4o-mini"))
    assert isinstance(model.prices, ModelPrice)
    inp, out = model.prices.input_mtok, model.prices.output_mtok
    assert isinstance(inp, Decimal) and isinstance(out, Decimal)
    return (PROMPT_TOKENS * float(inp) + len(COMPLETION) * float(out)) / 1e6


@pytest.fixture
def priced(
    pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> LoopbackServer:
    """``openai:`` (and ``vllm:``) served by the double, with a dummy key."""
    point_vllm_at(monkeypatch, server)
    monkeypatch.setenv("LLMLAB_OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-for-the-double")
    server.default = stream(COMPLETION, prompt_tokens=PROMPT_TOKENS)
    pytester.makepyfile(TESTS)
    return server


def priced_posts(server: LoopbackServer, model: str = "gpt-4o-mini") -> int:
    return sum(1 for post in server.posts if post.body.get("model") == model)


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    text = (pytester.path / "reports" / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_budget_stops_priced_generations_and_fails_the_session(
    pytester: pytest.Pytester, priced: LoopbackServer
) -> None:
    """Room for 2.5 generations: the third starts (2 spent < budget) and reaches it;
    the other seven tests skip at setup with the reason, local ones run on."""
    cost = one_generation_usd()
    budget = 2.5 * cost
    result = pytester.runpytest(
        f"--llm-models={PRICED},vllm:tiny", f"--llm-cost-budget={budget!r}",
        "--llm-meter=none", "-p", "no:xdist", "-rs", *QUIET,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=13, skipped=7)
    assert priced_posts(priced) == 3
    assert priced_posts(priced, "tiny") == 10  # a local model is never held back
    reason = budget_reason(budget, 3 * cost)
    assert reason == f"cost budget of {format_usd(budget)} reached: {format_usd(3 * cost)} spent"
    result.stdout.fnmatch_lines([f"SKIPPED [[]7] *: {reason}"])
    result.stdout.fnmatch_lines(
        [
            (
                f"llmlab cost budget: {format_usd(budget)} reached, {format_usd(3 * cost)} "
                "spent on priced generations (--llm-cost-budget): tests that needed another "
                "skipped"
            ),
            f"  {PRICED}: {format_usd(3 * cost)} of {format_usd(budget)} (120%) in 3 generation(s)",
        ]
    )
    lines = result.stdout.lines
    head = next(i for i, line in enumerate(lines) if line.startswith("llmlab cost budget:"))
    assert not lines[head + 2].startswith("  vllm:tiny")  # unpriced: no line of its own
    spent = [r for r in records(pytester) if r["spec"] == PRICED]
    assert [r["cost"] for r in spent] == [pytest.approx(cost, rel=1e-12)] * 3
    assert {r["cost_source"] for r in spent} == {f"genai-prices {genai_prices.__version__}"}
    assert all(len(r["price_date"]) == 10 for r in spent)
    local = [r for r in records(pytester) if r["spec"] == "vllm:tiny"]
    assert {(r["cost"], r["cost_source"], r["price_date"]) for r in local} == {(None, None, None)}
    assert not (pytester.path / "reports" / ".spool").exists()  # the ledger went with it


def test_under_the_budget_the_session_passes_and_shows_its_spend(
    pytester: pytest.Pytester, priced: LoopbackServer
) -> None:
    cost = one_generation_usd()
    result = pytester.runpytest(
        f"--llm-models={PRICED}", f"--llm-cost-budget={100 * cost!r}",
        "--llm-meter=none", "-p", "no:xdist", *QUIET,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(
        [
            (
                f"llmlab cost budget: {format_usd(10 * cost)} of {format_usd(100 * cost)} "
                "spent on priced generations (--llm-cost-budget)"
            ),
            f"  {PRICED}: {format_usd(10 * cost)} of {format_usd(100 * cost)} (10%)*",
        ]
    )


def test_a_test_making_many_generations_skips_before_the_one_past_the_budget(
    pytester: pytest.Pytester, priced: LoopbackServer
) -> None:
    pytester.makepyfile(
        test_many="""
        def test_many(llm):
            for _ in range(10):
                llm.generate("hi", max_tokens=8)
        """
    )
    cost = one_generation_usd()
    result = pytester.runpytest(
        "test_many.py", f"--llm-models={PRICED}", f"--llm-cost-budget={3.5 * cost!r}",
        "--llm-meter=none", "-p", "no:xdist", "-rs", *QUIET,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(skipped=1)
    assert priced_posts(priced) == 4
    reason = f"cost budget of {format_usd(3.5 * cost)} reached: {format_usd(4 * cost)} spent"
    result.stdout.fnmatch_lines([f"SKIPPED [[]1] test_many.py:*: {reason}"])
    assert [r["outcome"] for r in records(pytester)] == ["skipped"] * 4


def test_under_xdist_one_budget_holds_for_the_whole_session(
    pytester: pytest.Pytester, priced: LoopbackServer
) -> None:
    """Two workers share the ledger: after the budget is reached (three generations),
    only a generation already in flight on the other worker may still start; a budget
    per worker would let each run three."""
    cost = one_generation_usd()
    budget = 2.5 * cost
    result = pytester.runpytest(
        f"--llm-models={PRICED}", f"--llm-cost-budget={budget!r}", "--llm-meter=none",
        "-n", "2", "-rs", *QUIET,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    started = priced_posts(priced)
    assert 3 <= started <= 3 + 1, started
    result.assert_outcomes(passed=started, skipped=10 - started)
    assert {r["worker"] for r in records(pytester)} <= {"gw0", "gw1"}
    spent = format_usd(started * cost)
    result.stdout.fnmatch_lines(
        [f"SKIPPED [[]*] *: cost budget of {format_usd(budget)} reached: $* spent"]
    )
    result.stdout.fnmatch_lines(
        [
            f"llmlab cost budget: {format_usd(budget)} reached, {spent} spent on *",
            f"  {PRICED}: {spent} of {format_usd(budget)} (*%) in {started} generation(s)",
        ]
    )


# -- the ledger and the option ------------------------------------------------------------


def charged(model: str, cost: float | None) -> Record:
    """A record that `price_record` prices at ``cost`` (the user's table)."""
    return {"spec": f"openai:{model}", "model": f"openai:{model}", "provider": "openai",
            "prompt_tokens": int(cost * 1e6) if cost else 0, "completion_tokens": 0,
            "finished_at": 0.0}  # type: ignore[typeddict-item]  # fmt: skip


def test_the_ledger_adds_up_across_processes(tmp_path: Path) -> None:
    """Two processes charging 200 generations each at once lose no addition."""
    path = ledger_path(tmp_path, "run-1")
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from pytest_llmlab.spend import CostBudget
        from pytest_llmlab.option_values import Price
        budget = CostBudget(1e9, {{"mine": Price(1.0, 0.0)}}, Path({str(path)!r}))
        for _ in range(200):
            budget.charge({{"spec": "openai:mine", "model": "openai:mine",
                            "provider": "openai", "prompt_tokens": 1, "completion_tokens": 0,
                            "finished_at": 0.0}})
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    spent = CostBudget(1.0, {}, path).spent()
    assert spent == {"openai:mine": pytest.approx(400 * 1e-6, rel=1e-9)}
    assert path.parent == tmp_path / ".spool" / "run-1"


def test_check_skips_only_priced_models_once_spent(tmp_path: Path) -> None:
    from pytest_llmlab.option_values import Price

    budget = CostBudget(0.001, {"mine": Price(1.0, 0.0)}, ledger_path(tmp_path, "r"))
    mine, local = parse_spec("openai:mine"), parse_spec("vllm:tiny")
    budget.check(mine)
    record = charged("mine", 0.001)
    budget.charge(record)
    assert record["cost"] == pytest.approx(0.001) and record["cost_source"] == "llm_prices"
    budget.check(local)  # not priced: never held back
    with pytest.raises(pytest.skip.Exception, match=r"cost budget of \$0\.001 reached"):
        budget.check(mine)
    free = CostBudget(None, {"mine": Price(1.0, 0.0)}, ledger_path(tmp_path, "other"))
    free.charge(charged("mine", 5.0))  # without a budget nothing is counted
    free.check(mine)
    assert free.spent() == {} and not ledger_path(tmp_path, "other").exists()
    memory = CostBudget(0.001, {"mine": Price(1.0, 0.0)})  # no report folder
    memory.charge(charged("mine", 0.002))
    assert math.isclose(memory.spent()["openai:mine"], 0.002)


def test_the_option_has_three_spellings_and_must_be_positive() -> None:
    def settings(**sources: dict[str, Any]) -> float | None:
        built = build_settings(
            cli=sources.get("cli", {}), ini=sources.get("ini", {}), env=sources.get("env", {})
        )
        return built.cost_budget

    assert settings() is None
    assert settings(cli={"llm_cost_budget": 2.5}) == 2.5
    assert settings(ini={"llm_cost_budget": "1.5"}, env={"LLMLAB_COST_BUDGET": "9"}) == 1.5
    assert settings(env={"LLMLAB_COST_BUDGET": "0.25"}) == 0.25
    with pytest.raises(SettingsError, match="env LLMLAB_COST_BUDGET: 0 must be greater than 0"):
        settings(env={"LLMLAB_COST_BUDGET": "0"})


def test_help_names_the_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*--llm-cost-budget=COST_BUDGET*", "*llm_cost_budget (string)*"])
