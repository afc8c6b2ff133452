"""The event-stream parser against the web-platform-tests ``eventsource/format-*`` cases.

Each test mirrors one WPT case (named in its docstring): the same kind of input and the
events a browser's EventSource must dispatch for it, written here as plain bytes and
expected `ServerSentEvent` values (our own equivalents, not copies of the WPT files).
The WPT server resource sends the case's message followed by a blank line and one more
line end (``newline=none``: only the one line end); `served` frames a message the same
way. No server is involved: the bytes go through `decode`, `iter_lines` and
`iter_events` as a response body would.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.models.sse import (
    ServerSentEvent,
    decode,
    is_event_stream,
    iter_events,
    iter_lines,
)


def served(message: str | bytes, *, final_blank_line: bool = True) -> bytes:
    """The body the WPT resource sends for `message` (UTF-8)."""
    body = message.encode() if isinstance(message, str) else message
    return body + (b"\n\n" if final_blank_line else b"") + b"\n"


def parse(
    body: bytes, pieces: list[bytes] | None = None
) -> tuple[list[ServerSentEvent], list[ServerSentEvent]]:
    """(dispatched events, the event the stream ended inside) of a body, fed whole or in
    the given pieces."""
    unfinished: list[ServerSentEvent] = []
    chunks = pieces if pieces is not None else [body]
    events = list(iter_events(iter_lines(decode(chunks)), on_incomplete=unfinished.append))
    return events, unfinished


def data(body: bytes) -> list[str]:
    return [event.data for event in parse(body)[0]]


def test_format_bom() -> None:
    """WPT format-bom: one leading UTF-8 BOM is dropped; a BOM later in the stream is part
    of its line, so that line's field is ``\\ufeffdata`` (unknown) and its event is lost."""
    body = served("\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3")
    assert body.startswith(b"\xef\xbb\xbf")
    assert data(body) == ["1", "3"]


def test_format_bom_2() -> None:
    """WPT format-bom-2: of two leading BOMs only the first is dropped: the first event
    is lost, the next ones arrive."""
    assert data(served("\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3")) == ["2", "3"]


def test_format_comments() -> None:
    """WPT format-comments: comments (``:`` lines, empty, NUL, 2 KiB long, looking like a
    field) between data lines with CR, LF and CRLF ends; one event of four data lines."""
    long = "x" * 2048
    message = f"data:1\r:\0\n:\r\ndata:2\n:{long}\rdata:3\n:data:fail\r:{long}\ndata:4\n"
    assert parse(served(message, final_blank_line=False))[0] == [
        ServerSentEvent("message", "1\n2\n3\n4")
    ]


def test_format_data_before_final_empty_line() -> None:
    """WPT format-data-before-final-empty-line: the event the stream ends inside (its
    ``id`` and ``data`` lines but no blank line after them) is not dispatched."""
    body = served("retry:1000\ndata:test1\n\nid:test\ndata:test2", final_blank_line=False)
    events, unfinished = parse(body)
    assert events == [ServerSentEvent("message", "test1", "", 1000)]
    assert unfinished == [ServerSentEvent("message", "test2", "test", 1000)]


def test_format_field_data() -> None:
    """WPT format-field-data: ``data:`` with nothing after it is an empty line of data; a
    bare ``data`` (no colon) is too, so two of them make one LF."""
    assert data(served("data:\n\ndata\ndata\n\ndata:test")) == ["", "\n", "test"]


def test_format_field_event() -> None:
    """WPT format-field-event: ``event:`` names the event it belongs to only; the next
    one is a ``message`` again."""
    assert parse(served("event:test\ndata:x\n\ndata:x"))[0] == [
        ServerSentEvent("test", "x"),
        ServerSentEvent("message", "x"),
    ]


def test_format_field_event_empty() -> None:
    """WPT format-field-event-empty: ``event: `` (empty after the one space) gives a
    ``message`` event."""
    assert parse(served("event: \ndata:data"))[0] == [ServerSentEvent("message", "data")]


def test_format_field_id() -> None:
    """WPT format-field-id / format-field-id-2: ``id:`` sets the last event ID, in UTF-8,
    and it stays for the following events until set again."""
    body = served("id: \u2026\ndata: hello\n\ndata: again\n\nid:\ndata: reset")
    assert parse(body)[0] == [
        ServerSentEvent("message", "hello", "\u2026"),
        ServerSentEvent("message", "again", "\u2026"),
        ServerSentEvent("message", "reset", ""),
    ]


def test_format_field_id_null() -> None:
    """WPT format-field-id-null: an ``id`` containing U+0000 is ignored (the previous one
    stays); the NUL in data is kept."""
    body = served("id: one\ndata: a\n\nid: t\0wo\ndata: b\0")
    assert parse(body)[0] == [
        ServerSentEvent("message", "a", "one"),
        ServerSentEvent("message", "b\0", "one"),
    ]


def test_format_field_parsing() -> None:
    """WPT format-field-parsing: field names are exact (``Data``, ``data\\0``,
    ``\\0data``, ``da-ta``, ``data_x`` and `` data`` are unknown), values keep NULs and all
    but one leading space, lines end at CR, LF or CRLF."""
    message = (
        "data:\0\ndata:  two\rData:x\ndata\0:x\ndata:three\r\0data:x\nda-ta:x\r"
        "data_x\ndata:four\rdata:\r\n data:x\ndata:five\n"
    )
    assert data(served(message, final_blank_line=False)) == ["\0\n two\nthree\nfour\n\nfive"]


def test_format_field_retry() -> None:
    """WPT format-field-retry: ``retry:`` of ASCII digits sets the reconnection time."""
    assert parse(served("retry:03000\ndata:x"))[0] == [ServerSentEvent("message", "x", "", 3000)]


def test_format_field_retry_bogus() -> None:
    """WPT format-field-retry-bogus: a ``retry`` value that is not all digits is ignored
    (the earlier one stays): letters, a second space, non-ASCII digits."""
    body = served("retry:3000\nretry:1000x\nretry:  500\nretry:\u0661\u0662\ndata:x")
    assert parse(body)[0] == [ServerSentEvent("message", "x", "", 3000)]


def test_format_field_retry_empty() -> None:
    """WPT format-field-retry-empty: a bare ``retry`` sets nothing and hides no data."""
    assert parse(served("retry\ndata:test"))[0] == [ServerSentEvent("message", "test")]


def test_format_field_unknown() -> None:
    """WPT format-field-unknown: unknown fields, text without a colon, a line starting
    with a space and comments are ignored; a bare ``data`` is an empty data line."""
    message = "data:one\n data\ndata\nunknown:xxx\njust some text\n:a comment\ndata:two"
    assert data(served(message)) == ["one\n\ntwo"]


def test_format_leading_space() -> None:
    """WPT format-leading-space: only one U+0020 after the colon is dropped, never a tab;
    a CR alone ends a line."""
    assert data(served("data:\tone\rdata: \ndata:two")) == ["\tone\n\ntwo"]
    assert data(served("data:  two spaces")) == [" two spaces"]


def test_format_newlines() -> None:
    """WPT format-newlines: CRLF and LF line ends mixed, a CRLF blank line dispatches."""
    body = served("data:one\r\ndata\ndata:two\r\n\r", final_blank_line=False)
    assert data(body) == ["one\n\ntwo"]


def test_format_null_character() -> None:
    """WPT format-null-character: a NUL in data is data."""
    assert data(served("data:\0")) == ["\0"]


def test_format_utf_8() -> None:
    """WPT format-utf-8: the stream is UTF-8 whatever charset is claimed (the parser is
    never told one); invalid bytes and a sequence cut by the end become U+FFFD."""
    assert data(served(b"data:ok\xe2\x80\xa6")) == ["ok\u2026"]
    assert data(served(b"data:a\xffb\xc3(")) == ["a\ufffdb\ufffd("]
    assert parse(b"data:cut\xe2\x80")[1] == [ServerSentEvent("message", "cut\ufffd")]


def test_format_mime_types() -> None:
    """WPT format-mime-bogus, format-mime-valid-bogus, format-mime-trailing-semicolon:
    only ``text/event-stream`` (any case, any parameters, a trailing ``;``) is a stream."""
    for good in ("text/event-stream", "text/event-stream;", "Text/Event-Stream; charset=x"):
        assert is_event_stream(good), good
    for bad in ("x bogus", "text/x-bogus", "", "text/event-streams", "application/json"):
        assert not is_event_stream(bad), bad


# -- every case, cut anywhere ---------------------------------------------------------

CASES = [
    served("\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3"),
    served("\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3"),
    served(
        "data:1\r:\0\n:\r\ndata:2\n:xx\rdata:3\n:data:fail\r:x\ndata:4\n", final_blank_line=False
    ),
    served("retry:1000\ndata:test1\n\nid:test\ndata:test2", final_blank_line=False),
    served("data:\n\ndata\ndata\n\ndata:test"),
    served("event:test\ndata:x\n\ndata:x"),
    served("id: \u2026\ndata: hello\n\ndata: again"),
    served("data:\tone\rdata: \ndata:two"),
    served("data:one\r\ndata\ndata:two\r\n\r", final_blank_line=False),
    served(b"data:ok\xe2\x80\xa6 \xf0\x9f\x98\x80 \xff"),
]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0, max_value=80)))
def test_every_case_reads_the_same_however_the_body_is_cut(case: bytes, cuts: list[int]) -> None:
    """The network may split a body anywhere (inside the BOM, a UTF-8 sequence, a CRLF):
    the events are those of the whole body."""
    points = sorted({c for c in cuts if c <= len(case)})
    pieces = [case[a:b] for a, b in zip([0, *points], [*points, len(case)], strict=True)]
    assert parse(case, pieces) == parse(case)
