"""What every meter provides, and the plain data that crosses processes.

A meter exposes cumulative energy counters, one per *domain* (``package-0``,
``dram-0``, ``gpu-GPU-8f3c...``, ``cpu-estimate``...), in joules. Opening a window samples every
counter, closing it samples again: the deltas are the window's energy. Measured
counters (RAPL, NVML total energy), integrated power samples and estimates all look the
same from here; ``provenance`` says which one a number is.

Counters of one host and domain are comparable between processes (xdist workers) up to
a whole number of wraps: RAPL's unwrapped value in each process is the raw register
plus that process's own wrap count times the range (``wrap_j``), so differences
between two processes are taken modulo ``wrap_j``; non-wrapping counters have
``wrap_j == 0``.

A wrapping counter's samples also say how many wraps their process had counted
(``wraps``) and carry the process's log of `CounterEvent`: where it counted a wrap (the
two reads around it) and where it could not count wraps uniquely (reads further apart
than one wrap period at the zone's maximum power, an impossible step). A window keeps
its edges' wrap counts and the events inside it (`wrap_fields`), which is what lets
attribution put two processes' counters on one scale exactly instead of guessing the
wraps between them from average power; `counter_doubt` is the reason to distrust a
window's own delta, if any.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from pytest_llmlab.errors import LLMLabError

__all__ = [
    "DOMAIN_KINDS",
    "CounterEvent",
    "CounterSample",
    "Meter",
    "MeterUnavailable",
    "Provenance",
    "TokenSegment",
    "Window",
    "counter_doubt",
    "domain_kind",
    "wrap_fields",
]

Provenance = Literal[
    "measured", "measured-apportioned", "integrated", "estimated", "replayed", "unavailable"
]

#: Which reading field a domain's energy adds to.
DOMAIN_KINDS: dict[str, str] = {
    "package": "cpu",
    "cpu": "cpu",
    "dram": "dram",
    "gpu": "gpu",
}


@functools.lru_cache(maxsize=256)
def domain_kind(domain: str) -> str:
    """``package-0`` -> ``cpu``, ``dram-1`` -> ``dram``, ``gpu-GPU-8f3c...`` -> ``gpu``,
    ``cpu-estimate`` -> ``cpu``; anything else is its own kind (a PDU, a plug)."""
    head = domain.split("-", 1)[0]
    return DOMAIN_KINDS.get(head, head)


class MeterUnavailable(LLMLabError):
    """A meter cannot run on this machine; the message says why and, where there is
    one, the remedy (``chmod``/udev rule for RAPL, driver for NVML)."""


class CounterEvent(NamedTuple):
    """Something one process saw between two consecutive reads of a wrapping counter:
    a wrap it counted, or reads it could not count wraps between uniquely (``doubt``).

    ``j0``/``j1`` are the process's unwrapped values at the reads (``t0_ns``/``t1_ns``),
    ``wraps`` its wrap count from the second read on."""

    t0_ns: int
    j0: float
    t1_ns: int
    j1: float
    wraps: int
    doubt: str | None = None


class CounterSample(NamedTuple):
    """One reading of one domain's cumulative counter.

    A NamedTuple, not a dataclass: meters build one per domain at every window edge,
    and a frozen dataclass costs several times more to construct."""

    domain: str
    joules: float  # cumulative, non-decreasing within one process (wraps unfolded)
    t_ns: int  # time.monotonic_ns() when read
    wrap_j: float = 0.0  # counter range in joules; 0 = does not wrap
    provenance: Provenance = "measured"
    wraps: int = 0  # wraps this process had counted at this read (wrapping counters)
    #: The process's event log for this counter so far, oldest first (shared, not
    #: copied, between samples: a new tuple only when an event is added).
    events: tuple[CounterEvent, ...] = ()


def _events_between(first: CounterSample, last: CounterSample) -> list[CounterEvent]:
    """The events of ``last``'s log after the read ``first`` (same process and domain)
    and up to the read ``last``: the ones inside a window with these edges."""
    inside: list[CounterEvent] = []
    for event in reversed(last.events):
        if event.t1_ns <= first.t_ns:
            break  # the log is in time order: everything older is before the window
        if event.t0_ns < last.t_ns:
            inside.append(event)
    inside.reverse()
    return inside


def wrap_fields(first: CounterSample, last: CounterSample) -> dict[str, Any]:
    """The `Window` fields of a wrapping counter between two samples (``wraps_start``,
    ``wraps_end``, ``events``), as plain data for the window dict."""
    if not last.events:  # the common case: no wrap yet this session
        return {"wraps_start": first.wraps, "wraps_end": last.wraps, "events": []}
    return {
        "wraps_start": first.wraps,
        "wraps_end": last.wraps,
        "events": [event._asdict() for event in _events_between(first, last)],
    }


def counter_doubt(first: CounterSample, last: CounterSample) -> str | None:
    """Why the counter delta between two samples cannot be trusted (the first doubt in
    between, with how many more), or None."""
    if not last.events:
        return None
    doubts = [e.doubt for e in _events_between(first, last) if e.doubt is not None]
    if not doubts:
        return None
    more = f" (and {len(doubts) - 1} more)" if len(doubts) > 1 else ""
    return f"{doubts[0]}{more}"


class Meter(Protocol):
    """An energy source. Implementations: RAPL, NVML, the CPU estimate, plugins'."""

    #: Short name shown in readings and the header: "rapl", "nvml", "cpu-estimate".
    name: str

    def sample(self) -> list[CounterSample]:
        """Read every domain's counter now. Must be cheap (window edges call it)."""
        ...

    def close(self) -> None:
        """Stop threads, close file descriptors. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class TokenSegment:
    """Tokens processed evenly over [t0_ns, t1_ns]: prefill (prompt tokens before the
    first output token) and decode (output tokens after it)."""

    t0_ns: int
    t1_ns: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Window:
    """One domain's counter at the two edges of a metered span: plain data that
    travels from an xdist worker to the controller as a dict (`to_dict`)."""

    window_id: str  # unique in the session: "<host>:<pid>:<n>"
    host: str
    process: str  # "<host>:<pid>": counters of one process compare without modulo
    domain: str
    t_start_ns: int
    t_end_ns: int
    counter_start_j: float
    counter_end_j: float
    wrap_j: float = 0.0
    provenance: Provenance = "measured"
    segments: tuple[TokenSegment, ...] = field(default_factory=tuple)
    #: Wrapping counters: the process's wrap count at each edge and its events in
    #: between (`wrap_fields`); None where the meter gave none (old records).
    wraps_start: int | None = None
    wraps_end: int | None = None
    events: tuple[CounterEvent, ...] = field(default_factory=tuple)

    @property
    def joules(self) -> float:
        """The counter delta over this window alone (its gross energy)."""
        return self.counter_end_j - self.counter_start_j

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies recursively and was most of the cost
        # of closing a window.
        return {
            "window_id": self.window_id,
            "host": self.host,
            "process": self.process,
            "domain": self.domain,
            "t_start_ns": self.t_start_ns,
            "t_end_ns": self.t_end_ns,
            "counter_start_j": self.counter_start_j,
            "counter_end_j": self.counter_end_j,
            "wrap_j": self.wrap_j,
            "provenance": self.provenance,
            "segments": [
                {"t0_ns": s.t0_ns, "t1_ns": s.t1_ns, "tokens": s.tokens} for s in self.segments
            ],
            "wraps_start": self.wraps_start,
            "wraps_end": self.wraps_end,
            "events": [event._asdict() for event in self.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        values = dict(data)
        values["segments"] = tuple(TokenSegment(**s) for s in values.get("segments", ()))
        values["events"] = tuple(CounterEvent(**e) for e in values.get("events", ()))
        return cls(**values)
