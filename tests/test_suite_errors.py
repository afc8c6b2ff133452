"""Bad suite input as a user meets it: one ERROR item with one line naming
file:line:column and the case, while the file's other cases and other suites still run.

Each run has a good suite beside the broken one (``other.suite.yaml``); the loopback
double (tests/loopback.py, a scripted stream, not a model) answers every generation.
Positions in the expected messages are counted by hand in the YAML written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from loopback import LoopbackServer
from suite_runs import MODEL, SuiteLab, error_lines

from pytest_llmlab.suites.checks import check_names


@pytest.fixture
def lab(
    pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> SuiteLab:
    lab = SuiteLab(pytester, server, monkeypatch)
    lab.write("other.suite.yaml", "cases:\n  - {id: fine, prompt: hi, checks: [{contains: ok}]}\n")
    lab.always("ok")
    return lab


@dataclass(frozen=True)
class Bad:
    """A broken suite, the messages of its error items, and how many items pass."""

    text: str
    #: The expected line(s), ``{dir}`` the pytester folder, ``{path}`` the suite file.
    expected: str | tuple[str, ...]
    passed: int
    name: str = "bad.suite.yaml"


BAD = {
    "yaml-syntax": Bad(
        """
        cases:
          - id: one
            prompt: "hi
          - id: two
            prompt: ho
        """,
        ("{path}:6:1: YAML syntax error: found unexpected end of stream "
         "(while scanning a quoted scalar at line 3, column 13)"),
        passed=1,
    ),
    "unknown-top-level-key": Bad(
        """
        suite: b
        casess:
          - {id: one, prompt: hi}
        """,
        ("{path}:2:1: unknown key 'casess' (did you mean 'cases'?); a suite has cases, "
         "defaults, description, suite and case keys (category, checks, context, data, "
         "description, fewshot, format, id, injections, limit, max_tokens, messages, params, "
         "pass_rate, pass_rule, points, prompt, runs, seed, shuffle_seed, stop, structured, system, tags, "
         "temperature, tools, turns, vars)"),
        passed=1,
    ),
    "unknown-case-key": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: typo
            prompt: hi
            max_token: 5
        """,
        ("{path}:6:5: case 'typo': max_token: unknown key (did you mean 'max_tokens'?)",),
        passed=2,
    ),
    "wrong-case-key-type": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: bad
            prompt: hi
            max_tokens: lots
        """,
        ("{path}:6:5: case 'bad': max_tokens: Input should be a valid integer, unable to "
         "parse string as an integer"),
        passed=2,
    ),
    "wrong-check-argument": Bad(
        """
        cases:
          - id: good
            prompt: hi
            checks: [{max_words: 3}]
          - id: bad
            prompt: hi
            checks:
              - contains: ok
              - max_words: lots
        """,
        ("{path}:9:9: case 'bad': max_words: n: Input should be a valid integer, unable to "
         "parse string as an integer"),
        passed=2,
    ),
    "duplicate-case-id": Bad(
        """
        cases:
          - id: same
            prompt: hi
          - id: same
            prompt: ho
        """,
        ("{path}:4:5: duplicate case id 'same' (first at {path}:2:5)",),
        passed=2,
    ),
    "missing-template-variable": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: bad
            prompt: "Capital of {{ contry }}?"
            vars: {country: France}
        """,
        ("{path}:5:5: case 'bad': prompt: 'contry' is undefined in 'Capital of {{ contry }}?'",),
        passed=2,
    ),
    "vars-row-without-the-variable": Bad(
        """
        cases:
          - id: "c-{{ country }}"
            prompt: "Capital of {{ country }}?"
            vars:
              - {country: France}
              - {nation: Japan}
              - {country: Kenya}
        """,
        ("{path}:6:9: case id: 'country' is undefined in 'c-{{ country }}'",),
        passed=3,  # c-France, c-Kenya and the other suite
    ),
    "missing-preset": Bad(
        """
        cases:
          - id: good
            prompt: hi
            system: concise
          - id: bad
            prompt: hi
            system: nosuchpreset
        """,
        ("{path}:7:5: case 'bad': system preset 'nosuchpreset' not found in "
         "{dir}/system_prompts (presets: concise); inline system text needs at least one space"),
        passed=2,
    ),
    "missing-data-file": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: bad
            prompt: "{{ row.q }}"
            data: missing.csv
        """,
        ("{path}:6:5: case 'bad': data file 'missing.csv' not found "
         "(looked for {dir}/missing.csv)"),
        passed=2,
    ),
    "case-without-prompt": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: bad
            checks: [{contains: x}]
        """,
        ("{path}:4:5: case 'bad': needs `prompt:`, `messages:` or `turns:`",),
        passed=2,
    ),
    "bad-check-in-defaults": Bad(
        """
        defaults:
          checks:
            - icontain: x
        cases:
          - {id: a, prompt: hi}
          - {id: b, prompt: ho}
        """,
        tuple(
            f"{{path}}:3:7: case {case!r}: unknown check 'icontain' (did you mean "
            f"'icontains'?); valid checks: {', '.join(check_names())}"
            for case in "ab"
        ),
        passed=1,
    ),
    "points-disagree": Bad(
        """
        cases:
          - id: good
            prompt: hi
          - id: bad
            prompt: hi
            points: 4
            checks: [{contains: a, points: 1}, {contains: b, points: 2}]
        """,
        ("{path}:4:5: case 'bad': points 4 but its checks' points add up to 3; give points "
         "on the case or on its checks"),
        passed=2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD)
def test_bad_input_is_one_error_line_and_the_rest_runs(lab: SuiteLab, bad: Bad) -> None:
    path = lab.write(bad.name, bad.text)
    lab.write("system_prompts/concise.txt", "Be concise.\n")
    result = lab.run()
    messages = (bad.expected,) if isinstance(bad.expected, str) else bad.expected
    result.assert_outcomes(passed=bad.passed, errors=len(messages))
    expected = [m.replace("{path}", str(path)).replace("{dir}", str(lab.path)) for m in messages]
    assert error_lines(result) == expected
    summary = [line for line in result.outlines if line.startswith("ERROR ")]
    assert len(summary) == len(messages)
    assert all(line.startswith(f"ERROR {bad.name}::") for line in summary)


def test_unknown_check_lists_the_valid_ones_and_suggests_the_nearest(lab: SuiteLab) -> None:
    """The list has every built-in check and the conftest's own; the suggestion may be
    a custom one."""
    lab.pytester.makeconftest(
        "def pytest_llmlab_checks(config):\n    return {'no_shouting': lambda gen, args: True}\n"
    )
    path = lab.write(
        "bad.suite.yaml",
        """
        cases:
          - {id: good, prompt: hi, checks: [{no_shouting: 0}]}
          - id: bad
            prompt: hi
            checks:
              - no_shoutin: 0
        """,
    )
    result = lab.run()
    result.assert_outcomes(passed=2, errors=1)
    [line] = error_lines(result)
    prefix = f"{path}:6:9: case 'bad': unknown check 'no_shoutin' (did you mean 'no_shouting'?); "
    assert line.startswith(prefix)
    listed = line.removeprefix(prefix + "valid checks: ").split(", ")
    assert listed == sorted(listed)
    assert {"contains", "icontains", "max_words", "keywords", "choice", "no_shouting"} <= set(
        listed
    )
    assert listed == check_names({"no_shouting": lambda gen, args: True})


def test_unloadable_python_check_is_a_collection_error(lab: SuiteLab) -> None:
    path = lab.write(
        "bad.suite.yaml",
        """
        cases:
          - {id: good, prompt: hi}
          - {id: bad, prompt: hi, checks: [{python: "no_such_module_xyz:check"}]}
        """,
    )
    result = lab.run()
    result.assert_outcomes(passed=2, errors=1)
    [line] = error_lines(result)
    assert line.startswith(f"{path}:3:36: case 'bad': ")
    assert "no_such_module_xyz" in line


def test_bad_jsonl_and_csv_rows_break_only_their_case(lab: SuiteLab) -> None:
    lines = [
        '{"id": "a", "prompt": "hi"}',
        '{"id": "b", "prompt": }',
        '{"id": "c", "prompt": "ho", "evaluation_method": "bleu", "expected_keywords": []}',
        '["not", "an", "object"]',
        '{"id": "d", "prompt": "ok"}',
    ]
    jsonl = lab.write("rows.suite.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(json.JSONDecodeError) as bad_json:
        json.loads(lines[1])
    csv_path = lab.write(
        "rows.suite.csv",
        """
        id,prompt,contains
        e,hi,ok
        f,hi
        g,hi,ok
        """,
    )
    result = lab.run()
    result.assert_outcomes(passed=1 + 2 + 2, errors=3 + 1)
    assert error_lines(result) == [
        f"{csv_path}:3:1: 2 cells, but the header has 3 columns",
        f"{jsonl}:2:{bad_json.value.colno}: invalid JSON: Expecting value",
        f"{jsonl}:3:1: evaluation_method 'bleu' is not supported (supported: keyword_match)",
        f"{jsonl}:4:1: each line must be a JSON object, not list",
    ]


def test_a_bad_data_row_names_the_suite_case_and_the_row(lab: SuiteLab) -> None:
    lab.write("rows.jsonl", '{"q": "one"}\n{"q": \n')
    with pytest.raises(json.JSONDecodeError) as bad_json:
        json.loads('{"q": ')
    path = lab.write(
        "bad.suite.yaml",
        """
        cases:
          - {id: good, prompt: hi}
          - {id: rows, data: rows.jsonl, prompt: "{{ row.q }}"}
        """,
    )
    result = lab.run()
    result.assert_outcomes(passed=2, errors=1)
    assert error_lines(result) == [
        (
            f"{path}:3:16: case 'rows': {lab.path}/rows.jsonl:2:{bad_json.value.colno}: "
            "invalid JSON: Expecting value"
        )
    ]


def test_missing_llm_suite_file_is_a_usage_error(lab: SuiteLab) -> None:
    result = lab.run("--llm-suite=nowhere.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"pytest-llmlab: --llm-suite: no such file: {lab.path}/nowhere.jsonl" in (
        result.stderr.str()
    )


def test_an_error_item_keeps_its_node_id_for_selection(lab: SuiteLab) -> None:
    """The broken case is listed under its own id, so ``-k`` and ``--co`` show it."""
    lab.write(
        "bad.suite.yaml",
        """
        cases:
          - {id: good, prompt: hi}
          - {id: broken, prompt: hi, checks: [{nope: 1}]}
        """,
    )
    assert lab.collected() == [
        f"bad.suite.yaml::good[{MODEL}-T0]",
        "bad.suite.yaml::broken",
        f"other.suite.yaml::fine[{MODEL}-T0]",
    ]
    lab.run("-k", "broken").assert_outcomes(errors=1, deselected=2)
