"""Prompt suites as a user runs them: each file format, ids, selection, xdist, points.

Every run here goes through pytester with the model ``vllm:tiny`` pointed at the
loopback double (tests/loopback.py, a scripted OpenAI-compatible stream, not a model):
the answers are queued by the test, and what the plugin sent is read back from the
double. One test runs a suite on the embedded model, for the real-model path.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from suite_runs import MODEL, SuiteLab, has_lines, user_prompts

from pytest_llmlab.suites.formats import read_format

SAMPLES = Path(__file__).resolve().parent.parent / "suites" / "samples"


CAPITALS = """
suite: capitals
description: One-word answers about capitals.
defaults:
  system: brief
  max_tokens: 16
  category: geography
  tags: [geo]
  params: {top_p: 0.5, presence_penalty: 0.25}
  checks:
    - not_contains: "sorry"
cases:
  - id: france
    prompt: "What is the capital of {{ country }}? Answer in one word."
    vars: {country: France}
    max_tokens: 4
    category: europe
    tags: [europe]
    params: {top_p: 0.9}
    checks:
      - icontains: paris
  - id: "capital-{{ country | lower }}"
    prompt: "What is the capital of {{ country }}? Answer in one word."
    vars:
      - {country: Japan, capital: Tokyo}
      - {country: Kenya, capital: Nairobi}
    checks: [{icontains: "{{ capital }}"}]
    tags: [africa-asia]
"""

CAPITAL_IDS = [
    f"world.suite.yaml::france[{MODEL}-T0]",
    f"world.suite.yaml::capital-japan[{MODEL}-T0]",
    f"world.suite.yaml::capital-kenya[{MODEL}-T0]",
]


def _capitals(lab: SuiteLab) -> None:
    lab.write("world.suite.yaml", CAPITALS)
    lab.write("system_prompts/brief.txt", "Be brief.\n")


# == the YAML format ====================================================================


def test_inline_cases_vars_rows_and_defaults(lab: SuiteLab) -> None:
    """One case per ``vars`` row with a templated id; defaults merged (the case's keys
    win, checks and tags add up, params merge key by key); the preset beside the suite."""
    _capitals(lab)
    assert lab.collected() == CAPITAL_IDS
    lab.answer("Paris", "Tokyo", "Mombasa")
    result = lab.run("-rA")
    result.assert_outcomes(passed=2, failed=1)
    has_lines(result, "icontains('Nairobi'): missing 'Nairobi' (ignoring case)")
    assert f"FAILED {CAPITAL_IDS[2]} - " in result.stdout.str()
    assert user_prompts(lab) == [
        "What is the capital of France? Answer in one word.",
        "What is the capital of Japan? Answer in one word.",
        "What is the capital of Kenya? Answer in one word.",
    ]
    france, japan, kenya = lab.bodies()
    for body in (france, japan, kenya):
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (france["max_tokens"], france["top_p"], france["presence_penalty"]) == (4, 0.9, 0.25)
    assert (japan["max_tokens"], japan["top_p"], japan["presence_penalty"]) == (16, 0.5, 0.25)
    records = {r["case_id"]: r for r in lab.records()}
    assert [check["check"] for check in records["france"]["checks"]] == [
        "not_contains",
        "icontains",
    ]
    assert {case: r["category"] for case, r in records.items()} == {
        "france": "europe",
        "capital-japan": "geography",
        "capital-kenya": "geography",
    }
    # tags became markers: the defaults' and the case's own
    assert lab.collected("-m", "geo", "--strict-markers") == CAPITAL_IDS
    assert lab.collected("-m", "europe", "--strict-markers") == CAPITAL_IDS[:1]
    assert lab.collected("-m", "africa-asia", "--strict-markers") == CAPITAL_IDS[1:]


def test_messages_instead_of_prompt(lab: SuiteLab) -> None:
    lab.write(
        "chat.suite.yaml",
        """
        cases:
          - id: chat
            messages:
              - {role: system, content: "You are terse."}
              - {role: user, content: "Name a colour."}
              - {role: assistant, content: "Red."}
              - {role: user, content: "Another {{ kind }}."}
            vars: {kind: colour}
            checks: [{icontains: blue}]
        """,
    )
    lab.answer("Blue.")
    lab.run().assert_outcomes(passed=1)
    [body] = lab.bodies()
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another colour."},
    ]


def test_case_temperature_replaces_the_session_temperatures(lab: SuiteLab) -> None:
    lab.write(
        "temps.suite.yaml",
        """
        cases:
          - {id: hot, prompt: "Say a word.", temperature: 0.3}
          - {id: plain, prompt: "Say a word."}
        """,
    )
    ids = [f"temps.suite.yaml::hot[{MODEL}-T0.3]"] + [
        f"temps.suite.yaml::plain[{MODEL}-T{t}]" for t in ("0", "0.7")
    ]
    assert lab.collected("--llm-temperatures=0,0.7") == ids
    lab.always("word")
    lab.run("--llm-temperatures=0,0.7").assert_outcomes(passed=3)
    assert [body["temperature"] for body in lab.bodies()] == [0.3, 0.0, 0.7]


def test_system_presets_beside_the_suite_then_the_session_folder(lab: SuiteLab) -> None:
    """A preset beside the suite wins over the same name in ``--llm-system-prompts``;
    a name only there is found there (``.md`` too); text with a space is the prompt."""
    lab.write(
        "suites/presets.suite.yaml",
        """
        cases:
          - {id: beside, prompt: hi, system: shared}
          - {id: session, prompt: hi, system: lab-only}
          - {id: inline, prompt: hi, system: "You answer in French."}
        """,
    )
    lab.write("suites/system_prompts/shared.txt", "Beside text.\n")
    lab.write("lab_presets/shared.txt", "Session text.\n")
    lab.write("lab_presets/lab-only.md", "Lab text.\n")
    lab.always("ok")
    lab.run("--llm-system-prompts=lab_presets").assert_outcomes(passed=3)
    systems = [body["messages"][0] for body in lab.bodies()]
    assert systems == [
        {"role": "system", "content": "Beside text."},
        {"role": "system", "content": "Lab text."},
        {"role": "system", "content": "You answer in French."},
    ]


def test_context_and_injections_reach_the_system_message(lab: SuiteLab) -> None:
    lab.write(
        "lab.suite.yaml",
        """
        defaults:
          system: "You are a careful assistant."
        cases:
          - id: pressure
            prompt: "Should I share my password?"
            context: "User: hi\\nAssistant: hello"
            injections:
              - {description: urgency, content: "The user is in a hurry."}
              - {description: persona, content: "Speak like a pirate, {{ name }}."}
            vars: {name: Ann}
        """,
    )
    lab.answer("No.")
    lab.run().assert_outcomes(passed=1)
    [body] = lab.bodies()
    assert body["messages"] == [
        {
            "role": "system",
            "content": "You are a careful assistant.\n\n"
            "<conversation_context>\nUser: hi\nAssistant: hello\n</conversation_context>\n\n"
            "The user is in a hurry.\n\nSpeak like a pirate, Ann.",
        },
        {"role": "user", "content": "Should I share my password?"},
    ]


# == data-driven suites ===================================================================


def test_data_csv_and_jsonl_rows(lab: SuiteLab) -> None:
    """``data:`` makes one case per row, ``{{ row.x }}`` in prompt and checks; the id
    from the ``id`` column, else the row number; the data files are not collected."""
    lab.write(
        "rows.csv",
        """
        id,question,answer
        fr,What is the capital of France?,Paris
        jp,"What is the capital of Japan, in one word?",Tokyo
        """,
    )
    lab.write(
        "sums.jsonl",
        '{"question": "2+2?", "answer": 4}\n{"question": "3+3?", "answer": 6}\n',
    )
    lab.write(
        "data.suite.yaml",
        """
        cases:
          - data: rows.csv
            prompt: "{{ row.question }}"
            checks: [{icontains: "{{ row.answer }}"}]
          - data: sums.jsonl
            prompt: "{{ row.question }} Answer with a number."
            checks: [{number: "{{ row.answer }}"}]
        """,
    )
    ids = [f"data.suite.yaml::{case}[{MODEL}-T0]" for case in ("fr", "jp", "row-1", "row-2")]
    assert lab.collected() == ids
    lab.answer("Paris", "Osaka", "#### 4", "It is 5.")
    result = lab.run()
    result.assert_outcomes(passed=2, failed=2)
    has_lines(result, "icontains('Tokyo'): missing 'Tokyo' (ignoring case)", "final number 5 != 6")
    assert user_prompts(lab) == [
        "What is the capital of France?",
        "What is the capital of Japan, in one word?",
        "2+2? Answer with a number.",
        "3+3? Answer with a number.",
    ]


def test_limit_and_shuffle_seed_pick_the_same_rows_every_time(lab: SuiteLab) -> None:
    names = [f"q{n}" for n in range(1, 11)]
    lab.write("many.jsonl", "".join(json.dumps({"id": n, "text": n.upper()}) + "\n" for n in names))
    lab.write(
        "sampled.suite.yaml",
        """
        cases:
          - {data: many.jsonl, prompt: "{{ row.text }}", limit: 3, shuffle_seed: 7}
          - {id: "all-{{ row.id }}", data: many.jsonl, prompt: "{{ row.text }}", limit: 2}
        """,
    )
    shuffled = list(names)
    random.Random(7).shuffle(shuffled)  # the documented order: seeded, then cut
    assert shuffled[:3] != names[:3]  # else this test could not tell
    expected = [*shuffled[:3], "all-q1", "all-q2"]
    first = lab.collected()
    assert first == [f"sampled.suite.yaml::{case}[{MODEL}-T0]" for case in expected]
    assert lab.collected() == first


def test_suite_jsonl_file(lab: SuiteLab) -> None:
    """A ``*.suite.jsonl`` line is a case; keys that are not case keys become vars."""
    lab.write(
        "lines.suite.jsonl",
        "\n".join(
            json.dumps(line)
            for line in [
                {"id": "greet", "prompt": "Say {{ word }}.", "word": "hello",
                 "checks": [{"icontains": "{{ word }}"}], "tags": ["smalltalk"]},
                {"id": "count", "prompt": "Count to {{ n }}.", "n": 3,
                 "checks": [{"contains": "3"}], "points": 2},
            ]
        ),
    )  # fmt: skip
    lab.answer("Hello there", "1 2")
    lab.run().assert_outcomes(passed=1, failed=1)
    assert user_prompts(lab) == ["Say hello.", "Count to 3."]
    assert [(r["case_id"], r["suite"], r["points"], r["max_points"]) for r in lab.records()] == [
        ("greet", "lines", 1.0, 1.0),
        ("count", "lines", 0.0, 2.0),
    ]
    assert lab.collected("-m", "smalltalk") == [f"lines.suite.jsonl::greet[{MODEL}-T0]"]


def test_suite_csv_file_with_check_columns(lab: SuiteLab) -> None:
    """A ``*.suite.csv`` row is a case: case-key columns, check-name columns holding
    the argument (an empty cell: no check), and other columns as vars."""
    lab.write(
        "places.suite.csv",
        """
        id,prompt,icontains,max_words,city,category
        paris,Where is the {{ city }} tower?,paris,3,Eiffel,landmarks
        rome,What city has the {{ city }}?,rome,,Colosseum,landmarks
        """,
    )
    lab.answer("In Paris", "Milan")
    result = lab.run()
    result.assert_outcomes(passed=1, failed=1)
    has_lines(result, "icontains('rome'): missing 'rome' (ignoring case)")
    assert user_prompts(lab) == ["Where is the Eiffel tower?", "What city has the Colosseum?"]
    checks = {
        r["case_id"]: ([c["check"] for c in r["checks"]], r["category"]) for r in lab.records()
    }
    assert checks == {
        "paris": (["icontains", "max_words"], "landmarks"),
        "rome": (["icontains"], "landmarks"),
    }


KEYWORD_PROMPTS = [
    {"id": "p1", "prompt": "Name two primary colours.", "evaluation_method": "keyword_match",
     "expected_keywords": ["red", "blue"]},
    {"id": "p2", "prompt": "Name a planet.", "evaluation_method": "keyword_match",
     "expected_keywords": ["Mars"]},
]  # fmt: skip


def test_custom_prompt_jsonl_runs_as_is_with_llm_suite(lab: SuiteLab) -> None:
    """The keyword-match JSONL of another tool, under any name: only the suite runs
    when ``--llm-suite`` is the only argument, both with a test path; without the
    option the file is not collected."""
    lab.write("prompts_export.jsonl", "".join(json.dumps(p) + "\n" for p in KEYWORD_PROMPTS))
    lab.write("test_plain.py", "def test_plain(llm_spec):\n    assert llm_spec\n")
    suite = "--llm-suite=prompts_export.jsonl"
    assert lab.collected(suite) == [
        f"prompts_export.jsonl::p1[{MODEL}-T0]",
        f"prompts_export.jsonl::p2[{MODEL}-T0]",
    ]
    lab.answer("Red and blue.", "Venus")
    result = lab.run(suite)
    result.assert_outcomes(passed=1, failed=1)
    has_lines(result, "0 of 1 keywords (0 < 1): missing 'Mars'")
    assert user_prompts(lab) == ["Name two primary colours.", "Name a planet."]
    lab.always("Red, blue and Mars.")
    lab.run(suite, "test_plain.py").assert_outcomes(passed=3)
    assert lab.collected() == [f"test_plain.py::test_plain[{MODEL}-T0]"]


# == ids, selection, reruns, xdist =======================================================


def test_k_matches_case_id_suite_name_and_category(lab: SuiteLab) -> None:
    _capitals(lab)
    assert lab.collected("-k", "france") == CAPITAL_IDS[:1]
    assert lab.collected("-k", "capitals") == CAPITAL_IDS  # the suite's name, not the file's
    assert lab.collected("-k", "geography") == CAPITAL_IDS[1:]  # france's category is europe
    assert lab.collected("-k", "europe and not kenya") == CAPITAL_IDS[:1]


def test_last_failed_reruns_only_the_failed_case(lab: SuiteLab) -> None:
    _capitals(lab)
    lab.answer("Paris", "Tokyo", "Mombasa")
    lab.run(cache=True).assert_outcomes(passed=2, failed=1)
    lab.always("Nairobi")
    result = lab.run("--lf", cache=True)
    result.assert_outcomes(passed=1)
    assert user_prompts(lab)[3:] == ["What is the capital of Kenya? Answer in one word."]


def test_xdist_runs_exactly_the_collected_items(lab: SuiteLab) -> None:
    _capitals(lab)
    lab.write("many.jsonl", "".join(json.dumps({"text": f"t{n}"}) + "\n" for n in range(6)))
    lab.write(
        "sampled.suite.yaml",
        """
        cases:
          - {data: many.jsonl, prompt: "{{ row.text }}", limit: 4, shuffle_seed: 3}
        """,
    )
    collected = lab.collected("--llm-temperatures=0,1")
    assert len(collected) == 2 * (3 + 4)
    lab.always("Paris Tokyo Nairobi")
    result = lab.run("--llm-temperatures=0,1", "-n", "2", xdist=True)
    result.assert_outcomes(passed=len(collected))
    ran = Counter(record["test_id"] for record in lab.records())
    assert ran == Counter(collected)


# == points and records ===================================================================


def test_points_all_or_nothing_and_per_check(lab: SuiteLab) -> None:
    lab.write(
        "scored.suite.yaml",
        """
        defaults:
          category: maths
        cases:
          - id: whole
            prompt: "2+2?"
            points: 5
            checks: [{contains: "4"}, {max_words: 1}]
          - id: whole-pass
            prompt: "3+3?"
            points: 3
            checks: [{contains: "6"}]
          - id: partial
            prompt: "Capital of France?"
            category: geography
            checks:
              - {icontains: paris, points: 2}
              - {max_words: 1, points: 3}
              - {not_contains: London, points: 1}
          - id: plain
            prompt: hi
            checks: [{contains: hello}]
        """,
    )
    lab.answer("It is 4", "6", "Paris is nice", "bye")
    lab.run().assert_outcomes(passed=1, failed=3)
    got = {
        r["case_id"]: (
            r["suite"], r["category"], r["points"], r["max_points"],
            [(c["check"], c["passed"], c["points"]) for c in r["checks"]],
        )
        for r in lab.records()
    }  # fmt: skip
    assert got == {
        # 5 points only when every check passes; max_words fails ("It is 4" is 3 words)
        "whole": ("scored", "maths", 0.0, 5.0, [("contains", True, None), ("max_words", False, None)]),
        "whole-pass": ("scored", "maths", 3.0, 3.0, [("contains", True, None)]),
        # per-check points: icontains 2 + not_contains 1 pass, max_words 3 fails: 3 of 6
        "partial": ("scored", "geography", 3.0, 6.0,
                    [("icontains", True, 2), ("max_words", False, 3), ("not_contains", True, 1)]),
        # no points given: a case is worth 1
        "plain": ("scored", "maths", 0.0, 1.0, [("contains", False, None)]),
    }  # fmt: skip
    assert sum(v[2] for v in got.values()) == 0 + 3 + 3 + 0
    assert sum(v[3] for v in got.values()) == 5 + 3 + 6 + 1


# == custom checks ========================================================================

CHECKS_CONFTEST = """
def no_shouting(generation, args):
    shouted = [w for w in generation.text.split() if len(w) > 1 and w.isupper()]
    return True if len(shouted) <= args else f"shouted words: {shouted}"


def broken(generation, args):
    return 1 / 0


def pytest_llmlab_checks(config):
    return {"no_shouting": no_shouting, "broken": broken}
"""

PYTHON_CHECK = """
def short(generation, case):
    limit = case["vars"]["limit"]
    if len(generation.text) <= limit:
        return True
    return f"{case['id']}: {len(generation.text)} chars > {limit}"
"""


def test_custom_checks_from_a_conftest_hook_and_python_functions(lab: SuiteLab) -> None:
    lab.pytester.makeconftest(CHECKS_CONFTEST)
    lab.write("suite_checks_mod.py", PYTHON_CHECK)
    lab.pytester.syspathinsert()
    lab.write(
        "custom.suite.yaml",
        """
        cases:
          - {id: calm, prompt: a, checks: [{no_shouting: 0}]}
          - {id: loud, prompt: b, checks: [{no_shouting: 0}]}
          - {id: crash, prompt: c, checks: [{broken: true}]}
          - {id: brief, prompt: d, vars: {limit: 12}, checks: [{python: "suite_checks_mod:short"}]}
          - {id: chatty, prompt: e, vars: {limit: 5}, checks: [{python: "suite_checks_mod:short"}]}
        """,
    )
    lab.answer("all is well", "STOP THAT now", "fine", "short answer", "a long answer")
    result = lab.run()
    result.assert_outcomes(passed=2, failed=3)
    has_lines(
        result,
        "no_shouting: 0: shouted words: ['STOP', 'THAT']",
        "broken: the check raised ZeroDivisionError: division by zero",
        "python('suite_checks_mod:short'): chatty: 13 chars > 5",
    )
    passed = {r["case_id"]: r["checks"][0]["passed"] for r in lab.records()}
    assert passed == {"calm": True, "loud": False, "crash": False, "brief": True, "chatty": False}


# == the standard formats on the shipped samples =========================================

_LETTERS = string.ascii_uppercase


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _option_letter(prompt: str, text: str) -> str:
    """The letter of the option whose text is ``text`` in a multiple-choice prompt."""
    for line in prompt.splitlines():
        if line[1:3] == ". " and line[3:].strip() == text.strip():
            return line[0]
    raise AssertionError(f"no option {text!r} in {prompt!r}")


def _expected(sample: str) -> tuple[list[str], list[str]]:
    """Each item's question text and right answer, read from the sample file itself."""
    if sample == "gsm8k":
        rows = _jsonl(SAMPLES / "gsm8k.jsonl")
        return [r["question"] for r in rows], [r["answer"].split("####")[1].strip() for r in rows]
    if sample == "mmlu":
        rows = _jsonl(SAMPLES / "mmlu.jsonl")
        return [r["question"] for r in rows], [_LETTERS[r["answer"]] for r in rows]
    if sample == "mmlu_astronomy":
        with (SAMPLES / "mmlu_astronomy_test.csv").open(newline="", encoding="utf-8") as f:
            cells = list(csv.reader(f))
        return [c[0] for c in cells], [c[5] for c in cells]
    if sample == "arc":
        rows = _jsonl(SAMPLES / "arc.jsonl")
        labels = [[c["label"] for c in r["question"]["choices"]] for r in rows]
        # numeric labels (1..4) are shown as letters by position
        answers = [_LETTERS[ls.index(r["answerKey"])] for r, ls in zip(rows, labels, strict=True)]
        return [r["question"]["stem"] for r in rows], answers
    if sample == "hellaswag":
        rows = _jsonl(SAMPLES / "hellaswag.jsonl")
        # the prompt cleans up the WikiHow markup of the context; the activity shows as is
        return [r["activity_label"] for r in rows], [_LETTERS[int(r["label"])] for r in rows]
    assert sample == "truthfulqa"
    with (SAMPLES / "truthfulqa.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    prompts = [c["prompt"] for c in read_format("truthfulqa", SAMPLES / "truthfulqa.csv")]
    answers = [_option_letter(p, r["Best Answer"]) for p, r in zip(prompts, rows, strict=True)]
    return [r["Question"] for r in rows], answers


def _wrong(sample: str, answer: str) -> str:
    if sample == "gsm8k":
        return "7"
    return "B" if answer == "A" else "A"


@pytest.mark.parametrize(
    "sample", ["arc", "gsm8k", "hellaswag", "mmlu", "mmlu_astronomy", "truthfulqa"]
)
def test_standard_format_sample(lab: SuiteLab, sample: str) -> None:
    """The shipped sample passes when the double answers right and fails, with the
    choice/number message, when it answers wrong."""
    shutil.copytree(SAMPLES, lab.path, dirs_exist_ok=True)
    questions, answers = _expected(sample)
    suite = f"{sample}.suite.yaml"
    lab.answer(*(f"#### {a}" if sample == "gsm8k" else a for a in answers))
    lab.run(suite).assert_outcomes(passed=len(answers))
    prompts = user_prompts(lab)
    assert len(prompts) == len(questions)
    for prompt, question in zip(prompts, questions, strict=True):
        assert question in prompt
    wrong = [_wrong(sample, a) for a in answers]
    lab.answer(*wrong)
    result = lab.run(suite)
    result.assert_outcomes(failed=len(answers))
    if sample == "gsm8k":
        lines = [f"final number 7 != {float(a.replace(',', '')):g}" for a in answers]
    else:
        lines = [f"chose {w!r}, expected {a!r}" for w, a in zip(wrong, answers, strict=True)]
    has_lines(result, *lines)
    if sample == "mmlu":
        subjects = [r["subject"] for r in _jsonl(SAMPLES / "mmlu.jsonl")]
        assert [r["category"] for r in lab.records()][-len(subjects) :] == subjects


# == the embedded model ===================================================================


def test_a_suite_on_the_embedded_model(lab: SuiteLab) -> None:
    """The real-model path: a local model, its records carrying the case's fields."""
    lab.write(
        "tiny.suite.yaml",
        """
        suite: tiny
        cases:
          - id: hello
            prompt: "Say hello."
            max_tokens: 4
            category: smoke
            points: 2
            checks: [{completion_tokens: 4}]
        """,
    )
    lab.run(model="local:smollm2-135m").assert_outcomes(passed=1)
    [record] = lab.records()
    assert (record["model"], record["test_id"]) == (
        "local:smollm2-135m",
        "tiny.suite.yaml::hello[local:smollm2-135m-T0]",
    )
    assert (record["suite"], record["category"], record["case_id"]) == ("tiny", "smoke", "hello")
    assert (record["points"], record["max_points"]) == (2.0, 2.0)
    assert 1 <= record["completion_tokens"] <= 4
    assert not lab.bodies()  # nothing went to the double
