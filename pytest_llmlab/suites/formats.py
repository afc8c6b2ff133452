"""Standard benchmark files read as suite cases: GSM8K, MMLU, ARC, HellaSwag, TruthfulQA.

A suite with ``format: mmlu`` and ``data: astronomy_test.csv`` runs a benchmark from its
official file layout, as the user downloaded it. `read_format` translates such a file
into plain case dicts in the suite's YAML case shape, one per benchmark item in file
order::

    {"id": "astronomy-1", "prompt": "...", "checks": [{"choice": {...}}],
     "line": 1, "category": "astronomy", "vars": {...the item's raw fields...}}

``line`` is the 1-based line the item starts on (a JSONL line, a CSV record, an element
of a JSON array); ``vars`` holds the item's fields as the file has them, for templates.
`FewShot` puts solved examples from a train or dev split of the same format before every
prompt. A file that does not fit its format raises `FormatError`, whose message starts
with ``file:line``.

Each benchmark's main metric, and how ours approximates it
----------------------------------------------------------
The reference harnesses (EleutherAI's lm-evaluation-harness, the papers' own scripts)
score MMLU, ARC, HellaSwag and TruthfulQA-MC1 by *loglikelihood*: no text is generated;
the model's probability of each option after the prompt is compared and the most likely
option is its answer. Chat endpoints and local servers rarely expose prompt-token
likelihoods, so ours is the *generative* variant: the options are listed with letters,
the prompt ends with ``Answer with the letter only.``, and the ``choice`` check extracts
the letter the model wrote. Expect somewhat different numbers than loglikelihood
leaderboards, especially for small models that do not follow the instruction. GSM8K is
generative in both.

``gsm8k``: JSONL (openai/grade-school-math), ``question`` and ``answer``, the worked
    solution ending in ``#### N``. Metric: exact match of the final number (lm-eval takes
    the number after ``#### ``, ignoring commas). Ours: the prompt asks the model to end
    with ``#### <number>``; ``number`` compares the number it gives (commas removed) with
    N, tolerance 0. Few-shot examples are ``Question: ...`` / ``Answer: <solution>``
    pairs, whole chains of reasoning with the ``#### N`` line. Ids: ``gsm8k-<n>``.
``mmlu``: the original CSV of hendrycks/test, no header, ``question,A,B,C,D,answer``
    (a letter), the subject taken from the file name (``astronomy_test.csv``; ``_dev``,
    ``_val``, ``_train`` and a leading ``mmlu_`` are dropped), or the Hugging Face
    export as JSONL (or a JSON array): ``question``, ``subject``, ``choices`` (a list),
    ``answer`` (the 0-based index). Parquet: export it to JSONL first. Metric: accuracy;
    the original ranks the letters by likelihood after ``Answer:``. The prompt starts
    with the original's header ``The following are multiple choice questions (with
    answers) about <subject>.``; few-shot examples end in ``Answer: X`` and come from the
    same subject when the few-shot file has enough of them. Ids: ``<subject>-<n>``.
``arc``: JSONL of AI2's ARC release: ``id``, ``question: {stem, choices: [{text,
    label}]}``, ``answerKey``; the Hugging Face shape (``question`` a string, ``choices:
    {text: [...], label: [...]}``) too. Three to five choices. Metric: accuracy by
    likelihood of each choice's text. Letter labels are kept; numeric ones (``1``..``4``,
    in a few items) are shown as A, B, C... and the answer key with them, so every
    prompt asks for a letter. Ids: the file's ``id``.
``hellaswag``: JSONL of rowanz/hellaswag: ``ind``, ``activity_label`` (the category),
    ``ctx_a`` + ``ctx_b`` (or ``ctx``), four ``endings``, ``label`` (index, int or
    string). The context is built as lm-eval builds it (``<activity>: <ctx_a>
    <Ctx_b>``, WikiHow's ``[header]``/``[step]`` markers removed). Metric: normalized
    accuracy by likelihood of each ending. Ours: endings as A-D. Ids: ``hellaswag-<ind>``.
``truthfulqa``: ``TruthfulQA.csv`` (sylinrl/TruthfulQA), header ``Type,Category,
    Question,Best Answer,Correct Answers,Incorrect Answers,Source``, answers separated
    by ``; ``; or ``mc_task.json`` (a JSON array, ``mc1_targets`` mapping each answer to
    1 or 0), or Hugging Face's ``multiple_choice`` rows (``mc1_targets: {choices,
    labels}``) as JSONL. Metric: MC1 accuracy, the best answer ranked above every
    incorrect one (lm-eval puts the paper's six-question primer first; add one with
    ``fewshot`` if wanted). Ours: the MC1 targets, the best answer and the incorrect
    answers, as lettered options in an order shuffled with a seed from the SHA-256 of the
    question, the same in every process, so the correct letter varies (``mc_task.json``
    lists it first). The paper's main task, judged free-form answers, is a ``judge``
    check over a plain prompt, not this format. Ids: ``truthfulqa-<n>``.

Few-shot examples are drawn once per file (per subject for MMLU) with
``random.Random(seed)``: every prompt shares them, so a server's prompt cache reuses
the prefix. An example whose question is the item's own is skipped, should the few-shot
file overlap the evaluated one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_llmlab.errors import FormatError
from pytest_llmlab.extract import json_kind
from pytest_llmlab.suites.source import read_text

__all__ = [
    "CHOICE_INSTRUCTION",
    "FORMATS",
    "NUMBER_INSTRUCTION",
    "FewShot",
    "FormatError",
    "read_format",
]

#: The benchmark formats `read_format` reads, by the name a suite's ``format:`` gives.
FORMATS: tuple[str, ...] = ("gsm8k", "mmlu", "arc", "hellaswag", "truthfulqa")

#: The last line of every multiple-choice prompt.
CHOICE_INSTRUCTION = "Answer with the letter only."
#: The last line of every GSM8K prompt.
NUMBER_INSTRUCTION = "Solve it step by step, then end with '#### <number>'."

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MMLU_HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"
_HELLASWAG_HEADER = "Choose the most plausible continuation.\n\n"
_SPLIT_SUFFIXES = ("_test", "_dev", "_val", "_validation", "_train")
_TRUTHFULQA_COLUMNS = (
    "Type",
    "Category",
    "Question",
    "Best Answer",
    "Correct Answers",
    "Incorrect Answers",
    "Source",
)


@dataclass(frozen=True)
class FewShot:
    """Solved examples before every prompt: ``n`` items of ``data`` (a train or dev split
    in the same format as the evaluated file) drawn with ``random.Random(seed)``."""

    data: Path
    n: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"fewshot n must be 0 or more, not {self.n}")


@dataclass(frozen=True, slots=True)
class _Item:
    """One benchmark item, parsed."""

    id: str
    line: int
    category: str | None
    vars: dict[str, Any]
    #: The item as the model sees it: question and lettered options, no answer.
    question: str
    #: What follows ``Answer: `` when the item is a few-shot example.
    solution: str
    check: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Format:
    parse: Callable[[Path], list[_Item]]
    instruction: str
    #: The text before the examples and the question, from the item's category.
    header: Callable[[str | None], str]
    #: Few-shot examples come from the item's own category where enough exist (MMLU).
    by_category: bool = False


def _no_header(category: str | None) -> str:
    return ""


# --- reading -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    """One record of a file with where it starts, and checked access to its fields."""

    path: Path
    line: int
    values: dict[str, Any]
    #: Prefix of field names in messages, for a nested object (``question.``).
    prefix: str = ""

    def error(self, message: str) -> FormatError:
        return FormatError(f"{self.path}:{self.line}: {message}")

    def field(self, key: str) -> Any:
        if key not in self.values:
            raise self.error(f"missing field `{self.prefix}{key}`")
        return self.values[key]

    def text(self, key: str) -> str:
        value = self.field(key)
        if not isinstance(value, str):
            raise self.error(f"field `{self.prefix}{key}` must be a string, not {json_kind(value)}")
        if not value.strip():
            raise self.error(f"field `{self.prefix}{key}` is empty")
        return value

    def optional_text(self, key: str) -> str:
        value = self.values.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(f"field `{self.prefix}{key}` must be a string, not {json_kind(value)}")
        return value

    def texts(self, key: str) -> list[str]:
        """A list of at least two non-empty strings (the choices of an item)."""
        value = self.field(key)
        name = f"{self.prefix}{key}"
        if not isinstance(value, list):
            raise self.error(f"field `{name}` must be a list, not {json_kind(value)}")
        for i, entry in enumerate(value):
            if not isinstance(entry, str) or not entry.strip():
                what = "empty" if isinstance(entry, str) else json_kind(entry)
                raise self.error(f"`{name}[{i}]` must be a non-empty string, not {what}")
        if not 2 <= len(value) <= len(_LETTERS):
            raise self.error(f"field `{name}` must hold 2 to 26 entries, not {len(value)}")
        return value

    def nested(self, key: str) -> _Row:
        value = self.field(key)
        if not isinstance(value, dict):
            raise self.error(
                f"field `{self.prefix}{key}` must be an object, not {json_kind(value)}"
            )
        return _Row(self.path, self.line, value, f"{self.prefix}{key}.")

    def index(self, key: str, size: int) -> int:
        """A 0-based choice index given as an int or a string of digits."""
        value = self.field(key)
        name = f"{self.prefix}{key}"
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif value == "":
            raise self.error(f"field `{name}` is empty (an unlabeled split cannot be scored)")
        else:
            raise self.error(f"field `{name}` must be a choice index, not {value!r}")
        if not 0 <= number < size:
            raise self.error(f"`{name}` {value!r} is out of range 0..{size - 1}")
        return number


def _read_text(path: Path) -> str:
    return read_text(path, FormatError)


def _json_rows(path: Path) -> list[_Row]:
    """The objects of a JSONL file, or of a JSON array, each with the line it starts on.

    ``.jsonl`` and ``.ndjson`` are JSON lines; any other file is a JSON array when it
    starts with ``[`` (``mc_task.json``), else JSON lines (``datasets`` writes those to
    ``.json`` too)."""
    text = _read_text(path)
    lines = path.suffix.lower() in (".jsonl", ".ndjson")
    if not lines and text.lstrip().startswith("["):
        pairs = _json_array(path, text)
    else:
        pairs = list(_jsonl(path, text))
    rows = []
    for line, value in pairs:
        if not isinstance(value, dict):
            raise FormatError(f"{path}:{line}: expected a JSON object, not {json_kind(value)}")
        rows.append(_Row(path, line, value))
    return rows


def _jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(
                f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None


def _json_array(path: Path, text: str) -> list[tuple[int, Any]]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    # The text is valid JSON: walk the array again to find where each element starts.
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line = 1 + text.count("\n", 0, position)
    pairs = []
    for value in values:
        start = position
        while text[position] in " \t\r\n,":
            position += 1
        line += text.count("\n", start, position)
        pairs.append((line, value))
        _, end = decoder.raw_decode(text, position)
        line += text.count("\n", position, end)
        position = end
    return pairs


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-blank records of a CSV file, each with the line it starts on (a quoted
    cell may span lines)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FormatError(f"{path}:{start}: invalid CSV: {exc}") from None
        if any(cell.strip() for cell in cells):
            yield start, cells
        start = reader.line_num + 1


def _csv_rows(path: Path, required: Sequence[str], expected: Sequence[str]) -> list[_Row]:
    """The records of a CSV file with a header, as rows keyed by column name."""
    records = _csv_records(path)
    header = next(records, None)
    if header is None:
        return []
    line, cells = header
    names = [cell.strip() for cell in cells]
    for name in required:
        if name not in names:
            raise FormatError(
                f"{path}:{line}: missing column `{name}` (expected the header {','.join(expected)})"
            )
    rows = []
    for line, cells in records:
        if len(cells) != len(names):
            raise FormatError(
                f"{path}:{line}: {len(cells)} cells, but the header has {len(names)} columns"
            )
        rows.append(_Row(path, line, dict(zip(names, cells, strict=True))))
    return rows


# --- building items ------------------------------------------------------------------


def _choice_item(
    row: _Row,
    item_id: str,
    category: str | None,
    question: str,
    options: Sequence[str],
    answer: int,
    letters: Sequence[str] | None = None,
) -> _Item:
    """A multiple-choice item: ``question`` and its lettered options; ``answer`` indexes
    ``options``."""
    letters = list(letters or _LETTERS[: len(options)])
    listed = "\n".join(f"{letter}. {text.strip()}" for letter, text in zip(letters, options))
    return _Item(
        id=item_id,
        line=row.line,
        category=category,
        vars=row.values,
        question=f"{question}\n{listed}",
        solution=letters[answer],
        check={"choice": {"answer": letters[answer], "choices": letters}},
    )


def _gsm8k(path: Path) -> list[_Item]:
    items: list[_Item] = []
    for n, row in enumerate(_json_rows(path), start=1):
        question = row.text("question")
        answer = row.text("answer")
        if "####" not in answer:
            raise row.error("field `answer` has no final answer `#### <number>`")
        final = answer.rsplit("####", 1)[1].strip().replace(",", "")
        try:
            value = float(final)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise row.error(f"the final answer after `####` is not a number: {final!r}")
        items.append(
            _Item(
                id=f"gsm8k-{n}",
                line=row.line,
                category=None,
                vars=row.values,
                question=f"Question: {question.strip()}",
                solution=answer.strip(),
                check={"number": {"equals": value, "tolerance": 0}},
            )
        )
    return items


def _mmlu_subject(path: Path) -> str:
    stem = path.stem
    for suffix in _SPLIT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.removeprefix("mmlu_") or path.stem


def _mmlu(path: Path) -> list[_Item]:
    if path.suffix.lower() == ".csv":
        return _mmlu_csv(path)
    items: list[_Item] = []
    for n, row in enumerate(_json_rows(path), start=1):
        question = row.text("question")
        choices = row.texts("choices")
        subject = row.optional_text("subject").strip() or _mmlu_subject(path)
        answer = row.values.get("answer")
        letters = _LETTERS[: len(choices)]
        if isinstance(answer, str) and len(answer) == 1 and answer in letters:
            index = letters.index(answer)
        else:
            index = row.index("answer", len(choices))
        items.append(_choice_item(row, f"{subject}-{n}", subject, question.strip(), choices, index))
    return items


def _mmlu_csv(path: Path) -> list[_Item]:
    """hendrycks/test's ``<subject>_test.csv``: no header, question, choices, letter."""
    subject = _mmlu_subject(path)
    items: list[_Item] = []
    for n, (line, cells) in enumerate(_csv_records(path), start=1):
        if (
            n == 1
            and cells[0].strip().lower() == "question"
            and cells[-1].strip().lower() == "answer"
        ):
            continue  # a header some exports add; the original files have none
        if not 4 <= len(cells) <= len(_LETTERS) + 2:
            raise FormatError(
                f"{path}:{line}: expected question,A,B,C,D,answer (no header), "
                f"got {len(cells)} cells"
            )
        question, *choices, answer = cells
        letters = _LETTERS[: len(choices)]
        values: dict[str, Any] = {"question": question}
        values.update(zip(letters, choices, strict=True))
        values.update(answer=answer, subject=subject)
        row = _Row(path, line, values)
        for key in ("question", *letters, "answer"):
            row.text(key)
        if answer.strip() not in letters:
            raise row.error(f"answer {answer!r} is not one of {', '.join(letters)}")
        index = letters.index(answer.strip())
        items.append(
            _choice_item(
                row, f"{subject}-{len(items) + 1}", subject, question.strip(), choices, index
            )
        )
    return items


def _arc(path: Path) -> list[_Item]:
    items: list[_Item] = []
    for n, row in enumerate(_json_rows(path), start=1):
        if isinstance(row.values.get("question"), dict):  # AI2's release
            question_row = row.nested("question")
            stem = question_row.text("stem")
            entries = question_row.field("choices")
            if not isinstance(entries, list):
                raise row.error(
                    f"field `question.choices` must be a list, not {json_kind(entries)}"
                )
            texts, labels = [], []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise row.error(
                        f"`question.choices[{i}]` must be an object, not {json_kind(entry)}"
                    )
                choice = _Row(path, row.line, entry, f"question.choices[{i}].")
                texts.append(choice.text("text"))
                labels.append(choice.text("label").strip())
        else:  # the Hugging Face shape
            stem = row.text("question")
            choices = row.nested("choices")
            texts = choices.texts("text")
            labels = [label.strip() for label in choices.texts("label")]
            if len(labels) != len(texts):
                raise row.error(
                    f"`choices.label` has {len(labels)} entries, `choices.text` {len(texts)}"
                )
        if not 2 <= len(texts) <= len(_LETTERS):
            raise row.error(f"an item needs 2 to 26 choices, not {len(texts)}")
        if len(set(labels)) != len(labels):
            raise row.error(f"duplicate choice labels: {', '.join(labels)}")
        key = row.text("answerKey").strip()
        if key not in labels:
            raise row.error(f"answerKey {key!r} is not one of the labels {', '.join(labels)}")
        lettered = all(len(label) == 1 and label in _LETTERS for label in labels)
        shown = labels if lettered else list(_LETTERS[: len(labels)])
        given = row.values.get("id")
        item_id = given.strip() if isinstance(given, str) and given.strip() else f"arc-{n}"
        items.append(
            _choice_item(
                row, item_id, None, f"Question: {stem.strip()}", texts, labels.index(key), shown
            )
        )
    return items


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: WikiHow's bracketed markers removed."""
    text = text.strip().replace(" [title]", ". ")
    while (start := text.find("[")) >= 0 and (end := text.find("]", start)) >= 0:
        text = text[:start] + text[end + 1 :]
    return text.replace("  ", " ")


def _hellaswag(path: Path) -> list[_Item]:
    items: list[_Item] = []
    for n, row in enumerate(_json_rows(path), start=1):
        if "ctx_a" in row.values:
            context = f"{row.text('ctx_a')} {row.optional_text('ctx_b').capitalize()}"
        else:
            context = row.text("ctx")
        activity = row.optional_text("activity_label").strip()
        endings = row.texts("endings")
        label = row.index("label", len(endings))
        query = _hellaswag_clean(f"{activity}: {context}" if activity else context)
        ind = row.values.get("ind")
        given = str(ind).strip() if isinstance(ind, int | str) and not isinstance(ind, bool) else ""
        item_id = f"hellaswag-{given or n}"
        options = [_hellaswag_clean(ending) for ending in endings]
        items.append(_choice_item(row, item_id, activity or None, query, options, label))
    return items


def _shuffled(question: str, options: Sequence[str]) -> list[str]:
    """``options`` in an order fixed by the question's text, the same in every process
    (a seed from SHA-256, not `hash`, which is salted per process)."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    order = list(options)
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def _split_answers(text: str) -> list[str]:
    return [answer.strip() for answer in text.split(";") if answer.strip()]


def _truthfulqa(path: Path) -> list[_Item]:
    is_csv = path.suffix.lower() == ".csv"
    if is_csv:
        rows = _csv_rows(
            path, ("Question", "Best Answer", "Incorrect Answers"), _TRUTHFULQA_COLUMNS
        )
    else:
        rows = _json_rows(path)
    items: list[_Item] = []
    for n, row in enumerate(rows, start=1):
        if is_csv:
            question = row.text("Question")
            best = row.text("Best Answer").strip()
            incorrect = _split_answers(row.text("Incorrect Answers"))
            category = row.optional_text("Category").strip()
        else:
            question = row.text("question")
            best, incorrect = _mc1_targets(row)
            category = row.optional_text("category").strip()
        options = _shuffled(question, list(dict.fromkeys([best, *incorrect])))
        if len(options) < 2:
            raise row.error("no incorrect answer that differs from the best answer")
        if len(options) > len(_LETTERS):
            raise row.error(f"{len(options)} answers; at most 26 can be lettered")
        items.append(
            _choice_item(
                row,
                f"truthfulqa-{n}",
                category or None,
                f"Question: {question.strip()}",
                options,
                options.index(best),
            )
        )
    return items


def _mc1_targets(row: _Row) -> tuple[str, list[str]]:
    """The best answer and the incorrect ones of ``mc1_targets``: ``{answer: 1 or 0}``
    (``mc_task.json``) or ``{choices: [...], labels: [...]}`` (Hugging Face)."""
    targets = row.nested("mc1_targets")
    if set(targets.values) == {"choices", "labels"}:
        answers = targets.texts("choices")
        labels = targets.field("labels")
        if not isinstance(labels, list) or len(labels) != len(answers):
            raise row.error("`mc1_targets.labels` must be a list as long as `choices`")
        pairs = list(zip(answers, labels, strict=True))
    else:
        pairs = list(targets.values.items())
    if any(label not in (0, 1) or isinstance(label, bool) for _, label in pairs):
        raise row.error("`mc1_targets` labels must be 1 (correct) or 0 (incorrect)")
    best = [answer.strip() for answer, label in pairs if label == 1]
    if len(best) != 1:
        raise row.error(f"`mc1_targets` must mark exactly one answer 1, not {len(best)}")
    return best[0], [answer.strip() for answer, label in pairs if label == 0]


_FORMATS: dict[str, _Format] = {
    "gsm8k": _Format(_gsm8k, NUMBER_INSTRUCTION, _no_header),
    "mmlu": _Format(
        _mmlu,
        CHOICE_INSTRUCTION,
        lambda subject: _MMLU_HEADER.format((subject or "").replace("_", " ")),
        by_category=True,
    ),
    "arc": _Format(_arc, CHOICE_INSTRUCTION, _no_header),
    "hellaswag": _Format(_hellaswag, CHOICE_INSTRUCTION, lambda _: _HELLASWAG_HEADER),
    "truthfulqa": _Format(_truthfulqa, CHOICE_INSTRUCTION, _no_header),
}


def _parse(fmt: _Format, path: Path) -> list[_Item]:
    if path.suffix.lower() == ".parquet":
        raise FormatError(
            f"{path}: parquet is not read here; export it to JSONL first "
            "(datasets: `ds.to_json('file.jsonl')`; pandas: "
            "`df.to_json('file.jsonl', orient='records', lines=True)`)"
        )
    items = fmt.parse(path)
    if not items:
        raise FormatError(f"{path}: no items")
    return items


def _shots(fmt: _Format, fewshot: FewShot) -> Callable[[_Item], list[_Item]]:
    """The few-shot examples of each item: the pool shuffled once per category with
    ``random.Random(seed)``, its first ``n`` that are not the item itself."""
    pool = _parse(fmt, fewshot.data)
    if len(pool) < fewshot.n:
        raise FormatError(
            f"{fewshot.data}: fewshot n={fewshot.n}, but the file has {len(pool)} items"
        )
    orders: dict[str | None, list[_Item]] = {}

    def shots(item: _Item) -> list[_Item]:
        key = item.category if fmt.by_category else None
        if key not in orders:
            same = [example for example in pool if example.category == key]
            order = list(same if len(same) >= fewshot.n else pool)
            random.Random(fewshot.seed).shuffle(order)
            orders[key] = order
        chosen = [example for example in orders[key] if example.question != item.question]
        if len(chosen) < fewshot.n:
            raise FormatError(
                f"{fewshot.data}: fewshot n={fewshot.n}, but only {len(chosen)} examples "
                f"differ from the item at line {item.line}"
            )
        return chosen[: fewshot.n]

    return shots


def read_format(name: str, path: Path, *, fewshot: FewShot | None = None) -> list[dict[str, Any]]:
    """The items of benchmark file ``path`` in format ``name`` (one of `FORMATS`), in
    file order, as suite case dicts: ``id``, ``prompt``, ``checks``, ``line``,
    ``category``, ``vars``. Raises `FormatError` naming file:line."""
    fmt = _FORMATS.get(name)
    if fmt is None:
        raise FormatError(
            f"unknown format {name!r} for {path}; valid formats: {', '.join(FORMATS)}"
        )
    items = _parse(fmt, path)
    shots = _shots(fmt, fewshot) if fewshot is not None and fewshot.n > 0 else None
    cases = []
    for item in items:
        examples = shots(item) if shots is not None else []
        prompt = "".join(
            [
                fmt.header(item.category),
                *(f"{shot.question}\nAnswer: {shot.solution}\n\n" for shot in examples),
                f"{item.question}\n{fmt.instruction}",
            ]
        )
        cases.append(
            {
                "id": item.id,
                "prompt": prompt,
                "checks": [item.check],
                "line": item.line,
                "category": item.category,
                "vars": item.vars,
            }
        )
    return cases
