"""The plugin as a user drives it: options, ids, precedence, the marker, errors.

These runs use the `llm_spec` / `llm_temperature` fixtures, which need no model, so
they exercise collection and configuration only. Real generations are in
test_local_model.py.
"""

from __future__ import annotations

import pytest

SPEC_TEST = """
def test_x(llm_spec, llm_temperature):
    assert isinstance(llm_spec, str) and isinstance(llm_temperature, float)
"""


def collected_ids(result: pytest.RunResult) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMLAB_MODELS", "LLMLAB_TEMPERATURES", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_models_times_temperatures_in_stable_order(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPEC_TEST)
    result = pytester.runpytest(
        "--collect-only", "-q",
        "--llm-models=local:smollm2-135m,lmstudio:granite-3.0-2b",
        "--llm-temperatures=0,0.7",
    )  # fmt: skip
    assert collected_ids(result) == [
        "test_x[local:smollm2-135m-T0]",
        "test_x[local:smollm2-135m-T0.7]",
        "test_x[lmstudio:granite-3.0-2b-T0]",
        "test_x[lmstudio:granite-3.0-2b-T0.7]",
    ]


def test_duplicates_are_dropped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPEC_TEST)
    result = pytester.runpytest(
        "--collect-only", "-q",
        "--llm-models=local:a,local:a,vllm:b", "--llm-temperatures=0.5,0.50,1",
    )  # fmt: skip
    assert collected_ids(result) == [
        "test_x[local:a-T0.5]",
        "test_x[local:a-T1]",
        "test_x[vllm:b-T0.5]",
        "test_x[vllm:b-T1]",
    ]


def test_alias_shows_in_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPEC_TEST)
    result = pytester.runpytest("--collect-only", "-q", "--llm-models=fast=local:smollm2-135m")
    assert collected_ids(result) == ["test_x[fast-T0]"]


def test_default_is_the_embedded_model_at_temperature_0(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPEC_TEST)
    result = pytester.runpytest("--collect-only", "-q")
    assert collected_ids(result) == ["test_x[local:smollm2-135m-T0]"]


def test_ini_then_env_then_cli(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(SPEC_TEST)
    monkeypatch.setenv("LLMLAB_MODELS", "vllm:from-env")
    monkeypatch.setenv("LLMLAB_TEMPERATURES", "0.1")
    assert collected_ids(pytester.runpytest("--collect-only", "-q")) == [
        "test_x[vllm:from-env-T0.1]"
    ]
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        llm_models = ["llamacpp:from-ini"]
        """
    )
    assert collected_ids(pytester.runpytest("--collect-only", "-q")) == [
        "test_x[llamacpp:from-ini-T0.1]"
    ]
    result = pytester.runpytest("--collect-only", "-q", "--llm-models=openai:from-cli")
    assert collected_ids(result) == ["test_x[openai:from-cli-T0.1]"]


def test_header_says_what_runs_and_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(SPEC_TEST)
    monkeypatch.setenv("LLMLAB_TEMPERATURES", "0.2")
    result = pytester.runpytest("--collect-only", "--llm-models=fast=vllm:m")
    result.stdout.fnmatch_lines(
        [
            "llmlab: models fast=vllm:m (command line); temperatures 0.2 (env LLMLAB_TEMPERATURES); reports *reports"
        ]
    )


MARKER_TESTS = """
import pytest

@pytest.mark.llm(models=["vllm:pinned"], temperatures=[0.3, 0.9])
def test_pinned(llm_spec, llm_temperature):
    pass

@pytest.mark.llm(temperatures=1.5)
def test_temperature_only(llm_spec):
    pass

@pytest.mark.llm(models="fast")
def test_session_alias(llm_spec):
    assert llm_spec == "local:smollm2-135m"

@pytest.mark.llm(models=["vllm:from-class"])
class TestClass:
    def test_inherits(self, llm_spec):
        pass

    @pytest.mark.llm(models=["vllm:closest"])
    def test_closest_wins(self, llm_spec):
        pass

def test_plain(llm_spec):
    pass
"""


def test_marker_replaces_session_models_and_temperatures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MARKER_TESTS)
    result = pytester.runpytest(
        "--collect-only",
        "-q",
        "--llm-models=fast=local:smollm2-135m,openai:x",
        "--llm-temperatures=0",
    )
    assert collected_ids(result) == [
        "test_pinned[vllm:pinned-T0.3]",
        "test_pinned[vllm:pinned-T0.9]",
        "test_temperature_only[fast-T1.5]",
        "test_temperature_only[openai:x-T1.5]",
        "test_session_alias[fast-T0]",
        "TestClass::test_inherits[vllm:from-class-T0]",
        "TestClass::test_closest_wins[vllm:closest-T0]",
        "test_plain[fast-T0]",
        "test_plain[openai:x-T0]",
    ]
    assert (
        pytester.runpytest("--llm-models=fast=local:smollm2-135m", "-k", "session_alias").ret == 0
    )


def test_bad_marker_is_a_collection_error_naming_test_and_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm(models=["bogus:m"])
        def test_bad(llm_spec):
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            (
                "*test_bad_marker_is_a_collection_error_naming_test_and_spec.py::test_bad: "
                "@pytest.mark.llm: unknown provider 'bogus' in model spec 'bogus:m'*"
            )
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_combines_with_user_parametrize(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_x(llm_spec, n):
            pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q", "--llm-models=vllm:a")
    assert collected_ids(result) == ["test_x[vllm:a-T0-1]", "test_x[vllm:a-T0-2]"]


def test_tests_without_llm_fixtures_are_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists(), "no generation, so no report files"
    assert "llmlab energy" not in result.stdout.str(), "no metered test, so no meter started"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--llm-models=nope:m"],
            "*argument --llm-models: unknown provider 'nope' in model spec 'nope:m' (valid providers: anthropic, gemini, llamacpp, lmstudio, local, ollama, openai, vllm)*",
        ),
        (
            ["--llm-models=justaname"],
            "*argument --llm-models: invalid model spec 'justaname': expected 'provider:model'*",
        ),
        (["--llm-temperatures=0,hot"], "*argument --llm-temperatures: 'hot' is not a number*"),
        (["--llm-timeout=-1"], "*argument --llm-timeout: -1 must be greater than 0*"),
    ],
)
def test_bad_command_line_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(SPEC_TEST)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_ini_and_env_are_usage_errors_naming_the_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(SPEC_TEST)
    pytester.makeini("[pytest]\nllm_models = local:ok\n    what:ever\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-llmlab: ini llm_models: unknown provider 'what'*"])
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("LLMLAB_TEMPERATURES", "9")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pytest-llmlab: env LLMLAB_TEMPERATURES: temperature 9 is outside 0..2*"]
    )


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "LLM behaviour and energy tests (pytest-llmlab)" in text
    for flag in (
        "--llm-models", "--llm-temperatures", "--llm-report-dir", "--llm-timeout",
        "--llm-skip-unavailable", "--llm-threads", "--llm-ctx",
    ):  # fmt: skip
        assert flag in text
    for ini in ("llm_models", "llm_lmstudio_base_url", "llm_openai_base_url"):
        assert ini in text
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.llm(models=*"])


def test_requesting_llm_dynamically_is_explained(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_dynamic(request):
            request.getfixturevalue("llm_spec")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*request `llm` as a test or fixture argument*"])


def test_same_ids_on_every_xdist_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SPEC_TEST + MARKER_TESTS.replace("import pytest", "import pytest  # noqa"))
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--llm-models=fast=local:smollm2-135m,openai:x,vllm:y",
        "--llm-temperatures=0,0.7,1",
    )
    # xdist aborts the run if workers collected different tests or orders.
    # test_x 3x3, pinned 1x2, temperature_only 3x1, session_alias 1x3, class 1x3 + 1x3, plain 3x3
    result.assert_outcomes(passed=9 + 2 + 3 + 3 + 3 + 3 + 9)
