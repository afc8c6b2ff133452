"""Standard benchmark files read as suite cases (`pytest_llmlab.suites.formats`).

The expected values come from the shipped samples under ``suites/samples/``, read here
with `json` and `csv` directly, or from small files written by each test.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.suites.formats import (
    CHOICE_INSTRUCTION,
    FORMATS,
    NUMBER_INSTRUCTION,
    FewShot,
    FormatError,
    read_format,
)

SAMPLES = Path(__file__).resolve().parent.parent / "suites" / "samples"
MMLU_HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def _answers(cases: list[dict[str, Any]]) -> list[str]:
    return [case["checks"][0]["choice"]["answer"] for case in cases]


def _option(prompt: str, letter: str) -> str:
    """The text of option ``letter`` in a prompt."""
    for line in prompt.splitlines():
        if line.startswith(f"{letter}. "):
            return line[3:]
    raise AssertionError(f"no option {letter} in {prompt!r}")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# --- each format on its shipped sample -----------------------------------------------


def test_formats_lists_the_five_benchmarks() -> None:
    assert FORMATS == ("gsm8k", "mmlu", "arc", "hellaswag", "truthfulqa")


def test_gsm8k_sample() -> None:
    rows = _jsonl(SAMPLES / "gsm8k.jsonl")
    cases = read_format("gsm8k", SAMPLES / "gsm8k.jsonl")
    assert [case["id"] for case in cases] == [f"gsm8k-{n}" for n in range(1, len(rows) + 1)]
    assert [case["line"] for case in cases] == list(range(1, len(rows) + 1))
    assert [case["vars"] for case in cases] == rows
    assert all(case["category"] is None for case in cases)
    assert cases[0]["prompt"] == f"Question: {rows[0]['question']}\n{NUMBER_INSTRUCTION}"
    assert NUMBER_INSTRUCTION == "Solve it step by step, then end with '#### <number>'."
    # The sample's final answers: 18, "1,170" (comma removed), 45, 19.2.
    assert [case["checks"] for case in cases] == [
        [{"number": {"equals": value, "tolerance": 0}}] for value in (18.0, 1170.0, 45.0, 19.2)
    ]


def test_mmlu_csv_sample_in_the_original_layout() -> None:
    path = SAMPLES / "mmlu_astronomy_test.csv"
    rows = _csv(path)
    cases = read_format("mmlu", path)
    assert [case["id"] for case in cases] == [f"astronomy-{n}" for n in range(1, len(rows) + 1)]
    assert [case["line"] for case in cases] == list(range(1, len(rows) + 1))
    assert {case["category"] for case in cases} == {"astronomy"}
    assert _answers(cases) == [row[5] for row in rows]
    assert all(case["checks"][0]["choice"]["choices"] == ["A", "B", "C", "D"] for case in cases)
    question, a, b, c, d, answer = rows[3]  # a quoted choice with a comma in it
    assert "," in b
    assert cases[3]["prompt"] == (
        MMLU_HEADER.format("astronomy")
        + f"{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer with the letter only."
    )
    assert cases[3]["vars"] == {
        "question": question,
        "A": a,
        "B": b,
        "C": c,
        "D": d,
        "answer": answer,
        "subject": "astronomy",
    }


def test_mmlu_jsonl_sample_in_the_hugging_face_layout() -> None:
    path = SAMPLES / "mmlu.jsonl"
    rows = _jsonl(path)
    cases = read_format("mmlu", path)
    assert [case["id"] for case in cases] == [
        f"{row['subject']}-{n}" for n, row in enumerate(rows, start=1)
    ]
    assert [case["category"] for case in cases] == [row["subject"] for row in rows]
    assert len({row["subject"] for row in rows}) > 1
    assert _answers(cases) == ["ABCD"[row["answer"]] for row in rows]
    assert [case["vars"] for case in cases] == rows
    for case, row in zip(cases, rows, strict=True):
        header = MMLU_HEADER.format(row["subject"].replace("_", " "))
        assert case["prompt"].startswith(header + row["question"] + "\nA. ")
        assert (
            _option(case["prompt"], case["checks"][0]["choice"]["answer"])
            == (row["choices"][row["answer"]])
        )
        assert case["prompt"].endswith("\n" + CHOICE_INSTRUCTION)


def test_arc_sample_with_three_to_five_choices_and_numeric_labels() -> None:
    path = SAMPLES / "arc.jsonl"
    rows = _jsonl(path)
    cases = read_format("arc", path)
    assert [case["id"] for case in cases] == [row["id"] for row in rows]
    assert [case["line"] for case in cases] == list(range(1, len(rows) + 1))
    assert [len(case["checks"][0]["choice"]["choices"]) for case in cases] == [
        len(row["question"]["choices"]) for row in rows
    ]
    assert {len(row["question"]["choices"]) for row in rows} == {3, 4, 5}
    for case, row in zip(cases, rows, strict=True):
        stem, choices = row["question"]["stem"], row["question"]["choices"]
        key = [choice["label"] for choice in choices].index(row["answerKey"])
        letter = case["checks"][0]["choice"]["answer"]
        assert letter == "ABCDE"[key]
        assert _option(case["prompt"], letter) == choices[key]["text"]
        assert case["prompt"].startswith(f"Question: {stem}\nA. {choices[0]['text']}\n")
        assert case["vars"] == row
    numeric = next(n for n, row in enumerate(rows) if row["answerKey"].isdigit())
    assert cases[numeric]["checks"][0]["choice"]["choices"] == ["A", "B", "C", "D"]
    assert "\n1. " not in cases[numeric]["prompt"]


def test_hellaswag_sample() -> None:
    path = SAMPLES / "hellaswag.jsonl"
    rows = _jsonl(path)
    cases = read_format("hellaswag", path)
    assert [case["id"] for case in cases] == [f"hellaswag-{row['ind']}" for row in rows]
    assert [case["line"] for case in cases] == list(range(1, len(rows) + 1))
    assert [case["category"] for case in cases] == [row["activity_label"] for row in rows]
    assert _answers(cases) == ["ABCD"[int(row["label"])] for row in rows]
    assert {type(row["label"]) for row in rows} == {int, str}
    first = rows[0]
    assert cases[0]["prompt"] == (
        "Choose the most plausible continuation.\n\n"
        f"{first['activity_label']}: {first['ctx_a']} {first['ctx_b'].capitalize()}\n"
        + "".join(f"{letter}. {ending}\n" for letter, ending in zip("ABCD", first["endings"]))
        + CHOICE_INSTRUCTION
    )
    wikihow = next(n for n, row in enumerate(rows) if "[header]" in row["ctx_a"])
    assert "[" not in cases[wikihow]["prompt"]
    assert "How to repot a houseplant. Choose a slightly larger pot." in cases[wikihow]["prompt"]


def test_truthfulqa_sample_asks_mc1() -> None:
    path = SAMPLES / "truthfulqa.csv"
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    cases = read_format("truthfulqa", path)
    assert [case["id"] for case in cases] == [f"truthfulqa-{n}" for n in range(1, len(rows) + 1)]
    assert [case["line"] for case in cases] == list(range(2, len(rows) + 2))  # header: line 1
    assert [case["category"] for case in cases] == [row["Category"] for row in rows]
    assert [case["vars"] for case in cases] == rows
    for case, row in zip(cases, rows, strict=True):
        choice = case["checks"][0]["choice"]
        incorrect = {answer.strip() for answer in row["Incorrect Answers"].split(";")}
        shown = {_option(case["prompt"], letter) for letter in choice["choices"]}
        assert shown == incorrect | {row["Best Answer"]}
        assert _option(case["prompt"], choice["answer"]) == row["Best Answer"]
        assert case["prompt"].startswith(f"Question: {row['Question']}\n")
        assert case["prompt"].endswith("\n" + CHOICE_INSTRUCTION)
    assert len(set(_answers(cases))) > 1, "the correct answer must not always be one letter"


# --- TruthfulQA's shuffled options -----------------------------------------------------


def test_truthfulqa_order_is_the_same_in_every_process() -> None:
    here = [case["prompt"] for case in read_format("truthfulqa", SAMPLES / "truthfulqa.csv")]
    script = (
        "import json, sys; from pathlib import Path; "
        "from pytest_llmlab.suites.formats import read_format; "
        "print(json.dumps([c['prompt'] for c in read_format('truthfulqa', Path(sys.argv[1]))]))"
    )
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, str(SAMPLES / "truthfulqa.csv")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert json.loads(out.stdout) == here


def test_truthfulqa_mc_task_json_puts_the_correct_answer_at_varying_letters(
    tmp_path: Path,
) -> None:
    # mc_task.json lists the correct MC1 target first; the prompt must not.
    items = [
        {
            "question": f"Is claim number {n} true?",
            "mc1_targets": {"No, it is false.": 1, "Yes.": 0, "Yes, always.": 0, "Often.": 0},
            "mc2_targets": {"No, it is false.": 1, "Yes.": 0},
        }
        for n in range(8)
    ]
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps(items, indent=2), encoding="utf-8")
    cases = read_format("truthfulqa", path)
    assert len(cases) == len(items)
    assert len(set(_answers(cases))) > 1
    for case in cases:
        assert _option(case["prompt"], case["checks"][0]["choice"]["answer"]) == "No, it is false."
        assert case["category"] is None
    # Each element's line is where its `{` is.
    starts = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    assert [case["line"] for case in cases] == starts
    assert read_format("truthfulqa", path) == cases


def test_truthfulqa_hugging_face_mc1_shape(tmp_path: Path) -> None:
    row = {
        "question": "Can a sample question be answered?",
        "mc1_targets": {"choices": ["Wrong one.", "Right one.", "Wrong two."], "labels": [0, 1, 0]},
    }
    path = _write(tmp_path, "tqa.jsonl", "\n" + json.dumps(row) + "\n")
    (case,) = read_format("truthfulqa", path)
    assert case["line"] == 1
    assert _option(case["prompt"], case["checks"][0]["choice"]["answer"]) == "Right one."


# --- few-shot --------------------------------------------------------------------------


def _shots(prompt: str, train: list[dict[str, Any]]) -> list[str]:
    """The train questions a GSM8K prompt shows as solved examples, in order."""
    found = [
        (prompt.index(block), row["question"])
        for row in train
        if (block := f"Question: {row['question']}\nAnswer: {row['answer']}\n\n") in prompt
    ]
    return [question for _, question in sorted(found)]


def test_fewshot_gsm8k_same_seed_same_prompt() -> None:
    fewshot = FewShot(SAMPLES / "gsm8k_train.jsonl", n=2, seed=0)
    first = read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=fewshot)
    again = read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=fewshot)
    assert first == again
    train = _jsonl(SAMPLES / "gsm8k_train.jsonl")
    rows = _jsonl(SAMPLES / "gsm8k.jsonl")
    shots = _shots(first[0]["prompt"], train)
    assert len(shots) == 2
    for case, row in zip(first, rows, strict=True):
        assert _shots(case["prompt"], train) == shots  # one draw, shared by every prompt
        assert case["prompt"].endswith(f"Question: {row['question']}\n{NUMBER_INSTRUCTION}")
        assert case["prompt"].count("Question: ") == 3
    plain = read_format("gsm8k", SAMPLES / "gsm8k.jsonl")
    assert [case["checks"] for case in first] == [case["checks"] for case in plain]
    assert [case["line"] for case in first] == [case["line"] for case in plain]


def test_fewshot_seed_changes_the_selection() -> None:
    train = _jsonl(SAMPLES / "gsm8k_train.jsonl")
    selections = set()
    for seed in range(8):
        fewshot = FewShot(SAMPLES / "gsm8k_train.jsonl", n=2, seed=seed)
        prompt = read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=fewshot)[0]["prompt"]
        shots = _shots(prompt, train)
        assert len(shots) == 2
        selections.add(frozenset(shots))
    assert len(selections) > 1


def test_fewshot_zero_is_no_fewshot() -> None:
    plain = read_format("gsm8k", SAMPLES / "gsm8k.jsonl")
    zero = FewShot(SAMPLES / "gsm8k_train.jsonl", n=0)
    assert read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=zero) == plain


def test_fewshot_negative_n_is_refused() -> None:
    with pytest.raises(ValueError, match="fewshot n must be 0 or more"):
        FewShot(SAMPLES / "gsm8k_train.jsonl", n=-1)


def test_fewshot_mmlu_in_the_original_format(tmp_path: Path) -> None:
    dev = _write(
        tmp_path,
        "astronomy_dev.csv",
        """
        Which body is a star?,The Sun,The Moon,Mars,Ceres,A
        What holds planets in orbit?,Magnetism,Gravity,Friction,Wind,B
        What do we call a group of stars forming a pattern?,An orbit,A comet,A constellation,A moon,C
        """,
    )
    rows = _csv(dev)
    cases = read_format(
        "mmlu", SAMPLES / "mmlu_astronomy_test.csv", fewshot=FewShot(dev, n=2, seed=3)
    )
    prompt = cases[0]["prompt"]
    assert prompt.startswith(MMLU_HEADER.format("astronomy"))
    assert prompt.count("The following are multiple choice questions") == 1
    blocks = [
        f"{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {answer}\n\n"
        for q, a, b, c, d, answer in rows
    ]
    assert sum(block in prompt for block in blocks) == 2
    assert prompt.count("\nAnswer: ") == 2
    assert prompt.endswith("\n" + CHOICE_INSTRUCTION)


def test_fewshot_mmlu_examples_come_from_the_item_subject(tmp_path: Path) -> None:
    rows = [
        {
            "question": f"{subject} question {n}?",
            "subject": subject,
            "choices": list("wxyz"),
            "answer": 0,
        }
        for subject in ("elementary_mathematics", "computer_security", "high_school_geography")
        for n in range(3)
    ]
    train = tmp_path / "mmlu_dev.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    cases = read_format("mmlu", SAMPLES / "mmlu.jsonl", fewshot=FewShot(train, n=2))
    for case in cases:
        shown = [row["subject"] for row in rows if row["question"] in case["prompt"]]
        assert shown == [case["category"]] * 2


def test_fewshot_skips_the_item_itself() -> None:
    path = SAMPLES / "arc.jsonl"
    rows = _jsonl(path)
    cases = read_format("arc", path, fewshot=FewShot(path, n=len(rows) - 1))
    for case, row in zip(cases, rows, strict=True):
        assert case["prompt"].count(row["question"]["stem"]) == 1
        assert case["prompt"].count("\nAnswer: ") == len(rows) - 1


# --- errors name file:line -------------------------------------------------------------

ERRORS = [
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '{"question": "q?", "answer": "x\\n#### 1"}\n{"question": "q?"}\n',
        2,
        "missing field `answer`",
        id="gsm8k-missing-answer",
    ),
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '{"question": "q?", "answer": "It is 4."}\n',
        1,
        "field `answer` has no final answer `#### <number>`",
        id="gsm8k-no-hashes",
    ),
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '{"question": "q?", "answer": "x\\n#### four"}\n',
        1,
        "the final answer after `####` is not a number: 'four'",
        id="gsm8k-not-a-number",
    ),
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '{"question": "q?", "answer": "#### 1"}\n\n{"question": \n',
        3,
        "invalid JSON",
        id="gsm8k-invalid-json",
    ),
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '["q?", "#### 1"]\n',
        1,
        "expected a JSON object, not an array",
        id="gsm8k-not-an-object",
    ),
    pytest.param(
        "gsm8k",
        "a.jsonl",
        '{"question": 7, "answer": "#### 1"}\n',
        1,
        "field `question` must be a string, not a number",
        id="gsm8k-wrong-type",
    ),
    pytest.param(
        "mmlu",
        "x_test.csv",
        "q1?,a,b,c,d,A\nq2?,a,b,c,d,E\n",
        2,
        "answer 'E' is not one of A, B, C, D",
        id="mmlu-csv-label-out-of-range",
    ),
    pytest.param(
        "mmlu",
        "x_test.csv",
        "q1?,a,A\n",
        1,
        "expected question,A,B,C,D,answer (no header), got 3 cells",
        id="mmlu-csv-too-few-cells",
    ),
    pytest.param(
        "mmlu",
        "x.jsonl",
        '{"question": "q?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 4}\n',
        1,
        "`answer` 4 is out of range 0..3",
        id="mmlu-jsonl-label-out-of-range",
    ),
    pytest.param(
        "mmlu",
        "x.jsonl",
        '{"question": "q?", "subject": "s", "choices": "a b c d", "answer": 0}\n',
        1,
        "field `choices` must be a list, not a string",
        id="mmlu-jsonl-choices-not-a-list",
    ),
    pytest.param(
        "arc",
        "a.jsonl",
        '{"id": "x", "question": {"stem": "q?", "choices": [{"text": "a", "label": "A"}, '
        '{"text": "b", "label": "B"}]}, "answerKey": "C"}\n',
        1,
        "answerKey 'C' is not one of the labels A, B",
        id="arc-answer-key-not-a-label",
    ),
    pytest.param(
        "arc",
        "a.jsonl",
        '{"id": "x", "question": {"choices": []}, "answerKey": "A"}\n',
        1,
        "missing field `question.stem`",
        id="arc-missing-stem",
    ),
    pytest.param(
        "hellaswag",
        "h.jsonl",
        '{"ind": 1, "ctx": "c", "endings": ["a", "b", "c", "d"], "label": 4}\n',
        1,
        "`label` 4 is out of range 0..3",
        id="hellaswag-label-out-of-range",
    ),
    pytest.param(
        "hellaswag",
        "h.jsonl",
        '{"ind": 1, "ctx": "c", "endings": ["a", "b", "c", "d"], "label": ""}\n',
        1,
        "field `label` is empty (an unlabeled split cannot be scored)",
        id="hellaswag-unlabeled",
    ),
    pytest.param(
        "truthfulqa",
        "t.csv",
        "Type,Category,Question,Correct Answers,Incorrect Answers,Source\n",
        1,
        "missing column `Best Answer`",
        id="truthfulqa-missing-column",
    ),
    pytest.param(
        "truthfulqa",
        "t.csv",
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        'A,C,"multi\nline?",b,b,"x; y",s\n'
        "A,C,q?,b,b\n",
        4,
        "5 cells, but the header has 7 columns",
        id="truthfulqa-row-after-a-multiline-cell",
    ),
    pytest.param(
        "truthfulqa",
        "t.csv",
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        "A,C,q?,b,b,,s\n",
        2,
        "field `Incorrect Answers` is empty",
        id="truthfulqa-no-incorrect-answers",
    ),
    pytest.param(
        "truthfulqa",
        "mc_task.json",
        '[\n  {"question": "q?", "mc1_targets": {"a": 1, "b": 0}},\n'
        '  {"question": "r?",\n   "mc1_targets": {"a": 1, "b": 1}}\n]\n',
        3,
        "`mc1_targets` must mark exactly one answer 1, not 2",
        id="truthfulqa-mc1-two-correct",
    ),
]


@pytest.mark.parametrize(("name", "filename", "text", "line", "message"), ERRORS)
def test_errors_name_file_and_line(
    tmp_path: Path, name: str, filename: str, text: str, line: int, message: str
) -> None:
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError) as caught:
        read_format(name, path)
    text = str(caught.value)
    assert text.startswith(f"{path}:{line}: ") and message in text, text


def test_error_for_a_missing_column_lists_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", "Question,Incorrect Answers\n")
    with pytest.raises(FormatError, match="Type,Category,Question,Best Answer,"):
        read_format("truthfulqa", path)


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        read_format("mmlu-pro", tmp_path / "x.jsonl")
    assert "unknown format 'mmlu-pro'" in str(caught.value)
    assert "gsm8k, mmlu, arc, hellaswag, truthfulqa" in str(caught.value)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        pytest.param("absent.jsonl", None, "no such file", id="missing"),
        pytest.param("latin1.jsonl", b'{"question": "caf\xe9"}\n', "not UTF-8 text", id="not-utf8"),
        pytest.param("empty.jsonl", b"\n\n", "no items", id="empty"),
        pytest.param("test.parquet", b"PAR1", "export it to JSONL first", id="parquet"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, filename: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FormatError) as caught:
        read_format("gsm8k", path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_folder_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"cannot read"):
        read_format("arc", tmp_path)


def test_fewshot_file_too_small(tmp_path: Path) -> None:
    fewshot = FewShot(SAMPLES / "gsm8k_train.jsonl", n=99)
    with pytest.raises(FormatError) as caught:
        read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=fewshot)
    count = len(_jsonl(SAMPLES / "gsm8k_train.jsonl"))
    assert str(caught.value) == (
        f"{SAMPLES / 'gsm8k_train.jsonl'}: fewshot n=99, but the file has {count} items"
    )


def test_fewshot_file_errors_name_that_file(tmp_path: Path) -> None:
    bad = _write(tmp_path, "train.jsonl", '{"question": "q?", "answer": "no hashes"}\n')
    with pytest.raises(FormatError, match=f"^{bad}:1: field `answer`"):
        read_format("gsm8k", SAMPLES / "gsm8k.jsonl", fewshot=FewShot(bad, n=1))


# --- the shipped samples -----------------------------------------------------------------


def test_every_shipped_sample_parses() -> None:
    import yaml

    suites = sorted(SAMPLES.glob("*.suite.yaml"))
    used: set[Path] = set()
    for suite in suites:
        spec = yaml.safe_load(suite.read_text(encoding="utf-8"))
        assert spec["format"] in FORMATS, suite
        data = suite.parent / spec["data"]
        fewshot = None
        if "fewshot" in spec:
            shots = spec["fewshot"]
            fewshot = FewShot(
                suite.parent / shots["data"], n=shots.get("n", 5), seed=shots.get("seed", 0)
            )
            used.add(fewshot.data)
        cases = read_format(spec["format"], data, fewshot=fewshot)
        assert cases, suite
        assert len({case["id"] for case in cases}) == len(cases), suite
        used.add(data)
    assert set(FORMATS) <= {
        yaml.safe_load(suite.read_text(encoding="utf-8"))["format"] for suite in suites
    }
    data_files = {
        path
        for path in SAMPLES.iterdir()
        if path.is_file() and not path.name.endswith(".suite.yaml")
    }  # the structured/ folder is suites/structured.suite.yaml's (tests/test_structured.py)
    assert data_files == used, "every sample data file is used by a sample suite"
