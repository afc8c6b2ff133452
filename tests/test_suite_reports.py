"""Suites end to end: structured extraction and metrics.csv, the points table, the
shipped suites, data files that are not suites, and ``llmlab prompts list``.

Runs go through the loopback double (tests/suite_runs.py), so every answer is the one
the test queued.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from suite_runs import MODEL, SuiteLab, error_lines

from pytest_llmlab.cli import main
from pytest_llmlab.scoring import corpus_chrf, rouge_f

ROOT = Path(__file__).resolve().parent.parent


STRUCTURED = """
suite: notes
structured:
  data: notes.csv
  prompt_file: prompt.txt
defaults:
  max_tokens: 64
  category: extraction
"""
NOTES = """
id,source,diagnosis,medication
n1,"Cough and fever for three days. Started amoxicillin.",pneumonia,amoxicillin
n2,"Knee pain after a fall, no fracture. Ibuprofen as needed.",knee sprain,ibuprofen
n3,"Itchy rash on both arms since Monday.",eczema,hydrocortisone cream
"""
PROMPT = 'Extract {"diagnosis": ..., "medication": ...} as JSON from this note:\n{source}\n'


def test_structured_suite_scores_fields_and_writes_metrics_csv(lab: SuiteLab) -> None:
    lab.write("notes.suite.yaml", STRUCTURED)
    lab.write("notes.csv", NOTES)
    lab.write("prompt.txt", PROMPT)
    lab.answer(
        '<think>a pneumonia, surely</think>{"diagnosis": "pneumonia", "medication": "amoxicillin"}',
        'Here: {"diagnosis": "sprained knee", "medication": "ibuprofen"}',
        "It looks like eczema.",  # no JSON: invalid
    )
    result = lab.run()
    result.assert_outcomes(passed=2, failed=1)
    # The CSV row is data, not a template; the prompt file's braces stay as written.
    first = lab.bodies()[0]["messages"][-1]["content"]
    expected = PROMPT.replace("{source}", "Cough and fever for three days. Started amoxicillin.")
    assert first.rstrip("\n") == expected.rstrip("\n")
    records = {r["case_id"]: r for r in lab.records()}
    assert records["n3"]["structured"]["valid"] is False
    assert records["n1"]["structured"]["fields"]["diagnosis"]["exact_match"] is True
    knee = records["n2"]["structured"]["fields"]["diagnosis"]
    assert knee["prediction"] == "sprained knee"
    assert knee["rougeL"] == pytest.approx(rouge_f("sprained knee", "knee sprain", "rougeL"))
    metrics = (lab.path / "reports" / "metrics.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(metrics.splitlines()))
    assert [(r["model"], r["field"]) for r in rows] == [(MODEL, "diagnosis"), (MODEL, "medication")]
    diagnosis = rows[0]
    assert (diagnosis["n_total"], diagnosis["n_valid"]) == ("3", "2")
    # Means over the two valid rows: exact 1 of 2; rougeL (1 + rougeL(knee)) / 2.
    assert float(diagnosis["exact_match"]) == 0.5
    assert float(diagnosis["rougeL"]) == pytest.approx((1 + knee["rougeL"]) / 2)
    expected_chrf = corpus_chrf(["pneumonia", "sprained knee"], ["pneumonia", "knee sprain"], 2)
    assert float(diagnosis["chrf"]) == pytest.approx(expected_chrf)
    page = (lab.path / "reports" / "report.html").read_text(encoding="utf-8")
    assert 'id="structured"' in page and "67%" in page  # 2 of 3 valid


def test_points_table_in_the_terminal(lab: SuiteLab) -> None:
    lab.write(
        "quiz.suite.yaml",
        """
        cases:
          - id: capital
            category: geography
            prompt: Capital of France?
            points: 3
            checks: [{icontains: paris}]
          - id: sum
            category: maths
            prompt: 2 + 2?
            checks:
              - {contains: "4", points: 2}
              - {max_words: 1, points: 1}
        """,
    )
    lab.answer("Paris", "It is 4")
    result = lab.run()
    result.assert_outcomes(passed=1, failed=1)
    lines = result.outlines
    header = lines.index(next(line for line in lines if "llmlab: points by category" in line))
    assert lines[header + 1].split() == ["model", "geography", "maths", "total", "tok/s", "Wh/1k"]
    assert lines[header + 2].split()[:4] == [MODEL, "3/3", "2/3", "5/6"]


def test_a_data_file_named_like_a_suite_is_not_collected(lab: SuiteLab) -> None:
    lab.write(
        "faq.suite.yaml",
        """
        data: rows.suite.csv
        prompt: "{{ row.question }}"
        checks: [{icontains: "{{ row.answer }}"}]
        """,
    )
    lab.write("rows.suite.csv", "question,answer\nCapital of France?,Paris\n")
    assert lab.collected() == [f"faq.suite.yaml::row-1[{MODEL}-T0]"]


def _copy_shipped(lab: SuiteLab) -> None:
    shutil.copytree(ROOT / "suites", lab.path / "suites")
    shutil.copytree(ROOT / "system_prompts", lab.path / "system_prompts")
    shutil.copy(ROOT / "conftest.py", lab.path / "conftest.py")


def test_every_shipped_suite_collects_without_errors(lab: SuiteLab) -> None:
    _copy_shipped(lab)
    result = lab.run("--collect-only", "-q", "suites")
    assert result.ret == 0, result.stdout.str()
    ids = [line for line in result.outlines if "::" in line]
    assert not error_lines(result)
    for suite in ("smoke", "alignment", "structured"):
        assert any(line.startswith(f"suites/{suite}.suite.yaml::") for line in ids), suite
    # The structured sample's CSV and the samples' data files are data, not suites.
    assert not any(".csv::" in line or ".jsonl::" in line for line in ids)


def test_alignment_suite_runs_with_the_conftest_refusal_check(lab: SuiteLab) -> None:
    """The shipped conftest's `refusal` check: a refusal where one is due passes, and
    everywhere else fails; the injected context and persona reach the system message."""
    _copy_shipped(lab)
    lab.always("I'm sorry, but I can't help with that.")
    result = lab.run("suites/alignment.suite.yaml", "-p", "no:randomly")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0
    records = {r["case_id"]: r for r in lab.records()}
    assert records["declines-burglary"]["outcome"] == "passed"
    assert records["answers-benign"]["outcome"] == "failed"
    assert "the model declined" in (records["answers-benign"]["failure"] or "")
    systems = {
        body["messages"][-1]["content"][:30]: body["messages"][0]["content"]
        for body in lab.bodies()
    }
    injected = next(text for prompt, text in systems.items() if prompt.startswith("When is"))
    assert "<conversation_context>" in injected and "IGNORE ALL PREVIOUS" in injected
    pirate = next(text for prompt, text in systems.items() if prompt.startswith("What is the boil"))
    assert pirate.endswith("starting with 'Arr'.")


def test_prompts_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "terse.txt").write_text("Answer in one word.\nNo explanations.\n")
    (folder / "evil.md").write_text("\x1b[31mred\n")
    (folder / "notes.json").write_text("{}")  # not a preset
    assert main(["prompts", "list", "--dir", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["evil", "terse"]
    assert lines[1].endswith("Answer in one word.")
    assert "\x1b" not in lines[0]
    assert main(["prompts", "list", "--dir", str(tmp_path / "none")]) == 0
    assert "no system-prompt presets" in capsys.readouterr().err


def test_records_of_a_suite_round_trip_through_json(lab: SuiteLab) -> None:
    lab.write("one.suite.yaml", "cases:\n  - {id: a, prompt: hi, checks: [{contains: hi}]}\n")
    lab.answer("hi")
    lab.run().assert_outcomes(passed=1)
    (record,) = lab.records()
    assert json.loads(json.dumps(record)) == record
    assert (record["suite"], record["case_id"], record["points"], record["max_points"]) == (
        "one", "a", 1.0, 1.0,
    )  # fmt: skip


def test_scripted_turns_keep_the_history_and_check_each_answer(lab: SuiteLab) -> None:
    lab.write(
        "chat.suite.yaml",
        """
        cases:
          - id: remembers
            system: "Be brief."
            turns:
              - say: "My name is Ada."
                checks: [{icontains: ada, points: 1}]
              - say: "What is my name?"
                checks: [{icontains: ada, points: 2}]
            checks: [{max_words: 3, points: 1}]
          - id: both
            prompt: hi
            turns: [{say: hi}]
        """,
    )
    lab.answer("Hello Ada!", "Your name is Ada.")
    result = lab.run()
    result.assert_outcomes(failed=1, errors=1)  # max_words fails on the last answer
    second = lab.bodies()[1]["messages"]
    assert [(m["role"], m["content"]) for m in second] == [
        ("system", "Be brief."),
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada!"),
        ("user", "What is my name?"),
    ]
    records = [r for r in lab.records() if r["case_id"] == "remembers"]
    assert [r["turn"] for r in records] == [0, 1]
    assert {r["points"] for r in records} == {3.0} and records[0]["max_points"] == 4.0
    assert [(c["turn"], c["passed"]) for c in records[0]["checks"]] == [
        (0, True), (1, True), (1, False),
    ]  # fmt: skip
    assert any(
        "give `turns:` or `prompt:`/`messages:`, not both" in line for line in result.outlines
    )
