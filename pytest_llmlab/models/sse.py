"""A small Server-Sent Events parser (the WHATWG event-stream format).

OpenAI-compatible servers send ``data: {json}`` events separated by blank lines and end
with ``data: [DONE]``; some add ``: keep-alive`` comments or ``event:`` names. This
parser follows the spec's field rules so every one of them reads the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "iter_events", "iter_lines"]

_LINE_END = re.compile(r"\r\n|\r|\n")


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Split decoded text into SSE lines at CR, LF or CRLF only.

    ``str.splitlines`` (and so httpx's ``iter_lines``) also splits at U+2028, U+2029
    and U+0085, which a model may well generate inside a token: that would cut a
    ``data:`` line in two.
    """
    pending = ""
    for chunk in chunks:
        pending += chunk
        start = 0
        for match in _LINE_END.finditer(pending):
            if match.group() == "\r" and match.end() == len(pending):
                break  # may be the first half of a CRLF split across chunks
            yield pending[start : match.start()]
            start = match.end()
        pending = pending[start:]
    if pending:  # text without a line end, or one held back for a CR that was last
        yield pending.removesuffix("\r")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Yield one event per blank-line-terminated block of ``data:`` lines.

    A block still pending when the stream ends is yielded too (the spec drops it): a
    server that closes right after ``data: [DONE]`` without the final blank line has
    still finished properly, and a truncated JSON payload is caught by the caller.
    """
    event = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value or "message"
        # "id" and "retry" matter to reconnecting browsers, not to one request.
    if data:
        yield ServerSentEvent(event, "\n".join(data))
