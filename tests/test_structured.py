"""Structured extraction from a CSV (`pytest_llmlab.suites.structured`) and its
``metrics.csv`` (`pytest_llmlab.report.metrics`).

Per-field scores are compared with ``rouge_score`` and ``sacrebleu`` called directly on
the same strings; the metrics rows are computed by hand from a few synthetic records.
"""

from __future__ import annotations

import csv
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
from hypothesis import given
from hypothesis import strategies as st
from rouge_score import rouge_scorer  # type: ignore[import-untyped]

from pytest_llmlab.errors import FormatError, SuiteError
from pytest_llmlab.report.metrics import (
    METRICS_COLUMNS,
    metrics_rows,
    structured_summary,
    write_metrics_csv,
)
from pytest_llmlab.scoring import exact_match
from pytest_llmlab.suites.structured import (
    FieldScore,
    StructuredSpec,
    read_structured,
    score_fields,
    strip_thinking,
    target_model,
)

SAMPLE = Path(__file__).resolve().parent.parent / "suites" / "samples" / "structured"
NOTES = """\
id,source,diagnosis,medication
a,"Cough and fever, crackles at the left base.",pneumonia,amoxicillin
b,"Headache for three days.",migraine,ibuprofen
"""


def _write(folder: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding=encoding)
    return path


def _spec(folder: Path, prompt: str, data: str = NOTES, **kwargs: Any) -> StructuredSpec:
    return StructuredSpec(
        data=_write(folder, "notes.csv", data),
        prompt_file=_write(folder, "prompt.txt", prompt),
        **kwargs,
    )


def _error(spec: StructuredSpec) -> str:
    with pytest.raises(FormatError) as info:
        read_structured(spec)
    assert isinstance(info.value, SuiteError)
    return str(info.value)


# --------------------------------------------------------------------------- reading


def test_the_source_token_is_replaced_and_other_braces_are_left_alone(tmp_path: Path) -> None:
    prompt = 'Answer like {"diagnosis": {"name": "x"}, "medication": "y"} {x} {0}\n{source}\n'
    rows = read_structured(_spec(tmp_path, prompt))
    head = 'Answer like {"diagnosis": {"name": "x"}, "medication": "y"} {x} {0}\n'
    assert [r.prompt for r in rows] == [
        head + "Cough and fever, crackles at the left base.",
        head + "Headache for three days.",
    ]
    assert [r.id for r in rows] == ["a", "b"]
    assert [r.line for r in rows] == [2, 3]
    assert rows[0].references == {"diagnosis": "pneumonia", "medication": "amoxicillin"}
    assert rows[0].source == "Cough and fever, crackles at the left base."


def test_jinja2_source_and_row_columns_render_with_json_braces_untouched(tmp_path: Path) -> None:
    prompt = (
        'Return {"diagnosis": "...", "medication": "..."}.\n'
        "Note {{ row.id }}: {{ source }} / {source} / {{source}} / {{ row['diagnosis'] }}\n"
    )
    rows = read_structured(_spec(tmp_path, prompt))
    assert rows[1].prompt == (
        'Return {"diagnosis": "...", "medication": "..."}.\n'
        "Note b: Headache for three days. / Headache for three days. / "
        "Headache for three days. / migraine"
    )


def test_a_source_with_template_syntax_is_inserted_as_text(tmp_path: Path) -> None:
    data = 'source,diagnosis\n"{{ row.diagnosis }} {source} {% if x %}",flu\n'
    for prompt in ("{source}", "{{ source }}", "{source} {{ row.diagnosis }}"):
        (row,) = read_structured(_spec(tmp_path, prompt, data))
        assert row.prompt.startswith("{{ row.diagnosis }} {source} {% if x %}")


@given(st.text(alphabet="{}%# source\nab", max_size=40))
def test_any_source_text_reaches_the_prompt_verbatim(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        quoted = text.replace('"', '""')
        data = f'source,diagnosis\n"{quoted}",flu\n'
        for prompt in ("<{source}>", "<{{ source }}>"):
            # Written as is: `_write` dedents, which would empty a whitespace-only line.
            (Path(folder) / "notes.csv").write_text(data, encoding="utf-8")
            (Path(folder) / "prompt.txt").write_text(prompt, encoding="utf-8")
            spec = StructuredSpec(Path(folder) / "notes.csv", Path(folder) / "prompt.txt")
            if not text.strip():
                continue  # a blank row is skipped, as in every data file
            (row,) = read_structured(spec)
            assert row.prompt == f"<{text}>"


def test_ids_default_to_row_numbers_and_lines_follow_the_file(tmp_path: Path) -> None:
    data = (
        "\ufeffsource,diagnosis,medication\n"  # a BOM from a spreadsheet tool
        '"two\nlines",flu,none\n'
        "\n"
        "third,cold,none\n"
    )
    rows = read_structured(_spec(tmp_path, "{source}", data))
    assert [(r.id, r.line, r.source) for r in rows] == [
        ("row-1", 2, "two\nlines"),
        ("row-2", 5, "third"),
    ]
    assert list(rows[0].references) == ["diagnosis", "medication"]


def test_targets_and_source_can_be_named(tmp_path: Path) -> None:
    data = "id,note,diagnosis,medication\nx,Sore throat.,pharyngitis,none\n"
    spec = _spec(tmp_path, "{source}", data, source="note", targets=("medication",))
    (row,) = read_structured(spec)
    assert (row.prompt, row.references) == ("Sore throat.", {"medication": "none"})


def test_the_shipped_sample_reads(tmp_path: Path) -> None:
    spec = StructuredSpec(SAMPLE / "notes.csv", SAMPLE / "prompt.txt")
    rows = read_structured(spec)
    assert len(rows) == 5
    assert all(list(r.references) == ["diagnosis", "medication"] for r in rows)
    assert all(r.source in r.prompt and '{"diagnosis": ' in r.prompt for r in rows)


@pytest.mark.parametrize(
    ("data", "prompt", "kwargs", "message"),
    [
        (
            "id,text,diagnosis\na,x,flu\n",
            "{source}",
            {},
            r"notes\.csv:1: no source column 'source'",
        ),
        (
            NOTES,
            "{source}",
            {"targets": ("diagnosis", "dose")},
            r"notes\.csv:1: target column 'dose' is not in the header",
        ),
        ("", "{source}", {}, r"notes\.csv:1:1: empty CSV file"),
        ("source,diagnosis\n", "{source}", {}, r"notes\.csv: no data rows"),
        ("id,source\na,x\n", "{source}", {}, r"notes\.csv:1: no target columns"),
        (
            "id,source,diagnosis\na,x,flu\nb,y,flu\na,z,flu\n",
            "{source}",
            {},
            r"notes\.csv:4: duplicate id 'a' \(first at line 2\)",
        ),
        ("source,diagnosis\nx,flu,extra\n", "{source}", {}, r"notes\.csv:2: 3 cells"),
        (NOTES, "Nothing to see.", {}, r"prompt\.txt: the prompt never uses the source"),
        (
            NOTES,
            "line one\n{{ source }} {{ row.dose }}\n",
            {},
            r"prompt\.txt:2: .*'dose'.*notes\.csv:2",
        ),
        (NOTES, "one\ntwo {{ source\n", {}, r"prompt\.txt:2: template syntax error"),
    ],
)
def test_errors_name_the_file_and_line(
    tmp_path: Path, data: str, prompt: str, kwargs: dict[str, Any], message: str
) -> None:
    text = _error(_spec(tmp_path, prompt, data, **kwargs))
    assert re.match(re.escape(str(tmp_path)) + "/" + message, text), text


def test_missing_files_are_format_errors(tmp_path: Path) -> None:
    data = _write(tmp_path, "notes.csv", NOTES)
    text = _error(StructuredSpec(data, tmp_path / "missing.txt"))
    assert text == f"{tmp_path}/missing.txt: no such file (the prompt_file of {data})"
    text = _error(StructuredSpec(tmp_path / "none.csv", tmp_path / "missing.txt"))
    assert text == f"{tmp_path}/none.csv: no such file"


# --------------------------------------------------------------------------- schema


def test_target_model_requires_every_key_and_aliases_odd_names() -> None:
    model = target_model(["diagnosis", "side effects", "json", "model_id"])
    schema = model.model_json_schema()
    assert list(schema["properties"]) == ["diagnosis", "side effects", "json", "model_id"]
    assert schema["required"] == ["diagnosis", "side effects", "json", "model_id"]
    assert schema["properties"]["side effects"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    value = {"diagnosis": None, "side effects": "rash", "json": 3, "model_id": [1, "b"]}
    answer = model.model_validate(value).model_dump(by_alias=True)
    assert answer == {"diagnosis": None, "side effects": "rash", "json": "3", "model_id": "1, b"}
    assert target_model(("diagnosis", "side effects", "json", "model_id")) is model


# --------------------------------------------------------------------------- scoring

REFS = {"diagnosis": "community acquired pneumonia", "medication": "amoxicillin"}


def test_think_blocks_are_stripped() -> None:
    assert strip_thinking('<think>{"a": 1}</think>{"b": 2}') == '{"b": 2}'
    assert strip_thinking('planning {"a": 1}</think>\n{"b": 2}') == '\n{"b": 2}'
    assert strip_thinking('{"b": 2} <think>{"a": 1} and then') == '{"b": 2} '
    assert strip_thinking("<think>cut off while thinking") == ""
    answer = '<think>maybe {"diagnosis": "flu", "medication": "none"}</think>' + (
        '{"diagnosis": "community acquired pneumonia", "medication": "amoxicillin"}'
    )
    score = score_fields(answer, REFS)
    assert score.valid and all(f.exact_match for f in score.fields.values())
    unclosed = score_fields('<think>{"diagnosis": "flu", "medication": "none"}', REFS)
    assert not unclosed.valid


def _scores(prediction: str, reference: str) -> tuple[float, ...]:
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    got = rouge.score(reference, prediction)
    return (
        got["rouge1"].fmeasure,
        got["rouge2"].fmeasure,
        got["rougeL"].fmeasure,
        sacrebleu.sentence_bleu(prediction, [reference]).score,
        sacrebleu.sentence_chrf(prediction, [reference], word_order=2).score,
    )


def test_field_scores_match_rouge_score_and_sacrebleu() -> None:
    answer = (
        "Here you go:\n```json\n"
        '{"diagnosis": "pneumonia, community acquired", "medication": "Amoxicillin.", "x": 1}'
        "\n```"
    )
    score = score_fields(answer, REFS)
    assert score.valid and score.error is None
    assert list(score.fields) == ["diagnosis", "medication"]
    for name, field in score.fields.items():
        assert field.reference == REFS[name]
        assert field.prediction is not None
        expected = _scores(field.prediction, REFS[name])
        got = (field.rouge1, field.rouge2, field.rougeL, field.bleu, field.chrf)
        assert got == pytest.approx(expected)
        assert field.exact_match == exact_match(field.prediction, REFS[name])
    assert score.fields["diagnosis"].prediction == "pneumonia, community acquired"
    assert 0 < score.fields["diagnosis"].rouge2 < 1
    assert score.fields["medication"].exact_match  # case and the full stop ignored


def test_values_become_text() -> None:
    answer = '{"diagnosis": ["flu", null, "cold"], "medication": 500}'
    score = score_fields(answer, {"diagnosis": "flu, cold", "medication": "500"})
    assert [f.prediction for f in score.fields.values()] == ["flu, cold", "500"]
    assert all(f.exact_match for f in score.fields.values())
    empty = score_fields(
        '{"diagnosis": "x", "medication": null}', {"diagnosis": "x", "medication": ""}
    )
    assert empty.valid and empty.fields["medication"].prediction is None
    assert empty.fields["medication"].exact_match


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("I think it is pneumonia.", "no valid JSON value"),
        ('{"diagnosis": "pneumonia", "medication": "amoxicillin",}', "trailing comma"),
        ('{"diagnosis": "pneumonia"}', "$.medication: Field required"),
        ('[{"diagnosis": "pneumonia", "medication": "amoxicillin"}]', "not an array"),
    ],
)
def test_an_invalid_answer_scores_zero_on_every_field(answer: str, error: str) -> None:
    score = score_fields(answer, REFS)
    assert not score.valid
    assert score.error is not None and error in score.error
    assert score.fields == {
        name: FieldScore(None, ref, 0.0, 0.0, 0.0, 0.0, 0.0, False) for name, ref in REFS.items()
    }
    assert score.to_dict()["fields"]["diagnosis"] == {
        "prediction": None,
        "reference": REFS["diagnosis"],
        "rouge1": 0.0,
        "rouge2": 0.0,
        "rougeL": 0.0,
        "bleu": 0.0,
        "chrf": 0.0,
        "exact_match": False,
    }


# --------------------------------------------------------------------------- metrics


def _field(prediction: str | None, reference: str, rouge: float, exact: bool) -> dict[str, Any]:
    return FieldScore(prediction, reference, rouge, rouge / 2, rouge, 0.0, 0.0, exact).to_dict()


def _record(
    model: str,
    *,
    valid: bool,
    fields: dict[str, dict[str, Any]],
    total_s: float,
    tokens: tuple[int, int],
    joules: float | None,
) -> dict[str, Any]:
    energy = {"joules": joules, "provenance": "measured" if joules else "unavailable"}
    return {
        "model": model,
        "total_s": total_s,
        "prompt_tokens": tokens[0],
        "completion_tokens": tokens[1],
        "energy": energy,
        "structured": {"valid": valid, "error": None if valid else "no JSON", "fields": fields},
    }


DIAG_A = ["the patient has community acquired pneumonia", "acute migraine without aura today"]
REF_A = ["patient has community acquired pneumonia", "migraine without aura"]


def _records() -> list[dict[str, Any]]:
    return [
        _record(
            "a",
            valid=True,
            fields={
                "diagnosis": _field(DIAG_A[0], REF_A[0], 0.8, False),
                "dose": _field("5 mg", "5 mg", 1.0, True),
            },
            total_s=2.0,
            tokens=(100, 20),
            joules=36.0,
        ),
        {"model": "a", "structured": None, "total_s": 99.0, "completion_tokens": 999},
        _record(
            '=HYPERLINK("x"),evil',
            valid=True,
            fields={
                "diagnosis": _field("flu", "flu", 1.0, True),
                "dose": _field(None, "", 0.0, True),
            },
            total_s=1.0,
            tokens=(100, 10),
            joules=18.0,
        ),
        _record(
            "a",
            valid=True,
            fields={
                "diagnosis": _field(DIAG_A[1], REF_A[1], 0.4, False),
                "dose": _field("10 mg", "5 mg", 0.5, False),
            },
            total_s=3.0,
            tokens=(120, 30),
            joules=72.0,
        ),
        _record(
            "a",
            valid=False,
            fields={
                "diagnosis": _field(None, "x", 0.0, False),
                "dose": _field(None, "1 mg", 0.0, False),
            },
            total_s=5.0,
            tokens=(90, 50),
            joules=None,
        ),
    ]


def test_metrics_rows_by_hand() -> None:
    rows = metrics_rows(_records())
    assert [(r["model"], r["field"]) for r in rows] == [
        ("a", "diagnosis"),
        ("a", "dose"),
        ('=HYPERLINK("x"),evil', "diagnosis"),
        ('=HYPERLINK("x"),evil', "dose"),
    ]
    assert all(tuple(r) == METRICS_COLUMNS for r in rows)
    diagnosis, dose, other, other_dose = rows
    # Model a: 3 structured records (the non-structured one is ignored), 2 valid.
    assert (diagnosis["n_total"], diagnosis["n_valid"]) == (3, 2)
    assert diagnosis["rouge1"] == pytest.approx((0.8 + 0.4) / 2)  # the invalid row's 0 left out
    assert diagnosis["rouge2"] == pytest.approx((0.4 + 0.2) / 2)
    assert diagnosis["rougeL"] == pytest.approx(0.6)
    assert diagnosis["exact_match"] == 0.0
    assert dose["exact_match"] == 0.5
    assert diagnosis["bleu"] == pytest.approx(sacrebleu.corpus_bleu(DIAG_A, [REF_A]).score)
    assert diagnosis["bleu"] > 0
    chrf = sacrebleu.corpus_chrf(DIAG_A, [REF_A], word_order=2).score
    assert diagnosis["chrf"] == pytest.approx(chrf)
    assert dose["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(["5 mg", "10 mg"], [["5 mg", "5 mg"]], word_order=2).score
    )
    # Per-model figures, the same on each field row of the model.
    expected_a = {
        "runtime_s": 10.0,
        "tokens_in": 310,
        "tokens_out": 100,
        "tokens_per_sec": 10.0,
        "wh": (36.0 + 72.0) / 3600,
        # Wh over the output tokens of the metered records (20 + 30), not all 100.
        "wh_per_1k": (108.0 / 3600) / 50 * 1000,
    }
    for row in (diagnosis, dose):
        assert {k: row[k] for k in expected_a} == pytest.approx(expected_a)
    assert (other["n_total"], other["n_valid"], other["exact_match"]) == (1, 1, 1.0)
    assert other_dose["exact_match"] == 1.0  # null prediction, empty reference
    assert other["wh"] == pytest.approx(0.005) and other["wh_per_1k"] == pytest.approx(0.5)


def test_a_model_with_no_valid_row_has_empty_quality() -> None:
    records = [r for r in _records() if r["model"] == "a" and r.get("structured")][-1:]
    (row, _dose) = metrics_rows(records)
    assert (row["n_total"], row["n_valid"]) == (1, 0)
    assert all(row[k] is None for k in ("rouge1", "bleu", "chrf", "exact_match", "wh", "wh_per_1k"))
    assert row["tokens_per_sec"] == 10.0


def test_scores_flow_from_score_fields_into_metrics() -> None:
    refs = {"diagnosis": "migraine", "medication": "ibuprofen"}
    answers = ['{"diagnosis": "migraine", "medication": "ibuprofen"}', "no idea"]
    records = [
        {"model": "m", "structured": score_fields(a, refs).to_dict(), "total_s": 1.0}
        for a in answers
    ]
    (row, _med) = metrics_rows(records)
    assert (row["n_total"], row["n_valid"], row["exact_match"], row["rouge1"]) == (2, 1, 1.0, 1.0)
    assert row["chrf"] == pytest.approx(100.0)


def test_metrics_csv_is_escaped_and_reads_back(tmp_path: Path) -> None:
    path = write_metrics_csv(tmp_path / "out" / "metrics.csv", _records())
    assert path == tmp_path / "out" / "metrics.csv"
    with path.open(newline="", encoding="utf-8") as stream:
        table = list(csv.reader(stream))
    assert tuple(table[0]) == METRICS_COLUMNS
    assert [row[:2] for row in table[1:]] == [
        ["a", "diagnosis"],
        ["a", "dose"],
        ['\'=HYPERLINK("x"),evil', "diagnosis"],
        ['\'=HYPERLINK("x"),evil', "dose"],
    ]
    first = dict(zip(METRICS_COLUMNS, table[1], strict=True))
    assert (first["n_total"], first["tokens_in"], first["runtime_s"]) == ("3", "310", "10.0")
    assert float(first["rouge1"]) == pytest.approx(0.6)
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left


def test_no_structured_record_writes_no_file(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [{"model": "a", "structured": None}, {"model": "b"}]
    assert write_metrics_csv(tmp_path / "metrics.csv", records) is None
    assert not (tmp_path / "metrics.csv").exists()
    assert metrics_rows(records) == [] and structured_summary(records) == []


def test_structured_summary_agrees_with_the_rows() -> None:
    summary = structured_summary(_records())
    rows = metrics_rows(_records())
    a = summary[0]
    assert (a["model"], a["n_total"], a["n_valid"]) == ("a", 3, 2)
    assert a["validation_rate"] == pytest.approx(2 / 3)
    assert [f["field"] for f in a["fields"]] == ["diagnosis", "dose"]
    assert a["fields"][0]["chrf"] == rows[0]["chrf"]
    assert a["rougeL"] == pytest.approx((rows[0]["rougeL"] + rows[1]["rougeL"]) / 2)
    assert a["exact_match"] == pytest.approx(0.25)
    assert summary[1]["validation_rate"] == 1.0
    assert not any(isinstance(v, float) and math.isnan(v) for s in summary for v in s.values())
