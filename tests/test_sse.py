"""Unit tests of the SSE parser `pytest_llmlab.models.sse.iter_events`.

The inputs are hand-written event-stream lines in the WHATWG / OpenAI streaming format;
no server is involved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.models.sse import (
    MAX_EVENT_SIZE,
    EventReader,
    ServerSentEvent,
    iter_events,
    iter_lines,
)


def events(text: str) -> list[ServerSentEvent]:
    """Split `text` into lines the way the SSE spec does (CRLF, LF or CR) and parse."""
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)
    return list(iter_events(lines))


def test_one_event_per_blank_line_terminated_block() -> None:
    """Two ``data:`` events become two message events, in order."""
    assert events("data: one\n\ndata: two\n\n") == [
        ServerSentEvent("message", "one"),
        ServerSentEvent("message", "two"),
    ]


def test_multi_line_data_is_joined_with_newlines() -> None:
    """Several ``data:`` lines of one block are one event, joined by ``\\n``."""
    assert events("data: first\ndata: second\ndata:third\n\n") == [
        ServerSentEvent("message", "first\nsecond\nthird")
    ]


def test_comments_are_ignored_anywhere() -> None:
    """``: keep-alive`` comments, alone or inside a block, never become data."""
    text = ": keep-alive\n\ndata: a\n: inside a block\ndata: b\n\n:\n\n: ping\n\n"
    assert events(text) == [ServerSentEvent("message", "a\nb")]


def test_event_name_applies_to_its_block_only() -> None:
    """``event:`` names the next dispatched event, then resets to ``message``."""
    text = "event: delta\ndata: x\n\ndata: y\n\nevent:\ndata: z\n\n"
    assert events(text) == [
        ServerSentEvent("delta", "x"),
        ServerSentEvent("message", "y"),
        ServerSentEvent("message", "z"),
    ]


def test_event_name_without_data_is_dropped_and_reset() -> None:
    """A block with only ``event:`` dispatches nothing and does not name the next one."""
    assert events("event: ping\n\ndata: after\n\n") == [ServerSentEvent("message", "after")]


def test_crlf_and_cr_line_endings() -> None:
    """CRLF (and lone CR) line endings read the same as LF."""
    expected = [ServerSentEvent("message", "a\nb"), ServerSentEvent("message", "[DONE]")]
    assert events("data: a\r\ndata: b\r\n\r\ndata: [DONE]\r\n\r\n") == expected
    assert events("data: a\rdata: b\r\rdata: [DONE]\r\r") == expected


def test_lines_with_endings_still_attached() -> None:
    """Lines that still carry their ``\\r\\n`` (as some readers give them) parse the same."""
    lines = ["data: a\r\n", "\r\n", "data: b\n", "\n"]
    assert list(iter_events(lines)) == [
        ServerSentEvent("message", "a"),
        ServerSentEvent("message", "b"),
    ]


def test_missing_final_blank_line_is_not_dispatched_but_handed_over() -> None:
    """The spec drops an event the stream ends inside; ``on_incomplete`` still sees it,
    so the client can accept a server that closes right after ``data: [DONE]``."""
    unfinished: list[ServerSentEvent] = []
    assert list(iter_events(["data: {}", "", "data: [DONE]"], on_incomplete=unfinished.append)) == [
        ServerSentEvent("message", "{}")
    ]
    assert unfinished == [ServerSentEvent("message", "[DONE]")]
    assert events("data: {}\n\ndata: [DONE]") == [ServerSentEvent("message", "{}")]


def test_data_without_space_and_only_one_space_removed() -> None:
    """``data:x`` is ``x``; ``data:  x`` keeps one of its two spaces."""
    assert events("data:x\n\ndata:  x\n\ndata:\tx\n\n") == [
        ServerSentEvent("message", "x"),
        ServerSentEvent("message", " x"),
        ServerSentEvent("message", "\tx"),
    ]


def test_colons_inside_the_value_are_kept() -> None:
    """Only the first colon separates field and value (JSON payloads are full of them)."""
    assert events('data: {"a": "b:c"}\n\n') == [ServerSentEvent("message", '{"a": "b:c"}')]


def test_id_retry_and_unknown_fields_carry_no_data() -> None:
    """``id:`` and ``retry:`` set the event's id and reconnection time, unknown fields
    are ignored; none of them is data."""
    text = "id: 7\nretry: 1000\nfoo: bar\ndata: kept\n\nid: 8\n\n"
    assert events(text) == [ServerSentEvent("message", "kept", "7", 1000)]


def test_blank_lines_alone_yield_nothing() -> None:
    """Extra blank lines between events do not create empty events."""
    assert events("\n\n\ndata: a\n\n\n\n") == [ServerSentEvent("message", "a")]
    assert list(iter_events([])) == []


def test_is_lazy() -> None:
    """Events come out as their block ends, before the rest of the stream is read."""
    seen: list[str] = []

    def lines() -> Iterator[str]:
        for line in ["data: a", "", "data: b", ""]:
            seen.append(line)
            yield line

    iterator = iter_events(lines())
    assert next(iterator) == ServerSentEvent("message", "a")
    assert seen == ["data: a", ""]


# -- property -------------------------------------------------------------------------

_payload = st.builds(
    str.__add__,
    st.sampled_from(["", " ", "  ", ":", "data: "]),  # prefixes a sloppy parser would eat
    st.text(st.characters(blacklist_characters="\r\n"), max_size=30),
)
_comment = st.text(st.characters(blacklist_characters="\r\n"), max_size=10).map(lambda t: ":" + t)


@st.composite
def _serialized(draw: st.DrawFn) -> tuple[list[str], str]:
    payloads = draw(st.lists(_payload, max_size=8))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    parts: list[str] = []
    for payload in payloads:
        for comment in draw(st.lists(_comment, max_size=2)):
            parts.append(comment + newline)
            if draw(st.booleans()):
                parts.append(newline)  # a comment block of its own
        if draw(st.booleans()):
            parts.append("event: " + draw(st.sampled_from(["message", "delta", ""])) + newline)
        # "data:" without a space is only unambiguous when the payload has no leading space
        spaced = payload.startswith(" ") or draw(st.booleans())
        parts.append(("data: " if spaced else "data:") + payload + newline)
        for comment in draw(st.lists(_comment, max_size=1)):
            parts.append(comment + newline)
        parts.append(newline)
    final_blank_line: bool = draw(st.booleans())
    if parts and not final_blank_line:
        parts.pop()  # the stream may end without the final blank line
    return payloads, "".join(parts)


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(_serialized())
def test_property_payloads_round_trip(case: tuple[list[str], str]) -> None:
    """Any payloads without newlines, serialized as SSE with comments, parse back
    unchanged; one the stream ends inside (no final blank line) is not dispatched."""
    payloads, text = case
    parsed = [event.data for event in events(text)]
    complete = text.endswith(("\n\n", "\r\r", "\r\n\r\n")) or not payloads
    assert parsed == (payloads if complete else payloads[:-1])


@settings(derandomize=True, database=None)
@given(
    text=st.text(alphabet=st.sampled_from(["a", "b", "\r", "\n", "\u2028", "\x85", " "])),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_iter_lines_is_independent_of_chunking(text: str, cuts: list[int]) -> None:
    """Lines end at CR, LF or CRLF only, wherever the network cut the text."""
    points = sorted({c for c in cuts if c <= len(text)})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    expected = re.split(r"\r\n|\r|\n", text)
    if expected and expected[-1] == "":
        expected.pop()  # a final line end does not start another line
    assert list(iter_lines(chunks)) == expected


# -- EventReader: the two stages in one, with its quick path for whole blocks -------------

_sse_piece = st.sampled_from(
    ["data: ", "data:", "data: x", "event: e", "id: 7", "retry: 5", ": c", "x", " ", "\n", "\n",
     "\n\n", "\r", "\r\n"]
)  # fmt: skip


def _read(chunks: list[str], max_size: int | None = MAX_EVENT_SIZE) -> tuple[object, ...]:
    reader = EventReader(max_size=max_size)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(reader.feed(chunk))
    return events, reader.end()


def _staged(chunks: list[str], max_size: int | None = MAX_EVENT_SIZE) -> tuple[object, ...]:
    unfinished: list[ServerSentEvent] = []
    events = list(
        iter_events(iter_lines(chunks, max_size=max_size), max_size=max_size,
                    on_incomplete=unfinished.append)
    )  # fmt: skip
    return events, (unfinished[0] if unfinished else None)


def _cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c for c in cuts if c <= len(text)})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    pieces=st.lists(_sse_piece, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
)
def test_event_reader_reads_as_the_two_stages_do(pieces: list[str], cuts: list[int]) -> None:
    """Whatever the text and wherever it is cut, `EventReader` dispatches the events,
    with their ids and retry times, and hands over the unfinished one, exactly as
    `iter_lines` then `iter_events` do: its quick path for whole blocks included."""
    chunks = _cut("".join(pieces), cuts)
    assert _read(chunks) == _staged(chunks)


def test_event_reader_takes_whole_blocks_and_what_follows_them() -> None:
    """The chunks servers flush: whole one-line events at once, an id set line by
    line in between, and a block cut across chunks, which the next chunk finishes."""
    reader = EventReader()
    assert reader.feed('data: {"a": 1}\n\ndata: [DONE]\n\n') == [
        ServerSentEvent("message", '{"a": 1}'),
        ServerSentEvent("message", "[DONE]"),
    ]
    assert reader.feed("id: 4\ndata: b\n\n\n\ndata: c\n\ndata: d") == [
        ServerSentEvent("message", "b", "4"),
        ServerSentEvent("message", "c", "4"),
    ]
    assert reader.feed("e\n\ndata: f\n\n") == [
        ServerSentEvent("message", "de", "4"),
        ServerSentEvent("message", "f", "4"),
    ]
    assert reader.end() is None


@pytest.mark.parametrize(
    "chunks",
    [
        ["data: " + "x" * 20 + "\n\n"],
        ["data: " + "x" * 8, "x" * 12 + "\n\n"],
        ["data: xxxx\n" * 5 + "\n"],
    ],
    ids=["one-block", "cut", "many-lines"],
)
def test_event_reader_limits_each_event(chunks: list[str]) -> None:
    """A line or an event over the size limit raises ValueError, on the quick path or
    line by line, as the stages do."""
    with pytest.raises(ValueError, match="an event larger than 16 characters"):
        _read(chunks, max_size=16)
    with pytest.raises(ValueError, match="an event larger than 16 characters"):
        _staged(chunks, max_size=16)
