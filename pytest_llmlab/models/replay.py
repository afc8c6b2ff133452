"""Streams on tape: what a live request received, frame by frame, and its playback.

Recording: a `Tape` rides on a `ChunkStream`; the stream tells it the answer's status
and content type (`Tape.begin`, once per HTTP attempt: only the last attempt is kept)
and hands it every piece of the body as it arrives (`Tape.piece`), decoded from any
content encoding, exactly as the parser reads it. `Tape.frames` then cuts the body into
wire-level frames (an event-stream's events, blank line included; an NDJSON body's
lines), each with the offset from request start, in nanoseconds, at which its last byte
arrived: when the parser could first act on it.

Playback: a `ReplayTransport` is the httpx transport of a replay client (the same
provider module as live traffic, built without a network). A replayed stream reads the
answer of the `Playback` queued for it straight from the transport
(`ReplayTransport.answer`, without the HTTP client's request machinery); a request
sent through the client instead carries a `REPLAY_HEADER` naming it. The answer has
the recorded status and content type, and a body that yields each frame at
``origin + offset / speed`` (``speed`` 0: at once). So the parser, the assembler, the
timings and the checks see the bytes the live request saw, in the same frames, and at
speed 1 with the same gaps.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from pytest_llmlab.models.sse import is_event_stream

__all__ = [
    "REPLAY_HEADER",
    "Frame",
    "Playback",
    "ReplayTransport",
    "Tape",
    "decode_frames",
    "encode_frames",
    "split_frames",
]

#: The header that tells a `ReplayTransport` which playback a request is (never sent
#: over a network: only replay clients have that transport).
REPLAY_HEADER = "x-llmlab-replay"

_LINE_END = re.compile(rb"\r\n|\r|\n")

#: One frame: nanoseconds from request start to its last byte, and its bytes.
Frame = tuple[int, bytes]


@dataclass(slots=True)
class Tape:
    """What one streamed request received; ``origin_ns`` is its start
    (``time.monotonic_ns``), from which every offset is counted."""

    origin_ns: int
    status: int = 0
    content_type: str = ""
    #: Nanoseconds from request start to the answer's status line and headers.
    head_ns: int = 0
    pieces: list[Frame] = field(default_factory=list)

    def begin(self, status: int, content_type: str) -> None:
        """An attempt's answer arrived: what earlier attempts received is dropped."""
        self.status = status
        self.content_type = content_type
        self.head_ns = time.monotonic_ns() - self.origin_ns
        self.pieces = []

    def piece(self, data: bytes) -> None:
        """A piece of the body arrived, now."""
        self.pieces.append((time.monotonic_ns() - self.origin_ns, data))

    def frames(self) -> list[Frame]:
        """The body cut into frames (`split_frames`) by its content type."""
        return split_frames(self.pieces, events=is_event_stream(self.content_type))


def split_frames(pieces: Sequence[Frame], *, events: bool) -> list[Frame]:
    """The body of ``pieces`` cut after each event (``events``: a line that is blank
    ends one) or after each line, each frame timed by the piece its last byte came in.

    The frames join to the body byte for byte; bytes after the last cut (a stream that
    ended mid-line) are a last frame of their own. Lines end at CRLF, LF or CR, as the
    event-stream parser reads them; a CR at the end of a piece waits for the next one,
    which may hold its LF.
    """
    frames: list[Frame] = []
    pending = bytearray()
    for offset, data in pieces:
        pending += data
        line = cut = 0  # where the line being read starts; where the next frame does
        while (end := _LINE_END.search(pending, line)) is not None:
            if end.group() == b"\r" and end.end() == len(pending):
                break  # a CR last: the next piece may hold its LF
            blank = end.start() == line
            line = end.end()
            if blank or not events:
                frames.append((offset, bytes(pending[cut:line])))
                cut = line
        del pending[:cut]
    if pending:
        frames.append((pieces[-1][0], bytes(pending)))
    return frames


def encode_frames(frames: Sequence[Frame]) -> list[list[Any]]:
    """Frames as a cassette keeps them: ``[offset_ns, text]``, or ``[offset_ns,
    {"base64": ...}]`` for bytes that are not UTF-8."""
    encoded: list[list[Any]] = []
    for offset, data in frames:
        try:
            encoded.append([offset, data.decode("utf-8")])
        except UnicodeDecodeError:
            encoded.append([offset, {"base64": base64.b64encode(data).decode("ascii")}])
    return encoded


def decode_frames(value: object) -> list[Frame]:
    """The frames of a cassette entry; ValueError saying what is wrong with them."""
    if not isinstance(value, list):
        raise ValueError("'frames' is not a list")  # noqa: TRY004  # a bad file, not a bug
    fast = _text_frames(value)
    if fast is not None:
        return fast
    frames: list[Frame] = []
    last = 0
    for index, item in enumerate(value):
        where = f"frames[{index}]"
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError(f"{where} is not [offset_ns, text]")
        offset, body = item
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < last:
            raise ValueError(f"{where}: the offset is not a whole number of ns >= the last")
        last = offset
        if isinstance(body, str):
            frames.append((offset, body.encode("utf-8", "surrogatepass")))
        elif isinstance(body, dict) and isinstance(body.get("base64"), str):
            try:
                frames.append((offset, base64.b64decode(body["base64"], validate=True)))
            except binascii.Error:
                raise ValueError(f"{where}: base64 that does not decode") from None
        else:
            raise ValueError(f"{where}: the frame is neither text nor {{'base64': ...}}")  # noqa: TRY004  # a bad file
    return frames


def _text_frames(value: list[Any]) -> list[Frame] | None:
    """The frames of the common entry (every frame ``[offset, text]``, offsets whole
    and in order) at the cost of a plain loop; None for anything else, which
    `decode_frames` then reads item by item to say what is wrong."""
    try:
        frames = [(offset, body.encode("utf-8", "surrogatepass")) for offset, body in value]
    except (TypeError, ValueError, AttributeError):
        return None
    offsets = [offset for offset, _ in frames]
    if not all(type(offset) is int for offset in offsets) or offsets != sorted(offsets):
        return None
    return frames if not offsets or offsets[0] >= 0 else None


@dataclass(frozen=True, slots=True)
class Playback:
    """One recorded answer to play: the stream starts at ``origin_ns``
    (``time.monotonic_ns``); ``speed`` 0 plays at once, 1 at the recorded pace, 2 twice
    as fast."""

    status: int
    content_type: str
    head_ns: int
    frames: Sequence[Frame]
    origin_ns: int
    speed: float

    def wait_until(self, offset_ns: int) -> None:
        """Sleep until ``offset_ns`` (recorded) after the origin, at this speed."""
        if self.speed <= 0:
            return
        due = self.origin_ns + offset_ns / self.speed
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)


class _PacedBody(httpx.SyncByteStream):
    def __init__(self, playback: Playback) -> None:
        self._playback = playback

    def __iter__(self) -> Iterator[bytes]:
        playback = self._playback
        if playback.speed <= 0:
            # Every frame is due at once: one piece, as a fast server's reads bring
            # several events together. The parser reads the same bytes; each frame
            # would otherwise pay httpx's per-piece layers (bench/replay.py).
            yield b"".join(data for _, data in playback.frames)
            return
        for offset, data in playback.frames:
            playback.wait_until(offset)
            yield data


class ReplayTransport(httpx.BaseTransport):
    """Answers each request with the `Playback` its `REPLAY_HEADER` names; any other
    request (a probe, a tokenizer call) gets 404: a replay never reaches a server."""

    def __init__(self) -> None:
        self._pending: dict[str, Playback] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def expect(self, playback: Playback) -> str:
        """Queue ``playback``; the value for the `REPLAY_HEADER` of its request."""
        with self._lock:
            token = str(next(self._ids))
            self._pending[token] = playback
        return token

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.answer(request.headers.get(REPLAY_HEADER, ""), request)

    def answer(self, token: str, request: httpx.Request | None = None) -> httpx.Response:
        """The answer of the playback ``token`` names (taken once; 404 for none): what
        `handle_request` returns, and what a `ChunkStream` of a replay reads without
        going through the HTTP client (`ChunkStream.played`)."""
        with self._lock:
            playback = self._pending.pop(token, None)
        if playback is None:
            return httpx.Response(
                404, text="not in the cassette (replay: no network)", request=request
            )
        playback.wait_until(playback.head_ns)
        return httpx.Response(
            playback.status,
            headers={"content-type": playback.content_type},
            stream=_PacedBody(playback),
            request=request,
        )
