"""The event-stream parser: the WHATWG HTML spec's "interpreting an event stream".

OpenAI-compatible servers send ``data: {json}`` events separated by blank lines and end
with ``data: [DONE]``; some add ``: keep-alive`` comments, ``event:``, ``id:`` or
``retry:`` lines. Three lazy stages, each linear in the length of the stream:

- `decode`: the body's bytes as text, always UTF-8 whatever ``charset`` the
  Content-Type claims; one leading byte order mark is dropped, invalid bytes become
  U+FFFD.
- `iter_lines`: lines end at CRLF, LF or CR, and nowhere else.
- `iter_events`: a blank line dispatches the event; a line starting with ``:`` is a
  comment; otherwise the field name runs to the first colon (a line without one is a
  field with an empty value) and one space after the colon is dropped. ``data`` lines
  are joined with LF, ``event`` names the event (``message`` when unnamed), ``id`` sets
  the last event ID (unless it contains U+0000), ``retry`` sets the reconnection time
  when it is all ASCII digits, other fields are ignored. A block without data
  dispatches nothing, and an event the stream ends inside is not dispatched (it is
  handed to ``on_incomplete``).

One event, and one line, may hold at most `MAX_EVENT_SIZE` characters (16 MiB of
ASCII): a larger one raises ValueError with the reason, so a server that never ends a
line cannot make the client buffer without bound.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from pytest_llmlab.errors import hide_own_frames

__all__ = [
    "MAX_EVENT_SIZE",
    "ServerSentEvent",
    "decode",
    "is_event_stream",
    "iter_events",
    "iter_lines",
]

# Errors of the reader pass through these generators: keep them out of tracebacks.
__tracebackhide__ = hide_own_frames

#: The most characters one event (its data lines together) or one line may hold.
MAX_EVENT_SIZE = 16 * 1024 * 1024

_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


def is_event_stream(content_type: str) -> bool:
    """Whether a Content-Type is ``text/event-stream`` (parameters and case ignored)."""
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def decode(chunks: Iterable[bytes]) -> Iterator[str]:
    """The UTF-8 text of a byte stream, cut anywhere: a leading BOM dropped, invalid
    (or cut-off) sequences replaced by U+FFFD, the Content-Type's charset ignored."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    first = True
    for chunk in chunks:
        text = decoder.decode(chunk)
        if first and text:
            first = False
            text = text.removeprefix(_BOM)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if first:
        tail = tail.removeprefix(_BOM)
    if tail:
        yield tail


def _too_large(limit: int) -> ValueError:
    size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} characters"
    return ValueError(f"an event larger than {size} (the limit per event)")


def _split(chunk: str) -> list[str]:
    """The pieces of ``chunk`` between its line ends (CRLF, LF, CR); the last is what
    follows the last line end. One scan: ``str.split`` where LF is the only end."""
    return chunk.split("\n") if "\r" not in chunk else _LINE_END.split(chunk)


def iter_lines(chunks: Iterable[str], *, max_size: int | None = MAX_EVENT_SIZE) -> Iterator[str]:
    """Split decoded text into SSE lines at CR, LF or CRLF only.

    ``str.splitlines`` (and so httpx's ``iter_lines``) also splits at U+2028, U+2029
    and U+0085, which a model may well generate inside a token: that would cut a
    ``data:`` line in two. Each chunk is scanned once (a line is kept as its pieces
    until it ends), so one huge line costs linear time; a line longer than
    ``max_size`` raises ValueError. Text after the last line end is the last line.
    """
    pieces: list[str] = []  # the unfinished line, from earlier chunks
    size = 0  # its length
    after_cr = False  # the last chunk ended in CR: an LF starting this one is its CRLF
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk[0] == "\n":
            chunk = chunk[1:]
        after_cr = chunk.endswith("\r")
        lines = _split(chunk)
        rest = lines.pop()
        # No line is longer than the chunk and what was pending: most chunks need no
        # look at each line's length.
        if max_size is not None and size + len(chunk) > max_size:
            if lines and size + len(lines[0]) > max_size:
                raise _too_large(max_size)
            rest_size = len(rest) if lines else size + len(rest)
            if any(len(line) > max_size for line in lines) or rest_size > max_size:
                raise _too_large(max_size)
        if lines:
            if pieces:
                pieces.append(lines[0])
                lines[0] = "".join(pieces)
                pieces, size = [], 0
            yield from lines
        if rest:
            size += len(rest)
            pieces.append(rest)
    if pieces:
        yield "".join(pieces)


class ServerSentEvent(NamedTuple):
    """One dispatched event (a named tuple: one is built per event of every stream,
    and a tuple builds in a third of a frozen dataclass's time).

    ``id`` is the last event ID the stream had set when it was dispatched (``""``:
    none); ``retry`` the reconnection time in ms the stream had set (None: none).
    """

    event: str
    data: str
    id: str = ""
    retry: int | None = None


def iter_events(
    lines: Iterable[str],
    *,
    max_size: int | None = MAX_EVENT_SIZE,
    on_incomplete: Callable[[ServerSentEvent], object] | None = None,
) -> Iterator[ServerSentEvent]:
    """Yield one event per blank-line-terminated block that has ``data:`` lines.

    Lines may still carry their line end. An event whose data grows past ``max_size``
    characters raises ValueError. The block the stream ends inside is not dispatched
    (the spec discards it); if it has data, ``on_incomplete`` receives it, so a caller
    can tell a server that closed right after ``data: [DONE]`` (without the final
    blank line) from a cut stream.
    """
    event_type = ""
    data: list[str] = []
    size = -1  # the joined data's length: the values plus one LF between each two
    last_id = ""
    retry: int | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(event_type or "message", "\n".join(data), last_id, retry)
            event_type, data, size = "", [], -1
            continue
        if line[0] == ":":
            continue  # comment / keep-alive
        if line.startswith("data: "):  # what nearly every line is: no partition needed
            field, value = "data", line[6:]
        else:
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
        if field == "data":
            size += len(value) + 1
            if max_size is not None and size > max_size:
                raise _too_large(max_size)
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id" and "\0" not in value:  # an id with a NUL is ignored
            last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
        # any other field (or a bogus id / retry) is ignored
    if data and on_incomplete is not None:
        on_incomplete(ServerSentEvent(event_type or "message", "\n".join(data), last_id, retry))
