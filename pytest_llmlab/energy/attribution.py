"""Share the energy of overlapping windows of one host and domain between them.

A package or GPU counter measures the whole device: when two generations run at once
(xdist workers, batched requests) each window's own counter delta contains the other's
energy too, and adding them up would count that energy twice. `attribute` gives every
joule of the device to exactly one window:

1. Windows are grouped by (host, domain); groups never share.
2. Within a group, windows that overlap (positive-length intersections, chained) form a
   *component*. A window alone in its component keeps its own counter delta.
3. A component's time axis is cut at every window edge. The counter values at two
   consecutive cut points give the energy of the slice between them exactly.
4. A slice's energy is split among the windows active over it in proportion to the
   tokens each processed in it, evenly where that is unknown.

Counters of different processes (xdist workers) agree only up to a whole number of
wraps (see `pytest_llmlab.energy.base`): each process unfolds RAPL wraps on its own, so
its unwrapped values are the device's plus a constant multiple of ``wrap_j``. Rather
than taking every cross-process difference modulo ``wrap_j``, which silently loses
whole wraps over any slice longer than one wrap period (about a minute for a loaded
package), each component resolves one constant offset per process, then works on one
common counter (see `_resolve_offsets`). The offsets come from the processes' own wrap
tracking where the windows carry it (``wraps_start``/``wraps_end``/``events``, from
`pytest_llmlab.energy.base.wrap_fields`): a window knows its process's wrap count at
every instant inside it, so at another process's sample there the difference of the
two counts is the offset, exactly, however long the gaps. Only processes that no such
evidence joins fall back to the closest pair of samples and the wrap count that average
power suggests; where more than one count fits that gap, every window of the component
is low-confidence with the reason, never silently one of them. Wherever all slices
hold less than one wrap, this gives the same numbers as the modulo rule; beyond that it
stays exact where the modulo rule does not.

Guarantees (on consistent counters):

(a) a window that overlaps no other gets exactly its own delta: ``shared`` False,
    ``share`` 1.0;
(b) the attributed energies of a group sum to the energy of the union of its windows,
    i.e. the counter delta over each component;
(c) k identical concurrent windows get 1/k of the delta each;
(d) fully overlapping windows with token counts a and b, processed over the same times,
    split a:b.

Inconsistent counters (a slice whose energy comes out negative) are clamped to zero and
the windows active there carry a ``warning``; (b) then holds up to the clamped amount.
Shared windows whose numbers rest on a guess (the wrap count between two processes, or
a process whose meter could not count its own wraps: an event with a ``doubt``) carry
a ``low_confidence_reason``; a lone window's own doubt is its reading's already.

Decisions:

- Several edges at one instant (one process closing a window and opening the next, or
  two processes reading at the same nanosecond) read the same counter; after the
  per-process offsets are applied their values are averaged. Averaging keeps the sum
  over a component's slices equal to (last instant - first instant), so (b) holds even
  when the values disagree slightly; on consistent data all of them are equal and the
  common value is used as is.
- Windows touching end to start do not overlap: each is its own component, and the
  instant they share is never merged across components (so each keeps its own delta).
- A zero-duration window overlaps nothing and keeps its own delta.
- Token segments are half-open ``[t0, t1)`` spans whose tokens are spread evenly; a
  zero-duration segment puts its tokens at its instant ``t``, which counts in the slice
  ``[t_i, t_{i+1})`` holding it. The instant is first clamped into the window
  (``[t_start, t_end - 1]`` ns) so that a token stamped at the window's closing edge
  lands in its last slice instead of nowhere. A segment with ``t1 <= t0`` is an
  instant at ``t0``; negative token counts count as zero.
- Windows with ``t_end < t_start``, a ``(window_id, domain)`` seen twice, or a
  non-finite counter or ``wrap_j`` are a `ValueError` naming the window: one id covers
  every domain of a metered span, so the id alone repeats by design.
- Windows of one group that disagree on ``wrap_j`` use the largest and are warned.
- ``share`` is ``joules / gross_joules``, and 1.0 where the gross is not positive
  (nothing to divide).

Cost: one sort of the windows and of each component's edges, then one sweep that
visits the active windows of each slice: O(n log n + n k) for n windows and at most k
active at once (token curves add O(log m) per window and slice for m segments). Wrap
evidence adds one more such sweep, and O(e) per lookup in a window holding e events,
only for components of several processes whose windows carry it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby, pairwise

from pytest_llmlab.energy.base import CounterEvent, Window

__all__ = ["Attributed", "attribute"]


@dataclass(frozen=True, slots=True)
class Attributed:
    """One window's share of one domain's energy."""

    joules: float  # attributed energy
    gross_joules: float  # the window's own counter delta
    shared: bool  # overlapped another window of the same host and domain
    share: float  # joules / gross_joules (1.0 where the gross is not positive)
    warning: str | None = None  # set where the counters disagreed (bad data)
    #: Set where the split rests on a guess: why (the wrap count between processes).
    low_confidence_reason: str | None = None

    @property
    def low_confidence(self) -> bool:
        return self.low_confidence_reason is not None


def attribute(windows: Iterable[Window]) -> dict[str, dict[str, Attributed]]:
    """Attribute every group's energy to its windows: ``window_id -> domain -> result``.

    Raises `ValueError` (naming the window) for a window that ends before it starts, a
    ``(window_id, domain)`` given twice, or a non-finite counter or ``wrap_j``.
    """
    groups: dict[tuple[str, str], list[Window]] = defaultdict(list)
    for window in _validated(windows):
        groups[(window.host, window.domain)].append(window)
    result: dict[str, dict[str, Attributed]] = {}
    for group in groups.values():
        for window, attributed in _attribute_group(group):
            result.setdefault(window.window_id, {})[window.domain] = attributed
    return result


# -- validation and grouping -------------------------------------------------------


def _validated(windows: Iterable[Window]) -> list[Window]:
    """The windows as a list, after rejecting data no attribution can make sense of."""
    items = list(windows)
    seen: set[tuple[str, str]] = set()
    for window in items:
        name = f"window {window.window_id!r} ({window.domain})"
        if window.t_end_ns < window.t_start_ns:
            raise ValueError(
                f"{name} ends before it starts: {window.t_start_ns} > {window.t_end_ns} ns"
            )
        key = (window.window_id, window.domain)
        if key in seen:
            raise ValueError(f"{name} appears twice")
        seen.add(key)
        values = (window.counter_start_j, window.counter_end_j, window.wrap_j)
        if not all(math.isfinite(v) for v in values) or window.wrap_j < 0:
            raise ValueError(f"{name} has a non-finite counter or a bad wrap_j: {values}")
    return items


def _attribute_group(group: list[Window]) -> Iterator[tuple[Window, Attributed]]:
    """Attribute one (host, domain) group, component by component."""
    wrap = max(w.wrap_j for w in group)
    wrap_warning = None
    if len({w.wrap_j for w in group}) > 1:
        # One device has one counter range; disagreement means a meter misread it.
        wrap_warning = (
            f"windows of this host and domain disagree on wrap_j "
            f"({sorted({w.wrap_j for w in group})}); used {wrap}"
        )
    # Zero-duration windows cover no slice; they keep their own (normally zero) delta.
    spans = sorted(
        (w for w in group if w.t_end_ns > w.t_start_ns),
        key=lambda w: (w.t_start_ns, w.t_end_ns, w.window_id),
    )
    results = [(w, _lone(w)) for w in group if w.t_end_ns == w.t_start_ns]
    for component in _components(spans):
        if len(component) == 1:
            results.append((component[0], _lone(component[0])))
        else:
            results.extend(_attribute_component(component, wrap))
    for window, attributed in results:
        if wrap_warning is not None:
            attributed = _with_warning(attributed, wrap_warning)
        yield window, attributed


def _components(spans: Sequence[Window]) -> Iterator[list[Window]]:
    """Split windows sorted by start into chains of positive-length overlaps.

    A window starting exactly where the component's windows end has touched, not
    overlapped, them: it starts a new component.
    """
    component: list[Window] = []
    reach = 0
    for window in spans:
        if component and window.t_start_ns >= reach:
            yield component
            component = []
        if not component:
            reach = window.t_end_ns
        component.append(window)
        reach = max(reach, window.t_end_ns)
    if component:
        yield component


def _lone(window: Window) -> Attributed:
    """A window that shares with nobody keeps its own delta (clamped if negative)."""
    gross = window.joules
    if gross >= 0:
        return Attributed(joules=gross, gross_joules=gross, shared=False, share=1.0)
    warning = None
    if gross < -_tolerance(window.counter_start_j, window.counter_end_j, window.wrap_j):
        warning = f"counter went backwards over the window ({gross:.6g} J); clamped to 0"
    return Attributed(0.0, gross, shared=False, share=1.0, warning=warning)


def _with_warning(attributed: Attributed, warning: str) -> Attributed:
    joined = warning if attributed.warning is None else f"{attributed.warning}; {warning}"
    return replace(attributed, warning=joined)


def _tolerance(*values: float) -> float:
    """Rounding noise allowed around counter differences of these magnitudes.

    Counters arrive in joules converted from integer microjoules, possibly plus whole
    wraps: a difference that should be zero can come out a few ulps negative, which is
    noise to clamp silently, not bad data to warn about.
    """
    return 1e-9 * max((1.0, *(abs(v) for v in values)))


# -- one component -----------------------------------------------------------------


@dataclass(slots=True)
class _Edge:
    """A counter sample at one edge of a window."""

    t_ns: int
    process: str
    joules: float
    index: int  # the window's index in its component
    wraps: int | None  # the process's wrap count at this sample; None: not recorded


@dataclass(slots=True)
class _Tally:
    """What one window collects during the sweep."""

    joules: float = 0.0
    shared: bool = False
    negative_slices: int = 0
    first_negative: tuple[int, float] | None = None  # (slice start ns, energy)


def _attribute_component(component: list[Window], wrap: float) -> list[tuple[Window, Attributed]]:
    """Cut the component at every edge and split each slice among its active windows."""
    edges = sorted(
        (
            edge
            for index, w in enumerate(component)
            for edge in (
                _Edge(w.t_start_ns, w.process, w.counter_start_j, index, w.wraps_start),
                _Edge(w.t_end_ns, w.process, w.counter_end_j, index, w.wraps_end),
            )
        ),
        key=lambda e: (e.t_ns, e.process, e.index),
    )
    instants = [list(group) for _, group in groupby(edges, key=lambda e: e.t_ns)]
    times = [group[0].t_ns for group in instants]
    offsets, guess = _resolve_offsets(component, instants, times, wrap)
    values = [_instant_value(group, offsets, wrap) for group in instants]
    doubt = _join(guess, _component_doubt(component))

    tallies = [_Tally() for _ in component]
    shares = [0.0] * len(component)  # the hot loop's accumulators, kept apart: plain lists
    curves: list[_TokenCurve | None] | None = None  # built at the first shared slice
    for i, active in _slices(component, times):
        if not active:
            continue  # cannot happen inside a component; energy of nobody
        energy = values[i + 1] - values[i]
        if energy < 0:
            if energy < -_tolerance(values[i], values[i + 1], wrap):
                for index in active:
                    tally = tallies[index]
                    tally.negative_slices += 1
                    if tally.first_negative is None:
                        tally.first_negative = (times[i], energy)
            energy = 0.0
        if len(active) == 1:
            shares[active[0]] += energy
            continue
        if curves is None:
            curves = [_token_curve(w) for w in component]
        weights = _weights([curves[j] for j in active], times[i], times[i + 1])
        for index, weight in zip(active, weights, strict=True):
            shares[index] += energy * weight
            tallies[index].shared = True
    for tally, joules in zip(tallies, shares, strict=True):
        tally.joules = joules
    return [_result(w, tally, doubt) for w, tally in zip(component, tallies, strict=True)]


def _join(*reasons: str | None) -> str | None:
    present = [r for r in reasons if r]
    return "; ".join(present) if present else None


def _component_doubt(component: list[Window]) -> str | None:
    """The first doubt any window's meter logged, naming its process: its counter may
    be off by whole wraps there, and every slice value built on it with it."""
    for window in component:
        for event in window.events:
            if event.doubt is not None:
                return f"{window.process}: {event.doubt}"
    return None


def _slices(component: list[Window], times: list[int]) -> Iterator[tuple[int, list[int]]]:
    """Yield ``(i, active)`` for each slice ``[times[i], times[i+1])``: the indices of
    the windows covering it, in start order.

    ``component`` is sorted by start; a window is active over a slice iff it started at
    or before the slice's start and ends after it (edges are always cut points).
    """
    by_end = sorted(range(len(component)), key=lambda i: component[i].t_end_ns)
    active: dict[int, None] = {}  # insertion-ordered set: O(1) removal, stable order
    started = ended = 0
    for i in range(len(times) - 1):
        now = times[i]
        while ended < len(by_end) and component[by_end[ended]].t_end_ns <= now:
            active.pop(by_end[ended], None)
            ended += 1
        while started < len(component) and component[started].t_start_ns <= now:
            active[started] = None
            started += 1
        yield i, list(active)


def _instant_value(group: list[_Edge], offsets: dict[str, int], wrap: float) -> float:
    """The common counter value at one instant: all its samples on the common scale,
    averaged where they disagree (see the module's decisions)."""
    if len(group) == 1:
        return group[0].joules + offsets.get(group[0].process, 0) * wrap
    values = [e.joules + offsets.get(e.process, 0) * wrap for e in group]
    if min(values) == max(values):
        return values[0]
    return math.fsum(values) / len(values)


def _result(window: Window, tally: _Tally, doubt: str | None) -> tuple[Window, Attributed]:
    gross = window.joules
    share = tally.joules / gross if gross > 0 else 1.0
    warning = None
    if tally.first_negative is not None:
        at_ns, energy = tally.first_negative
        warning = (
            f"counters disagree: {tally.negative_slices} slice(s) with negative energy "
            f"clamped to 0 (first at {at_ns} ns: {energy:.6g} J)"
        )
    return window, Attributed(tally.joules, gross, tally.shared, share, warning, doubt)


# -- cross-process offsets ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Link:
    """Two samples of different processes at one instant or at consecutive cut points."""

    gap_ns: int
    order: int  # tie-break, for determinism
    slice_index: int  # the slice between the samples; -1 at one instant
    earlier: _Edge
    later: _Edge


class _WrapUnion:
    """Union-find over processes that also keeps each one's offset, in whole wraps,
    from its set's root."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._wraps: dict[str, int] = {}  # relative to the parent

    def find(self, process: str) -> tuple[str, int]:
        """The process's root and its offset from it, compressing the path."""
        parent, wraps = self._parent, self._wraps
        path: list[str] = []
        while parent.get(process, process) != process:
            path.append(process)
            process = parent[process]
        total = 0
        for node in reversed(path):  # nearest the root first
            total += wraps[node]
            parent[node], wraps[node] = process, total
        return process, total

    def union(self, earlier: str, later: str, k: int) -> bool:
        """Record ``offset(later) - offset(earlier) == k``; False if already joined."""
        root_a, off_a = self.find(earlier)
        root_b, off_b = self.find(later)
        if root_a == root_b:
            return False
        self._parent[root_b] = root_a
        self._wraps[root_b] = off_a + k - off_b
        return True


def _resolve_offsets(
    component: list[Window], instants: list[list[_Edge]], times: list[int], wrap: float
) -> tuple[dict[str, int], str | None]:
    """Whole wraps to add to each process's samples to put them on one scale, and the
    reason to doubt them where a count had to be guessed (None where none was).

    First the evidence (`_evidence_links`): exact offsets from windows that carry their
    process's wrap counts. Processes it leaves apart are joined by links between
    samples of different processes at one instant or at consecutive cut points. They
    are taken shortest gap first (Kruskal), so each offset comes from the closest pair
    of samples available, where the fewest wraps can hide. Each link picks the number
    of wraps that puts the energy between its samples inside [0, bound] (the gross of
    the smallest window covering the gap: a gap cannot hold more than a window around
    it) and nearest the estimate (the shortest covering window's average power times
    the gap). When the bound is below one wrap there is only one such choice: the
    modulo rule's answer; when there are several, the guess is reported.
    """
    processes = {w.process for w in component}
    if wrap <= 0 or len(processes) == 1:
        return {}, None
    offsets = _WrapUnion()
    evidence = _evidence_links(component, instants, times, wrap, len(processes) - 1)
    for witness, other, k in evidence:
        offsets.union(witness, other, k)
    guess = None
    if len(evidence) < len(processes) - 1:
        tree = _spanning_links(instants, times, len(processes), evidence)
        # Which links join the processes does not depend on the wrap counts, so the
        # windows around a gap are looked up only for the few links of the tree.
        needed = {link.slice_index for link in tree if link.slice_index >= 0}
        hints: dict[int, tuple[float, float]] = {}
        if needed:
            for i, active in _slices(component, times):
                if i in needed:
                    hints[i] = _gap_hint(component, active, times[i + 1] - times[i])
        for link in tree:
            estimate, bound = hints.get(link.slice_index, (0.0, 0.0))
            earlier, later = link.earlier, link.later
            k, fits = _wraps_between(earlier.joules, later.joules, estimate, bound, wrap)
            if fits > 1 and guess is None:
                guess = (
                    f"wrap count between {earlier.process} and {later.process} not unique: "
                    f"{fits} counts of the {wrap:g} J range fit the "
                    f"{(later.t_ns - earlier.t_ns) / 1e9:.4g} s between their samples at "
                    f"{earlier.t_ns} and {later.t_ns} ns, and no window records its "
                    f"process's wraps there; took the one nearest average power "
                    f"({later.joules - earlier.joules + k * wrap:.6g} J)"
                )
            offsets.union(earlier.process, later.process, k)
    return {process: offsets.find(process)[1] for process in processes}, guess


def _evidence_links(
    component: list[Window],
    instants: list[list[_Edge]],
    times: list[int],
    wrap: float,
    needed: int,
) -> list[tuple[str, str, int]]:
    """Exact offsets ``(a, b, k)``: ``offset(b) - offset(a) == k``, from the wrap
    tracking the windows carry, until ``needed`` links join every process.

    A window covering a slice contains both of its cut points, so it knows its
    process's wrap count at each sample there (`_count_at`); the sample's own process
    knows its count too, and both read one register: their counts differ by exactly
    the offset between the two processes. Every slice has a covering window, so where
    the windows carry the counts this joins all processes of the component.
    """
    if not any(w.wraps_start is not None for w in component):
        return []
    joined = _WrapUnion()
    links: list[tuple[str, str, int]] = []
    for i, active in _slices(component, times):
        witnesses = [component[j] for j in active if component[j].wraps_start is not None]
        for edge in (*instants[i], *instants[i + 1]):
            if edge.wraps is None:
                continue
            raw = edge.joules - edge.wraps * wrap  # the register, as this sample read it
            for witness in witnesses:
                if joined.find(witness.process)[0] == joined.find(edge.process)[0]:
                    continue  # the same process, or joined already
                count = _count_at(witness, edge.t_ns, raw, wrap)
                if count is None:
                    continue
                joined.union(witness.process, edge.process, 0)
                links.append((witness.process, edge.process, count - edge.wraps))
                if len(links) == needed:
                    return links
    return links


def _count_at(window: Window, t_ns: int, raw: float, wrap: float) -> int | None:
    """The wrap count of ``window``'s process at ``t_ns`` (inside the window), given
    the register's raw value there; None where ``t_ns`` falls between the two reads
    around a wrap and the value fits both sides or neither."""
    count = window.wraps_start if window.wraps_start is not None else 0
    for event in window.events:
        if event.t1_ns <= t_ns:
            count = event.wraps
            continue
        if event.t0_ns >= t_ns:
            break
        if event.wraps != count:
            return _side_of_wrap(event, count, raw, wrap)
    return count


def _side_of_wrap(event: CounterEvent, before: int, raw: float, wrap: float) -> int | None:
    """Before or after the wrap ``event`` counted: the count whose value of ``raw``
    lies between the reads around it (within 1% of the range: read noise)."""
    slack = 0.01 * wrap
    fits = [
        count
        for count in (before, event.wraps)
        if event.j0 - slack <= raw + count * wrap <= event.j1 + slack
    ]
    return fits[0] if len(fits) == 1 else None


def _spanning_links(
    instants: list[list[_Edge]],
    times: list[int],
    processes: int,
    joined_by: Sequence[tuple[str, str, int]] = (),
) -> list[_Link]:
    """The links joining all processes (those ``joined_by`` joins already count as
    one), shortest gaps first (Kruskal's choice)."""
    links: list[_Link] = []
    for group in instants:
        for a, b in pairwise(group):  # sorted by process: same-process runs skipped
            if a.process != b.process:
                links.append(_Link(0, len(links), -1, a, b))
    for i in range(len(instants) - 1):
        pair = _cross_pair(instants[i], instants[i + 1])
        if pair is not None:
            links.append(_Link(times[i + 1] - times[i], len(links), i, *pair))
    links.sort(key=lambda link: (link.gap_ns, link.order))
    joined = _WrapUnion()
    for earlier, later, _ in joined_by:
        joined.union(earlier, later, 0)
    tree: list[_Link] = []
    for link in links:
        if len(tree) + len(joined_by) >= processes - 1:
            break
        if joined.union(link.earlier.process, link.later.process, 0):
            tree.append(link)
    return tree


def _gap_hint(component: list[Window], active: list[int], gap_ns: int) -> tuple[float, float]:
    """(estimate, bound) of the energy over a gap covered by the ``active`` windows."""
    bound = min(max(component[j].joules, 0.0) for j in active)
    # The shortest window over the gap gives the most local power figure.
    local = min((component[j] for j in active), key=lambda w: w.t_end_ns - w.t_start_ns)
    estimate = max(local.joules, 0.0) * gap_ns / (local.t_end_ns - local.t_start_ns)
    return min(estimate, bound), bound


def _cross_pair(before: list[_Edge], after: list[_Edge]) -> tuple[_Edge, _Edge] | None:
    """One sample from each instant, of different processes, if there is such a pair.

    One pair suffices: the processes within each instant are already linked at gap 0.
    """
    first = before[0]
    for edge in after:
        if edge.process != first.process:
            return first, edge
    for edge in before:
        if edge.process != after[0].process:
            return edge, after[0]
    return None


def _wraps_between(
    earlier: float, later: float, estimate: float, bound: float, wrap: float
) -> tuple[int, int]:
    """Whole wraps k so that ``later - earlier + k * wrap`` is the energy between two
    samples: inside [0, bound] where possible, nearest the estimate among those; and
    how many k fit [0, bound] (0: none, bad data; more than 1: k is a guess)."""
    diff = later - earlier
    nearest = round((estimate - diff) / wrap)
    # Rounding noise must not push an exact zero (one register read by two processes
    # in the same update period) out of range and make it a whole wrap.
    slack = _tolerance(earlier, later, wrap)
    low = math.ceil((-slack - diff) / wrap)
    high = math.floor((bound + slack - diff) / wrap)
    if low > high:
        return nearest, 0  # no choice is consistent: bad data, flagged later as negative
    return min(max(nearest, low), high), high - low + 1


# -- token weights -----------------------------------------------------------------


@dataclass(slots=True)
class _TokenCurve:
    """Cumulative tokens a window processed by time t: piecewise linear in t."""

    times: list[int]
    tokens: list[float]  # cumulative tokens at `times`
    rates: list[float]  # tokens per ns after each of `times`
    # The sweep asks for consecutive slices, so each slice's start is the previous
    # one's end: remembering it halves the lookups.
    last_ns: int = -1
    last_tokens: float = 0.0

    def at(self, t_ns: int) -> float:
        j = bisect_right(self.times, t_ns) - 1
        if j < 0:
            return 0.0
        if j >= len(self.times) - 1:
            return self.tokens[-1]
        return self.tokens[j] + self.rates[j] * (t_ns - self.times[j])

    def between(self, t0_ns: int, t1_ns: int) -> float:
        """Tokens processed in ``[t0_ns, t1_ns)``."""
        start = self.last_tokens if t0_ns == self.last_ns else self.at(t0_ns)
        end = self.at(t1_ns)
        self.last_ns, self.last_tokens = t1_ns, end
        return end - start if end > start else 0.0


def _token_curve(window: Window) -> _TokenCurve | None:
    """The window's token curve, or None where it recorded no segments (unknown)."""
    if not window.segments:
        return None
    changes: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])  # slope, ramps
    for segment in window.segments:
        tokens = float(max(segment.tokens, 0))
        start, end = segment.t0_ns, segment.t1_ns
        if end <= start:
            # An instant: times are whole ns and cut points fall on them, so a 1 ns ramp
            # at the clamped instant counts in exactly the slice [t_i, t_{i+1}) holding it.
            start = min(max(start, window.t_start_ns), window.t_end_ns - 1)
            end = start + 1
        rate = tokens / (end - start)
        changes[start][0] += rate
        changes[start][1] += 1
        changes[end][0] -= rate
        changes[end][1] -= 1
    times = sorted(changes)
    cumulative = [0.0]
    rates: list[float] = []
    rate, ramps = 0.0, 0.0
    for j, t_ns in enumerate(times):
        rate += changes[t_ns][0]
        ramps += changes[t_ns][1]
        if ramps == 0:
            # Exactly idle between segments: added and subtracted rates need not
            # cancel in floating point, and a stray 1e-16 token would win a slice
            # that all active windows spent idle (which is meant to split evenly).
            rate = 0.0
        rates.append(rate)
        if j + 1 < len(times):
            cumulative.append(cumulative[-1] + rate * (times[j + 1] - t_ns))
    return _TokenCurve(times, cumulative, rates)


def _weights(curves: list[_TokenCurve | None], t0_ns: int, t1_ns: int) -> list[float]:
    """Each active window's fraction of the slice ``[t0_ns, t1_ns)``: its tokens there
    over all active windows' tokens; even where any window's tokens are unknown (no
    curve) or nobody processed any."""
    if any(curve is None for curve in curves):
        return [1.0 / len(curves)] * len(curves)
    counts = [curve.between(t0_ns, t1_ns) for curve in curves if curve is not None]
    total = math.fsum(counts)
    if total <= 0:
        return [1.0 / len(curves)] * len(curves)
    return [count / total for count in counts]
