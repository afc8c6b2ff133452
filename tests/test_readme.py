"""The README stays true: its commands, its examples and its option list."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import pytest_llmlab

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    first = code_blocks("bash")[0].strip().splitlines()
    assert README.index("```bash") < README.index("\n## ")
    assert len(first) == 2
    assert "pytest examples/" in first[0] and "llmlab models pull smollm2-135m" in first[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert first[1] in ci


def test_python_examples_in_the_readme_pass(pytester: pytest.Pytester) -> None:
    tests = [block for block in code_blocks("python") if "def test_" in block]
    assert len(tests) >= 5
    for number, block in enumerate(tests):
        pytester.makepyfile(**{f"test_readme_{number}": block})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(
        passed=sum(block.count("\ndef test_") + block.startswith("def test_") for block in tests)
    )


def test_every_command_line_option_is_documented(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    flags = set(re.findall(r"(--llm-[a-z0-9-]+)", help_text))
    assert flags, "no --llm-* options found in --help"
    missing = sorted(flag for flag in flags if flag not in README)
    assert not missing, f"options not in README.md: {missing}"
    for ini in re.findall(r"^\s+(llm_[a-z0-9_]+) \(", help_text, flags=re.MULTILINE):
        assert ini in README, f"ini key {ini} not in README.md"


def test_public_api_is_sorted_and_importable() -> None:
    # ruff's RUF022 order: CONSTANTS, then Classes, then the rest, each alphabetical.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert pytest_llmlab.__all__ == sorted(pytest_llmlab.__all__, key=kind)
    for name in pytest_llmlab.__all__:
        assert hasattr(pytest_llmlab, name), name


def test_every_module_imports_without_warnings() -> None:
    names = [
        module.name for module in pkgutil.walk_packages(pytest_llmlab.__path__, "pytest_llmlab.")
    ]
    assert "pytest_llmlab.plugin" in names and "pytest_llmlab.models.openai" in names
    code = "\n".join(f"import {name}" for name in names)
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in names:
            importlib.import_module(name)


def test_plugin_meter_example_in_the_readme_works(pytester: pytest.Pytester) -> None:
    (conftest,) = [b for b in code_blocks("python") if "def pytest_llmlab_make_meters" in b]
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        """
        def test_plug(meter):
            assert "plug" in meter.names
            with meter.window() as w:
                pass
            assert w.reading.other["plug"].joules == 0.0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--llm-meter=none")
    result.assert_outcomes(passed=1)


def _backticked(text: str) -> list[str]:
    return re.findall(r"`([a-z0-9_]+)`", text)


def test_csv_record_columns_are_record_fields() -> None:
    from pytest_llmlab.report.csvfile import CSV_RECORD_FIELDS
    from pytest_llmlab.results import RECORD_FIELDS

    assert CSV_RECORD_FIELDS and set(CSV_RECORD_FIELDS) <= set(RECORD_FIELDS)


def test_readme_record_fields_are_the_record_fields() -> None:
    """The example line plus the fields the paragraph after it names: every field of
    `Record`, and no other."""
    from pytest_llmlab.results import RECORD_FIELDS

    section = README.split("## Reports: `results.jsonl`", 1)[1].split("### `results.csv`")[0]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    also = section.split("Records also carry the", 1)[1]
    nested = {"windows", "mean_prob", "min_prob", "first_token_prob", "perplexity", "entropy"}
    named = set(example) | (set(_backticked(also)) - nested)
    assert named == set(RECORD_FIELDS)
    assert list(example) == [f for f in RECORD_FIELDS if f in example]  # file order


def test_readme_provider_table_is_the_provider_table() -> None:
    from pytest_llmlab.models.providers import PROVIDERS

    section = README.split("## Model specs and providers", 1)[1].split("\n\n", 3)[2]
    rows = {
        cells[1].strip().strip("`"): cells
        for cells in (line.split("|") for line in section.splitlines() if line.startswith("| `"))
    }
    assert set(rows) == set(PROVIDERS)
    for name, info in PROVIDERS.items():
        row = "|".join(rows[name])
        if info.default_base_url is None:
            assert "picked by the OS" in row, name
            continue
        assert f"`llm_{info.base_url_setting}`" in row, name
        assert f"`{info.default_base_url}`" in row, name
        env = info.base_url_env or (f"LLMLAB_{info.base_url_setting.upper()}",)
        assert all(f"`{var}`" in row for var in env), name
        assert f"`{info.api_key_env}`" in row, name
        assert ("required" in row) == info.key_required, name


def _named_blocks(language: str) -> dict[str, str]:
    """Code blocks whose first line is a ``# path`` comment, by that path."""
    named: dict[str, str] = {}
    for block in code_blocks(language):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# (\S+\.(?:ya?ml|csv|jsonl))(?:\s.*)?", first.strip())
        if match:
            named[match.group(1)] = rest
    return named


def test_readme_suite_examples_are_valid_suites(pytester: pytest.Pytester) -> None:
    """Every named suite example in the README, written where its comment says (beside
    a copy of the shipped suites/ and system_prompts/), expands with no broken case and
    collects under its documented ids."""
    import shutil

    from pytest_llmlab.suites.expand import BrokenCase, SuiteContext, read_suite

    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    shutil.copytree(ROOT / "system_prompts", pytester.path / "system_prompts")
    suites = {path: text for path, text in _named_blocks("yaml").items() if ".suite." in path}
    assert {"capitals.suite.yaml", "partial.suite.yaml", "judged.suite.yaml"} <= set(suites)
    assert "suites/structured.suite.yaml" in suites
    for path, text in suites.items():
        pytester.path.joinpath(path).write_text(text, encoding="utf-8")
    (pytester.path / "questions.csv").write_text(
        "id,question,expected\n1,Capital of France?,Paris\n"
    )
    csv_block = next(b for b in code_blocks("csv") if b.startswith("id,prompt,"))
    pytester.path.joinpath("capitals.suite.csv").write_text(csv_block, encoding="utf-8")
    jsonl = next(b for b in code_blocks("json") if "evaluation_method" in b)
    pytester.path.joinpath("custom.suite.jsonl").write_text(jsonl, encoding="utf-8")
    (hook,) = [b for b in code_blocks("python") if "def pytest_llmlab_checks" in b]
    namespace: dict[str, Any] = {}
    exec(hook, namespace)  # noqa: S102  # the README's own code, as a user would paste it
    context = SuiteContext(
        (pytester.path / "system_prompts",), {"no_shouting": namespace["no_shouting"]}
    )
    for path in [*suites, "capitals.suite.csv", "custom.suite.jsonl"]:
        cases = read_suite(pytester.path / path, context)
        broken = [c.message for c in cases if isinstance(c, BrokenCase)]
        assert cases and not broken, (path, broken)
    pytester.makeconftest(hook)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    lines = result.stdout.lines
    assert "capitals.suite.yaml::capital-kenya[local:smollm2-135m-T0]" in lines
    assert "questions.suite.yaml::faq-1[local:smollm2-135m-T0]" in lines
    assert "custom.suite.jsonl::refund-policy[local:smollm2-135m-T0]" in lines


def test_readme_custom_check_example_runs() -> None:
    """The `pytest_llmlab_checks` example: its check passes and fails as documented."""
    (hook,) = [b for b in code_blocks("python") if "def pytest_llmlab_checks" in b]
    namespace: dict[str, Any] = {}
    exec(hook, namespace)  # noqa: S102  # the README's own code, as a user would paste it
    check = namespace["no_shouting"]

    class Said:
        def __init__(self, text: str) -> None:
            self.text = text

    assert check(Said("Hello there, FRIEND"), 1) is True
    assert check(Said("HELLO there, FRIEND"), 1) == "shouted: ['HELLO', 'FRIEND']"
    assert namespace["pytest_llmlab_checks"](None) == {"no_shouting": check}
