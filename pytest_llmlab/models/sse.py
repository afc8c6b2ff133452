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
    "EventReader",
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


class _LineSplitter:
    """The lines of decoded text fed chunk by chunk: `iter_lines`' state."""

    def __init__(self, max_size: int | None) -> None:
        self.max_size = max_size
        self._pieces: list[str] = []  # the unfinished line, from earlier chunks
        self._size = 0  # its length
        self._after_cr = False  # the last chunk ended in CR: an LF starting the next is its CRLF

    @property
    def clean(self) -> bool:
        """Whether no line is unfinished: the next chunk starts a line."""
        return not self._pieces and not self._after_cr

    def split(self, chunk: str) -> list[str]:
        """The lines ``chunk`` finishes; what follows its last line end is kept."""
        if not chunk:
            return []
        if self._after_cr and chunk[0] == "\n":
            chunk = chunk[1:]
        self._after_cr = chunk.endswith("\r")
        lines = _split(chunk)
        rest = lines.pop()
        size, max_size = self._size, self.max_size
        # No line is longer than the chunk and what was pending: most chunks need no
        # look at each line's length.
        if max_size is not None and size + len(chunk) > max_size:
            if lines and size + len(lines[0]) > max_size:
                raise _too_large(max_size)
            rest_size = len(rest) if lines else size + len(rest)
            if any(len(line) > max_size for line in lines) or rest_size > max_size:
                raise _too_large(max_size)
        if lines and self._pieces:
            self._pieces.append(lines[0])
            lines[0] = "".join(self._pieces)
            self._pieces, self._size = [], 0
        if rest:
            self._size += len(rest)
            self._pieces.append(rest)
        return lines

    def end(self) -> str | None:
        """The text after the last line end, which is the last line; None: none."""
        if not self._pieces:
            return None
        line = "".join(self._pieces)
        self._pieces, self._size = [], 0
        return line


def iter_lines(chunks: Iterable[str], *, max_size: int | None = MAX_EVENT_SIZE) -> Iterator[str]:
    """Split decoded text into SSE lines at CR, LF or CRLF only.

    ``str.splitlines`` (and so httpx's ``iter_lines``) also splits at U+2028, U+2029
    and U+0085, which a model may well generate inside a token: that would cut a
    ``data:`` line in two. Each chunk is scanned once (a line is kept as its pieces
    until it ends), so one huge line costs linear time; a line longer than
    ``max_size`` raises ValueError. Text after the last line end is the last line.
    """
    splitter = _LineSplitter(max_size)
    for chunk in chunks:
        yield from splitter.split(chunk)
    last = splitter.end()
    if last is not None:
        yield last


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


class _EventBuilder:
    """The event being read, line by line: `iter_events`' state."""

    def __init__(self, max_size: int | None) -> None:
        self.max_size = max_size
        self.event_type = ""
        self.data: list[str] = []
        self._size = -1  # the joined data's length: the values plus one LF between each two
        self.last_id = ""
        self.retry: int | None = None

    def line(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its line end); the event it dispatches, if any."""
        if not line:
            data = self.data
            event_type = self.event_type
            self.event_type, self.data, self._size = "", [], -1
            if data:
                return ServerSentEvent(
                    event_type or "message", "\n".join(data), self.last_id, self.retry
                )
            return None
        if line[0] == ":":
            return None  # comment / keep-alive
        if line.startswith("data: "):  # what nearly every line is: no partition needed
            field, value = "data", line[6:]
        else:
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
        if field == "data":
            self._size += len(value) + 1
            if self.max_size is not None and self._size > self.max_size:
                raise _too_large(self.max_size)
            self.data.append(value)
        elif field == "event":
            self.event_type = value
        elif field == "id" and "\0" not in value:  # an id with a NUL is ignored
            self.last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # any other field (or a bogus id / retry) is ignored
        return None

    def unfinished(self) -> ServerSentEvent | None:
        """The event the stream ended inside, when it has data."""
        if not self.data:
            return None
        return ServerSentEvent(
            self.event_type or "message", "\n".join(self.data), self.last_id, self.retry
        )


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
    builder = _EventBuilder(max_size)
    for raw in lines:
        event = builder.line(raw.rstrip("\r\n"))
        if event is not None:
            yield event
    unfinished = builder.unfinished()
    if unfinished is not None and on_incomplete is not None:
        on_incomplete(unfinished)


class EventReader:
    """`iter_lines` and `iter_events` in one, fed decoded text chunk by chunk: the
    events each chunk completes, by the same rules.

    A chunk of whole blocks (what servers flush, and a replay's body) is cut at its
    blank lines at once, and a block of one ``data: `` line is its event without
    going line by line. That holds for a chunk without CR that fits the size limit,
    from its first blank line on when an earlier chunk began a line or an event (a
    read cut mid-event); any other chunk, and any other block, goes line by line.
    """

    def __init__(self, *, max_size: int | None = MAX_EVENT_SIZE) -> None:
        self._lines = _LineSplitter(max_size)
        self._events = _EventBuilder(max_size)

    def feed(self, text: str) -> list[ServerSentEvent]:
        """The events ``text`` completes, in order; ValueError for a line or an event
        over the size limit."""
        builder = self._events
        max_size = self._lines.max_size
        if "\r" in text or (max_size is not None and len(text) > max_size):
            return self._by_line(text)
        events: list[ServerSentEvent] = []
        if not self._clean:
            # What an earlier chunk began ends at the first blank line: line by line
            # to there, and whole blocks after it.
            end = text.find("\n\n")
            if end < 0:
                return self._by_line(text)
            events = self._by_line(text[: end + 2])
            text = text[end + 2 :]
            if not self._clean:
                return events + self._by_line(text)
        blocks = text.split("\n\n")
        tail = blocks.pop()  # after the last blank line: not yet a whole block
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                events.append(ServerSentEvent("message", block[6:], builder.last_id, builder.retry))
                continue
            for line in block.split("\n"):
                event = builder.line(line)
                if event is not None:
                    events.append(event)
            event = builder.line("")  # the blank line that ended the block
            if event is not None:
                events.append(event)
        if tail:
            events.extend(self._by_line(tail))
        return events

    @property
    def _clean(self) -> bool:
        """Whether no line and no event is begun: the next text starts a block."""
        return not (self._events.data or self._events.event_type) and self._lines.clean

    def _by_line(self, text: str) -> list[ServerSentEvent]:
        builder = self._events
        events: list[ServerSentEvent] = []
        for line in self._lines.split(text):
            event = builder.line(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> ServerSentEvent | None:
        """At the end of the stream: the event it ended inside (not dispatched, as the
        spec says), when that has data. Text after the last line end is a last line,
        which can add data but dispatch nothing."""
        last = self._lines.end()
        if last is not None:
            self._events.line(last)
        return self._events.unfinished()
