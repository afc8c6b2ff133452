"""extract_json on real messy model answers, and validate against models and schemas."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pytest_llmlab.extract import (
    JSONExtractionError,
    SchemaValidationError,
    extract_json,
    json_path,
    validate,
)

PROPERTIES = settings(max_examples=100, derandomize=True, database=None, deadline=None)


def extraction_error(text: str) -> str:
    with pytest.raises(JSONExtractionError) as excinfo:
        extract_json(text)
    assert excinfo.value.text == text
    return str(excinfo.value)


# -- finding the value ------------------------------------------------------------------


def test_fenced_json_block_after_prose() -> None:
    answer = 'Sure! Here is the order:\n\n```json\n{"id": 7, "items": ["tea"]}\n```\nAnything else?'
    assert extract_json(answer) == {"id": 7, "items": ["tea"]}


def test_untagged_fence_counts_and_other_languages_do_not() -> None:
    assert extract_json("Result:\n```\n[1, 2, 3]\n```") == [1, 2, 3]
    answer = '```json\n{"y": 2}\n```\nUse it like this:\n```python\nprint([1])\n```'
    assert extract_json(answer) == {"y": 2}


def test_the_last_fenced_block_that_parses_wins() -> None:
    answer = (
        'First draft:\n```json\n{"version": 1}\n```\n'
        'Corrected:\n```json\n{"version": 2}\n```\n'
        "Done."
    )
    assert extract_json(answer) == {"version": 2}
    broken_last = 'Good:\n```json\n{"version": 1}\n```\nBad:\n```json\n{"version": \n```'
    assert extract_json(broken_last) == {"version": 1}


def test_leading_prose_then_an_object() -> None:
    answer = 'The extracted entities are: {"city": "Paris", "country": "France"} as requested.'
    assert extract_json(answer) == {"city": "Paris", "country": "France"}


def test_braces_and_escaped_quotes_inside_strings() -> None:
    answer = r'Here: {"template": "use {name} or [list]}", "quote": "she said \"}\" twice"} end'
    assert extract_json(answer) == {
        "template": "use {name} or [list]}",
        "quote": 'she said "}" twice',
    }


def test_a_bracketed_aside_in_the_prose_is_skipped() -> None:
    assert extract_json('As asked [see above], the answer is {"ok": true}') == {"ok": True}


def test_top_level_array_with_nested_objects() -> None:
    answer = 'Items:\n[{"n": 1, "tags": ["a"]}, {"n": 2, "tags": []}]\nThat is all.'
    assert extract_json(answer) == [{"n": 1, "tags": ["a"]}, {"n": 2, "tags": []}]


def test_think_blocks_are_ignored() -> None:
    answer = (
        '<think>The user wants JSON. Maybe {"draft": true}? No, simpler.</think>\n'
        '{"answer": "Paris"}'
    )
    assert extract_json(answer) == {"answer": "Paris"}


def test_a_lone_closing_think_tag_ends_the_thinking() -> None:
    # Templates that open <think> in the prompt leave only the closing tag in the output.
    answer = 'Let me draft {"draft": 1} first.\n</think>\nThe answer: {"final": 2}'
    assert extract_json(answer) == {"final": 2}


def test_the_whole_text_as_a_scalar() -> None:
    assert extract_json("  42\n") == 42
    assert extract_json('"yes"') == "yes"


# -- refusing to repair -----------------------------------------------------------------


def test_trailing_comma_in_an_object_is_named() -> None:
    message = extraction_error('Here you go:\n{\n  "a": 1,\n  "b": 2,\n}\n')
    assert message == (
        "no valid JSON value in the answer (tried 1 {...}/[...] span, the whole text)\n"
        "span at line 2 column 1: trailing comma at line 4 column 9: JSON does not allow it\n"
        '      "b": 2,\n'
        "            ^"
    )


def test_trailing_comma_in_a_fenced_array_is_named() -> None:
    message = extraction_error('```json\n{"tags": ["a", "b" ,\n  ]}\n```')
    assert "fenced block at line 1: trailing comma at line 2 column 20: JSON does not allow it" in (
        message
    )
    assert message.startswith("no valid JSON value in the answer (tried 1 fenced block, ")


def test_a_comma_brace_inside_a_string_is_not_a_trailing_comma() -> None:
    message = extraction_error('{"a": ",}" "b": 1}')
    assert "trailing comma" not in message
    assert "Expecting ',' delimiter at line 1 column 12" in message


def test_invalid_json_shows_the_error_position_with_a_caret() -> None:
    message = extraction_error('Answer: {"city": "Paris" "country": "France"}')
    assert message == (
        "no valid JSON value in the answer (tried 1 {...}/[...] span, the whole text)\n"
        "span at line 1 column 9: Expecting ',' delimiter at line 1 column 26\n"
        '    Answer: {"city": "Paris" "country": "France"}\n'
        "                             ^"
    )


def test_single_quotes_are_not_json() -> None:
    message = extraction_error("{'city': 'Paris'}")
    assert "Expecting property name enclosed in double quotes at line 1 column 2" in message


def test_long_lines_are_cut_around_the_caret() -> None:
    text = '{"k": "' + "x" * 100 + '" "z": 1}'
    lines = extraction_error(text).splitlines()
    excerpt, caret = lines[-2], lines[-1]
    assert excerpt.startswith("    ...") and len(excerpt) < 100
    assert excerpt[caret.index("^")] == '"'
    assert excerpt[caret.index("^") :].startswith('"z"')


def test_positions_count_lines_of_the_original_answer_including_thinking() -> None:
    message = extraction_error('<think>\nline two\nline three\n</think>\n{"a": 1,}')
    assert "trailing comma at line 5 column 8" in message


def test_a_cut_off_answer_is_reported_as_never_closed() -> None:
    message = extraction_error('Here: {"a": {"b": 1}, "c": [1, 2')
    assert "span: '{' at line 1 column 7 is never closed (is the answer cut off?)" in message
    # The inner {"b": 1} is part of the cut-off value: it is not returned.


def test_a_mismatched_bracket_is_reported() -> None:
    message = extraction_error('Result: {"a": [1, 2}')
    assert "'}' at line 1 column 20 does not close the '{' opened at line 1 column 9" in message


def test_a_broken_object_never_yields_one_of_its_parts() -> None:
    message = extraction_error('{"items": [1, 2,], "meta": {"a": 1}}')
    assert "trailing comma at line 1 column 16" in message


def test_nan_is_not_json() -> None:
    assert "NaN is not valid JSON" in extraction_error('{"score": NaN}')


def test_prose_without_json_says_what_was_tried() -> None:
    message = extraction_error("The capital of France is Paris.")
    assert message.splitlines()[0] == (
        "no valid JSON value in the answer (tried {...}/[...] spans (none found), the whole text)"
    )
    assert "whole text: Expecting value at line 1 column 1" in message


def test_an_empty_answer() -> None:
    assert extraction_error("") == "no JSON value: the answer is empty"
    assert extraction_error("<think>{}</think>\n") == (
        "no JSON value: the answer is empty after <think> blocks"
    )


# -- properties -------------------------------------------------------------------------

SAFE_TEXT = st.text(alphabet=st.characters(exclude_characters="`<", codec="utf-8"), max_size=12)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | SAFE_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(SAFE_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
CONTAINERS = st.one_of(
    st.lists(JSON_VALUES, max_size=4), st.dictionaries(SAFE_TEXT, JSON_VALUES, max_size=4)
)


@PROPERTIES
@given(value=CONTAINERS, indent=st.sampled_from([None, 2]), wrapper=st.integers(0, 3))
def test_any_object_or_array_is_found_in_any_wrapping(
    value: Any, indent: int | None, wrapper: int
) -> None:
    dumped = json.dumps(value, indent=indent, ensure_ascii=False)
    answer = [
        dumped,
        f"Here is the JSON you asked for:\n{dumped}\nLet me know!",
        f"Sure.\n```json\n{dumped}\n```\n",
        f"<think>Should it be [1]? {{no}}</think>\nResult: {dumped}",
    ][wrapper]
    assert extract_json(answer) == value


@PROPERTIES
@given(value=st.lists(st.integers(), min_size=1, max_size=5), spaces=st.text(" \n\t", max_size=3))
def test_a_trailing_comma_is_always_refused(value: list[int], spaces: str) -> None:
    dumped = json.dumps({"values": value})
    broken = dumped[:-2] + "," + spaces + "]}"
    assert "JSON does not allow it" in extraction_error(f"Output: {broken}")


# -- validation -------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float


class Order(BaseModel):
    customer: str
    items: list[Item]


ORDER_SCHEMA: dict[str, Any] = {
    "title": "Order",
    "type": "object",
    "required": ["customer", "items"],
    "properties": {
        "customer": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "price"],
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
            },
        },
    },
}


def test_a_pydantic_model_returns_its_instance() -> None:
    order = validate({"customer": "Ann", "items": [{"name": "tea", "price": 2.5}]}, Order)
    assert isinstance(order, Order)
    assert order.items[0].price == 2.5


def test_pydantic_errors_are_listed_with_json_paths() -> None:
    with pytest.raises(SchemaValidationError) as excinfo:
        validate({"items": [{"name": "tea", "price": "cheap"}, {"price": 1}]}, Order)
    assert excinfo.value.errors == [
        ("$.customer", "Field required"),
        ("$.items[0].price", "Input should be a valid number, unable to parse string as a number"),
        ("$.items[1].name", "Field required"),
    ]
    assert str(excinfo.value).splitlines() == [
        "3 schema errors against Order:",
        "  $.customer: Field required",
        "  $.items[0].price: Input should be a valid number, unable to parse string as a number",
        "  $.items[1].name: Field required",
    ]
    assert isinstance(excinfo.value, AssertionError)


def test_a_json_schema_returns_the_value() -> None:
    value = {"customer": "Ann", "items": [{"name": "tea", "price": 2}]}
    assert validate(value, ORDER_SCHEMA) is value


def test_json_schema_errors_are_listed_with_json_paths() -> None:
    with pytest.raises(SchemaValidationError) as excinfo:
        validate(
            {"customer": 3, "items": [{"name": "tea"}, {"name": "jam", "price": "x"}]}, ORDER_SCHEMA
        )
    assert str(excinfo.value).splitlines() == [
        "3 schema errors against Order:",
        "  $.customer: 3 is not of type 'string'",
        "  $.items[0]: 'price' is a required property",
        "  $.items[1].price: 'x' is not of type 'number'",
    ]


def test_an_untitled_schema_is_named_generically() -> None:
    with pytest.raises(SchemaValidationError, match=r"^1 schema error against the JSON schema:"):
        validate([1, "two"], {"type": "array", "items": {"type": "integer"}})


def test_without_jsonschema_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(ImportError, match="needs the jsonschema package: pip install jsonschema"):
        validate({}, ORDER_SCHEMA)


def test_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not list"):
        validate({}, [])  # type: ignore[arg-type]


def test_json_paths() -> None:
    assert json_path([]) == "$"
    assert json_path(["items", 0, "price"]) == "$.items[0].price"
    assert json_path(["a b", "c.d"]) == '$["a b"]["c.d"]'
