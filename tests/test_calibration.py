"""Calibrated estimates: the fit, the file, the meter, the CLI and the pytest option."""

from __future__ import annotations

import json
import math
import random
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import LoopbackServer, stream

from pytest_llmlab import cli
from pytest_llmlab.energy.base import CounterSample, Meter, MeterUnavailable, TokenSegment
from pytest_llmlab.energy.calibration import (
    DEFAULT_DIR,
    MIN_RUNS,
    CalibratedMeter,
    Calibration,
    Observation,
    calibration_doubts,
    calibration_plan,
    dumps,
    fit_components,
    load_calibration,
    resolve_calibration,
    run_calibration,
    save_calibration,
    t_quantile,
)
from pytest_llmlab.energy.meters import MeterSet, select_meters
from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import ModelSpec
from pytest_llmlab.report.attribution_pass import attribute_records

#: Known coefficients per component: (J per request, J per prompt token, J per output token).
TRUE = {"cpu": (2.0, 0.01, 0.3), "gpu": (5.0, 0.05, 1.2)}


def synthetic(plan: list[tuple[int, int]], noise: float = 0.0, seed: int = 7) -> list[Observation]:
    """Runs with exactly known energies (plus Gaussian noise of ``noise`` J)."""
    rng = random.Random(seed)
    return [
        Observation(
            p,
            d,
            {k: c + a * p + b * d + rng.gauss(0.0, noise) for k, (c, a, b) in TRUE.items()},
        )
        for p, d in plan
    ]


def grid(runs: int) -> list[tuple[int, int]]:
    """Prompt and output lengths as `calibration_plan` varies them."""
    return [(40 * (1, 2, 4, 8)[i % 4], 128 * (1, 2, 4)[(i // 4) % 3] // 4) for i in range(runs)]


def make_calibration(**changes: object) -> Calibration:
    """A calibration fitted on 12 synthetic runs of known coefficients, plus ``changes``."""
    runs = iter(synthetic(grid(12), noise=0.5))

    def generate(prompt: str, max_tokens: int) -> tuple[EnergyReading, int, int]:
        run = next(runs)
        return _reading_of(run), run.prompt_tokens, run.completion_tokens

    calibration = run_calibration(
        generate,
        name="box",
        model="local:smollm2-135m",
        plan=[("p", 8)] * 12,
        meter="rapl,nvml",
        meter_description="RAPL: package-0; NVML: gpu 0",
        fingerprint=hardware_fingerprint(),
        hardware=hardware(),
        warmup=0,
    )
    return calibration.model_copy(update=changes)


def _reading_of(obs: Observation) -> EnergyReading:
    """A stand-in reading; run_calibration takes the tokens from `generate`."""
    return EnergyReading.model_validate(
        {
            "joules": sum(obs.joules.values()),
            "cpu": {"joules": obs.joules["cpu"], "provenance": "measured"},
            "gpu": {"joules": obs.joules["gpu"], "provenance": "measured"},
            "provenance": "measured",
            "completion_tokens": obs.completion_tokens,
        }
    )


# -- the fit ----------------------------------------------------------------------


def test_exact_runs_give_back_the_coefficients() -> None:
    total, parts = fit_components(synthetic(grid(12)))
    for kind, (c, a, b) in TRUE.items():
        fit = parts[kind]
        assert fit.request_j.value == pytest.approx(c, abs=1e-9)
        assert fit.prefill_j_per_token.value == pytest.approx(a, abs=1e-12)
        assert fit.decode_j_per_token.value == pytest.approx(b, abs=1e-12)
        assert fit.decode_j_per_token.stderr == pytest.approx(0.0, abs=1e-9)
    assert total.decode_j_per_token.value == pytest.approx(0.3 + 1.2)
    assert total.prefill_j_per_token.value == pytest.approx(0.01 + 0.05)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_noisy_runs_recover_the_coefficients_within_their_interval(seed: int) -> None:
    total, parts = fit_components(synthetic(grid(30), noise=1.0, seed=seed))
    fit = parts["gpu"]
    assert fit.decode_j_per_token.value == pytest.approx(1.2, abs=0.05)
    assert fit.prefill_j_per_token.value == pytest.approx(0.05, abs=0.01)
    # The standard error estimates sigma x sqrt((X'X)^-1) for sigma = 1 J.
    expected = math.sqrt(_inverse_normal_matrix(grid(30))[2][2])
    assert 0.5 * expected < fit.decode_j_per_token.stderr < 1.6 * expected
    low, high = fit.decode_j_per_token.ci
    assert low < fit.decode_j_per_token.value < high
    assert high - low == pytest.approx(2 * t_quantile(0.975, 27) * fit.decode_j_per_token.stderr)
    # One design for all: the parts' fits add up to the total's.
    assert total.decode_j_per_token.value == pytest.approx(
        sum(p.decode_j_per_token.value for p in parts.values())
    )


def _inverse_normal_matrix(plan: list[tuple[int, int]]) -> list[list[float]]:
    """(X'X)^-1 of the design [1, prompt, output], by numpy."""
    design = numpy.array([[1.0, p, d] for p, d in plan])
    inverse: list[list[float]] = numpy.linalg.inv(design.T @ design).tolist()
    return inverse


def test_the_fit_is_ordinary_least_squares() -> None:
    """Against numpy's least squares on the same runs: coefficients and standard errors."""
    plan = [(17, 5), (230, 64), (90, 12), (400, 30), (55, 80), (120, 3), (310, 41), (8, 22)]
    observations = synthetic(plan, noise=3.0, seed=11)
    _, parts = fit_components(observations)
    design = numpy.array([[1.0, p, d] for p, d in plan])
    energy = numpy.array([o.joules["cpu"] for o in observations])
    coefficients, residuals, _, _ = numpy.linalg.lstsq(design, energy, rcond=None)
    s2 = float(residuals[0]) / (len(plan) - 3)
    stderr = numpy.sqrt(s2 * numpy.diag(numpy.linalg.inv(design.T @ design)))
    fit = parts["cpu"]
    got = [fit.request_j, fit.prefill_j_per_token, fit.decode_j_per_token]
    assert [c.value for c in got] == pytest.approx(coefficients.tolist(), rel=1e-9, abs=1e-9)
    assert [c.stderr for c in got] == pytest.approx(stderr.tolist(), rel=1e-9)


def test_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    hits = 0
    trials = 400
    for seed in range(trials):
        _, parts = fit_components(synthetic(grid(12), noise=2.0, seed=seed))
        low, high = parts["cpu"].decode_j_per_token.ci
        hits += low <= 0.3 <= high
    assert 0.92 <= hits / trials <= 0.98


@pytest.mark.parametrize(
    ("df", "expected"),
    # Student's t 0.975 quantiles, from the standard tables.
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281), (30, 2.0423)],
)
def test_t_quantile_matches_the_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-5)


def test_lengths_that_do_not_vary_independently_cannot_be_separated() -> None:
    with pytest.raises(ValueError, match="did not vary independently"):
        fit_components(synthetic([(10 * i, 20 * i) for i in range(1, 9)]))  # collinear
    with pytest.raises(ValueError, match="did not vary independently"):
        fit_components(synthetic([(10 * i, 16) for i in range(1, 9)]))  # output fixed
    with pytest.raises(ValueError, match=f"at least {MIN_RUNS} runs"):
        fit_components(synthetic(grid(5)))


def test_the_plan_varies_prompt_and_output_lengths_independently() -> None:
    plan = calibration_plan(12, ["Tell me about owls."], 64)
    assert len({prompt for prompt, _ in plan}) == 12  # numbered: no prompt cache reuse
    repeats = [prompt.count("Tell me about owls.") for prompt, _ in plan]
    assert sorted(set(repeats)) == [1, 2, 4, 8]
    assert sorted({m for _, m in plan}) == [16, 32, 64]
    assert len(set(zip(repeats, (m for _, m in plan), strict=True))) == 12
    with pytest.raises(ValueError, match="--runs must be at least 6"):
        calibration_plan(5, [], 64)


def test_a_weak_calibration_says_why() -> None:
    good = make_calibration()
    assert calibration_doubts(good) == []
    decode = good.total.decode_j_per_token.model_copy(update={"value": 0.01, "ci": (-0.2, 0.22)})
    total = good.total.model_copy(update={"decode_j_per_token": decode})
    weak = make_calibration(total=total, low_confidence_runs=3)
    doubts = calibration_doubts(weak)
    assert any("decode_j_per_token 0.01 is not clearly above 0" in d for d in doubts)
    assert any("3 of 12 runs were low-confidence" in d for d in doubts)


# -- the file ---------------------------------------------------------------------


def test_a_calibration_round_trips_through_its_toml_file(tmp_path: Path) -> None:
    calibration = make_calibration()
    path = save_calibration(calibration, tmp_path / "sub" / "box.toml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# pytest-llmlab energy calibration 'box'")
    assert "--llm-energy-coefficients=box" in text
    assert tomllib.loads(text)["components"]["gpu"]["decode_j_per_token"]["value"] == (
        calibration.components["gpu"].decode_j_per_token.value
    )
    assert load_calibration(path) == calibration
    assert not list(path.parent.glob(".*partial"))


@settings(max_examples=60, deadline=None)
@given(text=st.text(), key=st.text(min_size=1))
def test_any_text_survives_the_toml_writer(text: str, key: str) -> None:
    calibration = make_calibration(meter_description=text, hardware={key: text, "cpus": 3})
    assert Calibration.model_validate(tomllib.loads(dumps(calibration))) == calibration


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no calibration file {path}"),
        ("name = [", "calibration file {path} is not valid TOML"),
        ("format = 7\n", "calibration file {path} has format 7; this version reads format 1"),
        ('format = 1\nname = "x"\n', "calibration file {path} is not a calibration: model: Field required"),
    ],
    ids=["missing", "not-toml", "other-format", "fields-missing"],
)  # fmt: skip
def test_a_bad_file_is_an_error_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "x.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as caught:
        load_calibration(path)
    assert str(caught.value).startswith(message.format(path=path))


def test_names_resolve_in_the_calibrations_folder_and_paths_as_given(tmp_path: Path) -> None:
    assert resolve_calibration("box", tmp_path) == tmp_path / DEFAULT_DIR / "box.toml"
    assert resolve_calibration("cal/box.toml", tmp_path) == tmp_path / "cal" / "box.toml"
    assert resolve_calibration("/abs/b.toml", tmp_path) == Path("/abs/b.toml")
    with pytest.raises(ValueError, match=r"'my box' is not a calibration name.*\.toml file"):
        resolve_calibration("my box", tmp_path)


# -- the meter ----------------------------------------------------------------------


def test_the_calibrated_estimate_is_prefill_and_decode_from_the_tokens() -> None:
    calibration = make_calibration()
    meter = CalibratedMeter(
        calibration, source="cal.toml", this_fingerprint=calibration.fingerprint
    )
    meters = select_meters(("auto",), calibrated=meter, factories=_no_hardware())
    assert meters.names == ["calibrated"] and meters.token_only
    window = meters.open("m")
    time.sleep(0.002)
    window.mark_first_token()
    assert window.first_token is not None
    start, mark = window.start[0].t_ns, window.first_token[0].t_ns
    time.sleep(0.002)
    end = time.monotonic_ns()
    reading = window.close(
        segments=[TokenSegment(start, mark - 1, 100), TokenSegment(mark - 1, end, 40)],
        completion_tokens=40,
    )
    expected: dict[str, tuple[float, float]] = {}
    for kind, fit in calibration.components.items():
        c, a, b = fit.request_j.value, fit.prefill_j_per_token.value, fit.decode_j_per_token.value
        expected[kind] = (c + a * 100, b * 40)
    assert reading.provenance == "estimated" and not reading.measured
    assert reading.cpu is not None and reading.gpu is not None
    assert reading.cpu.domains == ["cpu-calibrated"] and reading.gpu.domains == ["gpu-calibrated"]
    assert reading.cpu.joules == pytest.approx(sum(expected["cpu"]))
    assert reading.prefill_joules == pytest.approx(expected["cpu"][0] + expected["gpu"][0])
    assert reading.decode_joules == pytest.approx(expected["cpu"][1] + expected["gpu"][1])
    assert reading.prefill_joules is not None and reading.decode_joules is not None
    assert reading.prefill_joules + reading.decode_joules == reading.joules
    assert "calibrated estimate 'box' (cal.toml)" in (reading.note or "")
    assert f"fingerprint {calibration.fingerprint}" in (reading.note or "")
    assert "different hardware" not in (reading.note or "")
    # No tokens, no estimate: a meter.window is unavailable, saying why.
    with meters.open("block") as block:
        pass
    assert block.reading is not None and block.reading.joules is None
    assert "needs a generation's tokens" in (block.reading.note or "")


def test_prefill_is_estimated_from_the_prompt_tokens_actually_processed(
    server: LoopbackServer,
) -> None:
    """Through the HTTP client: 1280 of 1500 prompt tokens came from the server's cache
    (OpenAI's ``cached_tokens``), so prefill is 220 tokens' worth."""
    calibration = make_calibration()
    meters = MeterSet([CalibratedMeter(calibration, source="c.toml")], "calibrated")
    provider = OpenAICompatible(
        model="m", display="vllm:m", base_url=server.base_url, api_key=None,
        api_key_env="VLLM_API_KEY", require_key=False, timeout_s=5.0, deadline_s=0,
    )  # fmt: skip
    llm = LLM(model_spec=ModelSpec("vllm", "m"), temperature=0.0, provider=provider, meters=meters)
    try:
        server.play(stream(["Hi", " there", "!"], prompt_tokens=1500, cached_tokens=1280))
        gen = llm.generate("Say hello.")
    finally:
        llm.close()
        provider.close()
    assert gen.energy is not None and gen.energy.prefill_joules is not None
    fit = calibration.total
    tokens = gen.usage.completion_tokens
    assert gen.energy.prefill_joules == pytest.approx(
        fit.request_j.value + fit.prefill_j_per_token.value * 220
    )
    assert gen.energy.decode_joules == pytest.approx(fit.decode_j_per_token.value * tokens)
    segments = gen.energy.windows[0]["segments"]
    assert [s["tokens"] for s in segments] == [220, tokens]


def test_a_foreign_calibration_says_so_in_every_note() -> None:
    meter = CalibratedMeter(make_calibration(), source="c.toml", this_fingerprint="ffffffffffff")
    assert meter.foreign
    assert "this machine is different hardware (fingerprint ffffffffffff)" in meter.description


class FakeRapl:
    name = "rapl"

    def sample(self) -> list[CounterSample]:
        return [CounterSample("package-0", 0.0, time.monotonic_ns())]

    def close(self) -> None:
        pass


def test_measured_meters_win_over_a_calibration() -> None:
    meter = CalibratedMeter(make_calibration(), source="c.toml")
    factories = {**_no_hardware(), "rapl": FakeRapl}
    meters = select_meters(("auto",), calibrated=meter, factories=factories)
    assert meters.names == ["rapl"]
    assert "--llm-energy-coefficients not used: measured meters run" in meters.description
    meters = select_meters(("estimate",), calibrated=meter)
    assert meters.names == ["calibrated"]


def test_overlapping_calibrated_generations_share_nothing() -> None:
    meter = CalibratedMeter(make_calibration(), source="c.toml")
    meters = MeterSet([meter], "calibrated")
    t0 = time.monotonic_ns()
    a = meters.open("a")
    b = meters.open("b")  # overlaps a, in the same process
    a.mark_first_token()
    b.mark_first_token()
    t1 = time.monotonic_ns()
    ra = a.close(segments=[TokenSegment(t0, t1 - 1, 10), TokenSegment(t1, t1 + 1, 20)])
    rb = b.close(segments=[TokenSegment(t0, t1 - 1, 500), TokenSegment(t1, t1 + 1, 90)])
    records = [{"energy": json.loads(r.model_dump_json())} for r in (ra, rb)]
    assert attribute_records(records) == {}
    assert [r["energy"]["joules"] for r in records] == [ra.joules, rb.joules]
    assert ra.joules != rb.joules


def _no_hardware() -> dict[str, Callable[[], Meter]]:
    def unavailable() -> Meter:
        raise MeterUnavailable("not here")

    return {"rapl": unavailable, "nvml": unavailable}


# -- the command line -------------------------------------------------------------


def test_list_show_and_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cals"
    calibration = make_calibration()
    save_calibration(calibration, folder / "box.toml")
    save_calibration(
        make_calibration(name="other", fingerprint="000000000000"), folder / "other.toml"
    )
    (folder / "broken.toml").write_text("format = [")
    assert cli.main(["calibrate", "list", "--dir", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["box", "broken", "other"]
    assert "(this machine)" in lines[0] and "(this machine)" not in lines[2]
    assert "unreadable: calibration file" in lines[1]
    decode = calibration.total.decode_j_per_token.value
    assert f"{decode:.4g} J/decode token" in lines[0]

    assert cli.main(["calibrate", "--dir", str(folder), "show", "box"]) == 0
    out = capsys.readouterr().out
    assert f"calibration 'box' ({folder / 'box.toml'})" in out
    assert "local:smollm2-135m" in out and ": this machine" in out
    for kind in ("total", "cpu", "gpu"):
        assert any(line.split()[:1] == [kind] for line in out.splitlines()), kind
    assert cli.main(["calibrate", "show", str(folder / "other.toml")]) == 0
    assert "not this machine" in capsys.readouterr().out

    assert cli.main(["calibrate", "delete", "box", "--dir", str(folder)]) == 0
    assert "deleted calibration 'box'" in capsys.readouterr().out
    assert not (folder / "box.toml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["calibrate"], "give --model SPEC to calibrate, or one of: list, show NAME, delete NAME"),
        (["calibrate", "show", "nope"], "no calibration 'nope'"),
        (["calibrate", "delete", "bad name"], "'bad name' is not a calibration name"),
        (["calibrate", "--model", "local:smollm2-135m", "--name", "a/b"], "--name: 'a/b' is not"),
        (["calibrate", "--model", "nope:x"], "unknown provider 'nope'"),
        (["calibrate", "--model", "local:smollm2-135m", "--meter", "rapl,none"], "cannot be combined"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_runs_below_the_minimum_are_refused_at_parse_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["calibrate", "--model", "local:smollm2-135m", "--runs", "3"])
    assert exit_info.value.code == 2
    assert "argument --runs: 3 is less than 6" in capsys.readouterr().err


def test_delete_refuses_a_file_that_is_no_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "x"\n')
    assert cli.main(["calibrate", "delete", str(other)]) == 2
    assert "is not a calibration" in capsys.readouterr().err
    assert other.exists()


def test_a_remote_model_cannot_be_calibrated_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["calibrate", "--model", "openai:gpt-4o-mini", "--dir", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "not on this machine" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# -- end to end on the embedded model ---------------------------------------------


def test_calibrate_the_embedded_model_then_estimate_with_it(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine has no RAPL or GPU: the calibration is of the CPU estimate, which is
    enough to check the mechanics, from the stored file to the readings' note."""
    monkeypatch.chdir(pytester.path)
    argv = ["calibrate", "--model", "local:smollm2-135m", "--runs", "6", "--max-tokens", "8",
            "--meter", "estimate", "--name", "ci-box", "--warmup", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    path = pytester.path / DEFAULT_DIR / "ci-box.toml"
    assert f"calibration 'ci-box' ({Path(DEFAULT_DIR) / 'ci-box.toml'})" in captured.out
    assert "use it with: pytest --llm-energy-coefficients=ci-box" in captured.out
    assert captured.err.count("llmlab calibrate: run ") == 6
    calibration = load_calibration(path)
    assert calibration.model == "local:smollm2-135m" and calibration.runs == 6
    assert calibration.meter == "cpu-estimate" and calibration.provenance == "estimated"
    assert calibration.fingerprint == hardware_fingerprint()
    assert set(calibration.components) == {"cpu"}
    assert calibration.completion_tokens[1] <= 8

    pytester.makepyfile(
        """
        def test_estimated(llm):
            gen = llm.generate("Say hi.", max_tokens=6)
            energy = gen.energy
            assert energy.provenance == "estimated" and energy.meter == ["calibrated"]
            assert energy.cpu.domains == ["cpu-calibrated"]
            assert "calibrated estimate 'ci-box'" in energy.note
            assert energy.prefill_joules + energy.decode_joules == energy.joules
        """
    )
    result = pytester.runpytest(
        "--llm-energy-coefficients=ci-box", "--llm-baseline-s=0", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmlab energy: *using calibrated estimate 'ci-box'*"])
    result.stdout.no_fnmatch_line("*CalibrationWarning*")
    (line,) = (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    note = json.loads(line)["energy"]["note"]
    assert f"calibrated estimate 'ci-box' ({path})" in note
    assert f"{calibration.box}" in note


# -- the pytest option ----------------------------------------------------------------


def test_a_calibration_from_other_hardware_warns_once(pytester: pytest.Pytester) -> None:
    foreign = make_calibration(
        name="lab", fingerprint="0123456789ab", hardware={"cpu": "Big CPU", "cpus": 64}
    )
    save_calibration(foreign, pytester.path / "lab.toml")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(
        "--llm-energy-coefficients=lab.toml", "-n", "2", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert out.count("CalibrationWarning: energy calibration 'lab'") == 1
    assert "measured on Big CPU x 64 CPUs (fingerprint 0123456789ab), not on this machine" in out


def test_a_calibration_for_another_model_warns(pytester: pytest.Pytester) -> None:
    save_calibration(make_calibration(model="ollama:qwen2.5:7b"), pytester.path / "q.toml")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--llm-energy-coefficients=q.toml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    warning = (
        "*CalibrationWarning: energy calibration 'box' was measured for "
        "ollama:qwen2.5:7b, not for local:smollm2-135m*"
    )
    result.stdout.fnmatch_lines([warning])
    result.stdout.no_fnmatch_line("*not on this machine*")


@pytest.mark.parametrize("how", ["missing", "corrupt", "bad-name", "env"])
def test_an_unusable_calibration_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    args = ["-p", "no:cacheprovider"]
    folder = pytester.path / DEFAULT_DIR
    if how == "missing":
        args.append("--llm-energy-coefficients=nope")
        expected = f"--llm-energy-coefficients=nope: no calibration file {folder / 'nope.toml'}"
    elif how == "corrupt":
        (pytester.path / "c.toml").write_text("format = 1\nname = 3\n")
        args.append("--llm-energy-coefficients=c.toml")
        expected = (
            f"--llm-energy-coefficients=c.toml: calibration file {pytester.path / 'c.toml'} "
            "is not a calibration: name: Input should be a valid string"
        )
    elif how == "bad-name":
        args.append("--llm-energy-coefficients=a b")
        expected = "--llm-energy-coefficients=a b: 'a b' is not a calibration name"
    else:
        monkeypatch.setenv("LLMLAB_ENERGY_COEFFICIENTS", "gone")
        expected = (
            "--llm-energy-coefficients=gone (from env LLMLAB_ENERGY_COEFFICIENTS): "
            f"no calibration file {folder / 'gone.toml'}"
        )
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"ERROR: pytest-llmlab: {expected}" in err
    assert "Traceback" not in err
