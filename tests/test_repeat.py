"""Repeated sampling: plans, verdicts, early stopping, and tests run N times."""

from __future__ import annotations

import json

import pytest

from pytest_llmlab.option_values import parse_pass_rule
from pytest_llmlab.repeat import RepeatPlan, RunOutcome, run_repeated


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("rate", ("rate", 1)),
        ("Wilson", ("wilson", 1)),
        ("pass@3", ("pass@k", 3)),
        ("pass^2", ("pass^k", 2)),
    ],
)
def test_parse_pass_rule(raw: str, expected: tuple[str, int]) -> None:
    assert parse_pass_rule(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "median", "pass@", "pass@x", "pass@0x", "pass@\u0661", "pass^\uff12"]
)
def test_bad_pass_rule(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a pass rule"):
        parse_pass_rule(raw)


@pytest.mark.parametrize("raw", ["pass@0", "pass^0", "PASS@00"])
def test_pass_rule_k_below_one_is_rejected_at_parse_time(raw: str) -> None:
    """pass@0 / pass^0 used to parse and fail only when the test ran."""
    with pytest.raises(ValueError, match=r"K must be at least 1"):
        parse_pass_rule(raw)


def test_pass_at_zero_on_the_command_line_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(llm_spec):\n    pass\n")
    result = pytester.runpytest("--llm-models=vllm:m", "--llm-pass-rule=pass@0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pass@0*K must be at least 1*"])


def test_pass_at_zero_in_a_marker_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm(runs=3, pass_rule="pass^0")
        def test_a(llm_spec):
            pass
        """
    )
    result = pytester.runpytest("--llm-models=vllm:m")
    result.stdout.fnmatch_lines(["*test_a*pass^0*K must be at least 1*"])
    assert result.ret != pytest.ExitCode.OK


def test_rate_rule_stops_once_decided() -> None:
    plan = RepeatPlan(runs=10, pass_rate=0.8)
    pattern = [True, False, False, False, True, True]
    result = run_repeated(plan, lambda i: RunOutcome(pattern[i], None if pattern[i] else "no"))
    # Three failures of ten: at most 7/10 can pass now, below 0.8.
    assert result.n == 4 and result.stopped_early and not result.ok
    assert result.summary().startswith("1/4 passed (25%, 95% CI ")
    assert "stopped early after 4 of 10" in result.summary()


def test_early_stop_can_be_turned_off() -> None:
    plan = RepeatPlan(runs=10, pass_rate=0.8, early_stop=False)
    result = run_repeated(plan, lambda i: RunOutcome(i % 2 == 0))
    assert result.n == 10 and not result.stopped_early
    assert result.passed == 5 and not result.ok


def test_wilson_is_stricter_than_the_rate() -> None:
    nine_of_ten = [True] * 9 + [False]
    rate = run_repeated(RepeatPlan(runs=10, pass_rate=0.8, early_stop=False),
                        lambda i: RunOutcome(nine_of_ten[i]))  # fmt: skip
    wilson = run_repeated(RepeatPlan(runs=10, pass_rate=0.8, rule="wilson", early_stop=False),
                          lambda i: RunOutcome(nine_of_ten[i]))  # fmt: skip
    assert rate.ok  # 90% >= 80%
    assert not wilson.ok  # the 95% Wilson lower bound of 9/10 is 0.596
    assert wilson.interval[0] == pytest.approx(0.5958, abs=1e-4)


def test_pass_at_k_rule() -> None:
    plan = RepeatPlan(runs=5, pass_rate=0.9, rule="pass@k", k=3, early_stop=False)
    two_of_five = run_repeated(plan, lambda i: RunOutcome(i < 2))
    # pass@3 = 1 - C(3,3)/C(5,3) = 0.9
    assert two_of_five.ok
    assert "pass@3 0.90" in two_of_five.summary()
    one_of_five = run_repeated(plan, lambda i: RunOutcome(i < 1))
    assert not one_of_five.ok  # 1 - C(4,3)/C(5,3) = 0.6


FLAKY = """
import itertools
import pytest

counter = itertools.count()

@pytest.mark.llm(runs=10, pass_rate={rate}{extra})
def test_every_other(llm_spec):
    assert next(counter) % 2 == 0, "odd run"
"""


def test_repeated_test_passes_when_the_rate_is_met(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FLAKY.format(rate=0.5, extra=", early_stop=False"))
    result = pytester.runpytest("-v", "--llm-models=vllm:m")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_every_other?vllm:m-T0? PASSED 5/10*"])


def test_repeated_test_fails_with_the_summary_and_the_failed_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(FLAKY.format(rate=0.8, extra=""))
    result = pytester.runpytest("--llm-models=vllm:m")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # Runs 1, 3, 5 pass; the third failure (run 6) makes 0.8 of 10 unreachable.
            "repeated sampling failed: 3/6 passed (50%, 95% CI 0.19-0.81, stopped early after 6 of 10); rule: pass rate >= 0.8",
            "  run 2: odd run",
            "  run 4: odd run",
            "  run 6: odd run",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_command_line_sets_runs_and_rule(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import itertools
        counter = itertools.count()

        def test_mostly(llm_spec):
            assert next(counter) % 10 != 3
        """
    )
    result = pytester.runpytest(
        "-v", "--llm-models=vllm:m", "--llm-runs=10", "--llm-pass-rate=0.8", "--llm-no-early-stop"
    )
    result.stdout.fnmatch_lines(["*PASSED 9/10*"])
    result = pytester.runpytest(
        "--llm-models=vllm:m", "--llm-runs=10", "--llm-pass-rate=0.8", "--llm-pass-rule=wilson"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rule: Wilson lower bound at 95% >= 0.8*"])


def test_bad_marker_values_are_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm(runs=0)
        def test_a(llm_spec):
            pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*test_a: @pytest.mark.llm: runs=0 must be a whole number >= 1*"])


def test_skips_and_errors_are_not_sampled_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm(runs=5)
        def test_skip(llm_spec):
            pytest.skip("not today")

        @pytest.mark.llm(runs=5)
        def test_error(llm_spec):
            raise RuntimeError("infrastructure")
        """
    )
    result = pytester.runpytest("--llm-models=vllm:m", "-rs")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: infrastructure*", "*not today*"])


def test_half_true_property_at_temperature_0_9(pytester: pytest.Pytester) -> None:
    """The embedded model at T=0.9 answers "Is it going to rain tomorrow? Answer yes
    or no." with a reply that starts with yes or no about 58% of the time (measured:
    58 of 100 seeds). With 40 runs the count of passes is Binomial(40, ~0.58): mean
    23, sd 3.1. pass_rate=0.3 needs 12 passes (3.6 sd below the mean, p < 2e-4 to
    miss even if the sampler changed); pass_rate=0.95 needs 38 (4.8 sd above, out of
    reach). Seeds are fixed (seed 7 + run index), so the runs are reproducible too.
    Early stopping ends both tests as soon as the verdict is certain."""
    pytester.makepyfile(
        """
        import pytest

        def starts_yes_or_no(text):
            return text.strip().lower().startswith(("yes", "no"))

        @pytest.mark.llm(temperatures=[0.9], runs=40, pass_rate=0.3, seed=7, max_tokens=8)
        def test_lenient(llm):
            assert starts_yes_or_no(llm.generate("Is it going to rain tomorrow? Answer yes or no.", logprobs=False).text)

        @pytest.mark.llm(temperatures=[0.9], runs=40, pass_rate=0.95, seed=7, max_tokens=8)
        def test_strict(llm):
            assert starts_yes_or_no(llm.generate("Is it going to rain tomorrow? Answer yes or no.", logprobs=False).text)
        """
    )
    result = pytester.runpytest("-v", "--llm-baseline-s=0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_lenient?local:smollm2-135m-T0.9? PASSED 12/*",
            "*test_strict?local:smollm2-135m-T0.9? FAILED */*",
            "*repeated sampling failed: * stopped early after * of 40); rule: pass rate >= 0.95*",
        ]
    )
    records = [
        json.loads(line)
        for line in (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    ]
    lenient = [r for r in records if "test_lenient" in r["test_id"]]
    assert [r["run"] for r in lenient] == list(range(len(lenient)))
    assert [r["seed"] for r in lenient] == [7 + i for i in range(len(lenient))]
    assert sum(r["run_passed"] for r in lenient) == 12  # stopped at the 12th pass
    assert all(r["sampling"]["passed"] == 12 and r["outcome"] == "passed" for r in lenient)
    strict = [r for r in records if "test_strict" in r["test_id"]]
    assert sum(not r["run_passed"] for r in strict) == 3  # 3 failures decide 0.95 of 40
    assert all(r["outcome"] == "failed" for r in strict)


def test_sample_gives_statistics(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_stats(llm):
            samples = llm.sample("Say hello.", n=4, max_tokens=6, temperature=0.8, seed=3)
            assert len(samples) == 4
            assert [g.request.seed for g in samples] == [3, 4, 5, 6]
            tokens = samples.completion_tokens
            assert tokens.n == 4 and tokens.min <= tokens.median <= tokens.max
            assert tokens.ci_low <= tokens.mean <= tokens.ci_high
            energy = samples.wh_per_1k
            assert energy.n == 4 and energy.mean > 0
            assert samples.ttft_s.max < 60
            assert samples.mean_prob.max <= 1.0
            rate = samples.pass_rate(lambda g: len(g.text) > 0)
            assert rate.passed == 4 and rate.n == 4 and rate.ci_low > 0.4
            assert len(llm.samples()) == 4
        """
    )
    result = pytester.runpytest("--llm-baseline-s=0")
    result.assert_outcomes(passed=1)


BUDGET = """
def test_budgeted(llm):
    llm.generate("Say hello.", max_tokens=6)
"""


def test_energy_budget_fails_with_the_estimate_labelled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BUDGET)
    result = pytester.runpytest("--llm-baseline-s=0", "--llm-energy-budget=0.000001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*budget exceeded:*",
            "*local:smollm2-135m T=0: * Wh/1k > --llm-energy-budget=1e-06 (estimated reading: *cpu-estimate*",
        ]
    )
    result = pytester.runpytest("--llm-baseline-s=0", "--llm-energy-budget=1000000")
    result.assert_outcomes(passed=1)


def test_ttft_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BUDGET)
    result = pytester.runpytest("--llm-baseline-s=0", "--llm-ttft-budget=0.000001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*local:smollm2-135m T=0: TTFT * s > --llm-ttft-budget=1e-06*"])
    pytester.makeini("[pytest]\nllm_ttft_budget = 600\n")
    result = pytester.runpytest("--llm-baseline-s=0")
    result.assert_outcomes(passed=1)
