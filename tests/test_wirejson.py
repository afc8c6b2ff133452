"""`pytest_llmlab.wirejson.loads` reads every text exactly as `json.loads` does: the
same value for JSON (msgspec's decoder, or json's where msgspec refuses), the same
ValueError and message for anything else. Generated texts, no server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab import wirejson

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()  # lone surrogates and controls included: json.dumps escapes them
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(loader: object, text: str) -> tuple[str, str]:
    """What reading ``text`` gives: ``("value", repr)`` or ``("error", type: message)``."""
    try:
        value = loader(text)  # type: ignore[operator]
    except ValueError as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    return "value", repr(value)  # repr: NaN equals NaN, 1 differs from 1.0 and True


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(_values, st.booleans())
def test_json_reads_as_json_loads_reads_it(value: object, ascii_only: bool) -> None:
    """Any value json.dumps writes (NaN, Infinity, huge integers, lone surrogates,
    non-ASCII written raw or escaped) reads back to what json.loads gives."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _outcome(wirejson.loads, text) == _outcome(json.loads, text)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text(alphabet='{}[],:"\\ 0123456789.eE+-tfnrulasNIIy\u00e9\ud800', max_size=24))
def test_any_text_reads_or_fails_as_json_loads(text: str) -> None:
    """Texts that are mostly not JSON: the same value, or the same error and message."""
    assert _outcome(wirejson.loads, text) == _outcome(json.loads, text)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', "NaN", "[1e400]", '"\\ud800"', "123456789012345678901234567890",
     '{"a": 1} x', "[1,]", "", " \n"],
)  # fmt: skip
def test_where_the_two_parsers_part(text: str) -> None:
    """Duplicate keys, NaN, out-of-range numbers, lone surrogates, big integers,
    trailing text and commas, empty input: as json.loads reads them."""
    assert _outcome(wirejson.loads, text) == _outcome(json.loads, text)


def test_a_deep_nesting_fails_as_json_loads_fails() -> None:
    """Nesting too deep for either parser is json.loads' RecursionError, as before."""
    with pytest.raises(RecursionError):
        wirejson.loads("[" * 100_000 + "]" * 100_000)
