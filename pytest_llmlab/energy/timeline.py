"""The timeline sampler: one in-process daemon thread reading gauges at a fixed rate.

Power-only energy sources (GPUs older than Volta, NVML's instant power) and the GPU
statistics of a reading (utilization, memory, temperature) come from gauges, not
counters: something has to read them regularly. A :class:`Sampler` calls every
registered *source* (a callable returning ``{metric: value}``) ``hz`` times a second on
one daemon thread and keeps, per source, the timestamps and values in compact
columns (``array``), bounded to about ``retention_s`` seconds of history.

Why a thread and not a process: spawned processes clash with pytest-xdist (and with
forked workers), a thread costs nothing to start and shares the meter's NVML handle.

Queries over ``[t0_ns, t1_ns]`` (times from the sampler's clock, ``time.monotonic_ns``
by default, i.e. CLOCK_MONOTONIC like every window edge):

* :meth:`Sampler.integrate` -- trapezoid integral of a metric (power in watts gives
  joules), the edge values linearly interpolated between the two samples around each
  edge, and held flat beyond the first/last sample;
* :meth:`Sampler.stats` -- time-weighted average and maximum of a metric;
* :meth:`Sampler.cumulative` -- a running integral maintained since the source was
  added (``accumulate=`` metric), which never forgets, unlike the bounded history: the
  "counter" of a power-only energy domain.

Every timestamp is read from ``clock`` *before* the source is called, under one lock,
so samples of one source are strictly ordered even when a caller forces a reading
(:meth:`Sampler.tick_source`) while the thread is running. Tests inject ``clock`` and
call :meth:`Sampler.tick` directly instead of starting the thread.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self

from pytest_llmlab.errors import LLMLabError

__all__ = [
    "DEFAULT_HZ",
    "DEFAULT_RETENTION_S",
    "NoSamples",
    "Sampler",
    "SourceFn",
    "Stats",
]

#: Default sampling rate: the design calls for 10-20 Hz.
DEFAULT_HZ = 20.0
#: Default history kept per source, in seconds (10 minutes: 12,000 rows at 20 Hz).
DEFAULT_RETENTION_S = 600.0

#: A source: called once per tick, returns the current value of each metric
#: (``None`` where a metric cannot be read this time).
SourceFn = Callable[[], Mapping[str, float | None]]

_NAN = float("nan")


class NoSamples(LLMLabError, LookupError):
    """A query found no usable sample of the metric (unknown metric, never read, or
    every reading was ``None``)."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of one metric over a time span."""

    avg: float  # time-weighted mean over [t0, t1] (the value at t0 when t0 == t1)
    max: float  # max of the samples inside [t0, t1] and the interpolated edge values
    n: int  # real samples inside [t0, t1]


class _Series:
    """One source's history: a time column and one float column per metric (NaN =
    not read), trimmed from the front to stay within ``cap`` rows (amortized O(1))."""

    __slots__ = ("acc_j", "acc_key", "acc_last", "cap", "columns", "errors", "fn", "times")

    def __init__(self, fn: SourceFn, cap: int, accumulate: str | None) -> None:
        self.fn = fn
        self.cap = cap
        self.times: array[int] = array("q")
        self.columns: dict[str, array[float]] = {}
        self.errors = 0
        self.acc_key = accumulate
        self.acc_j = 0.0  # running trapezoid integral of acc_key (unit x seconds)
        self.acc_last: tuple[int, float] | None = None  # last finite (t_ns, value)

    def append(self, t_ns: int, values: Mapping[str, float | None]) -> None:
        """Add one row; new metrics are back-filled with NaN."""
        rows = len(self.times)
        self.times.append(t_ns)
        for key, value in values.items():
            column = self.columns.get(key)
            if column is None:
                column = array("d", [_NAN]) * rows
                self.columns[key] = column
            column.append(_NAN if value is None else float(value))
        for key, column in self.columns.items():
            if len(column) == rows:  # metric absent from this row
                column.append(_NAN)
        self._accumulate(t_ns, values)
        self._trim()

    def _accumulate(self, t_ns: int, values: Mapping[str, float | None]) -> None:
        """Advance the running integral with the trapezoid from the last finite value."""
        if self.acc_key is None:
            return
        value = values.get(self.acc_key)
        if value is None or not math.isfinite(value):
            return  # a failed read: the next good one bridges the gap
        if self.acc_last is not None:
            t_prev, v_prev = self.acc_last
            self.acc_j += (v_prev + value) / 2.0 * (t_ns - t_prev) / 1e9
        self.acc_last = (t_ns, float(value))

    def _trim(self) -> None:
        """Drop the oldest rows once the history exceeds ``cap`` by a quarter."""
        excess = len(self.times) - self.cap
        if excess > self.cap // 4:
            del self.times[:excess]
            for column in self.columns.values():
                del column[:excess]

    def points(
        self, key: str, t0: int | None = None, t1: int | None = None
    ) -> tuple[list[int], list[float]]:
        """The finite (t_ns, value) pairs of one metric, oldest first: all of them, or
        those in [t0, t1] plus the nearest finite one on each side (for interpolation)."""
        column = self.columns.get(key)
        if column is None:
            return [], []
        times = self.times
        lo = 0 if t0 is None else bisect.bisect_left(times, t0)
        hi = len(times) if t1 is None else bisect.bisect_right(times, t1)
        while lo > 0:  # widen to the nearest finite sample before t0
            lo -= 1
            if not math.isnan(column[lo]):
                break
        while hi < len(times):  # ... and after t1
            hi += 1
            if not math.isnan(column[hi - 1]):
                break
        out_t: list[int] = []
        out_v: list[float] = []
        for i in range(lo, hi):
            value = column[i]
            if not math.isnan(value):
                out_t.append(times[i])
                out_v.append(value)
        return out_t, out_v


def _value_at(times: list[int], vals: list[float], t: int) -> float:
    """Linear interpolation at ``t``; held flat before the first / after the last point."""
    i = bisect.bisect_left(times, t)
    if i < len(times) and times[i] == t:
        return vals[i]
    if i == 0:
        return vals[0]
    if i == len(times):
        return vals[-1]
    t_a, t_b = times[i - 1], times[i]
    v_a, v_b = vals[i - 1], vals[i]
    return v_a + (v_b - v_a) * (t - t_a) / (t_b - t_a)


def _window(
    times: list[int], vals: list[float], t0: int, t1: int
) -> tuple[list[int], list[float], int]:
    """The polyline over [t0, t1]: interpolated edges plus the samples strictly inside,
    and the number of real samples in the closed interval."""
    lo = bisect.bisect_left(times, t0)
    hi = bisect.bisect_right(times, t1)
    inner_lo = lo + 1 if lo < len(times) and times[lo] == t0 else lo
    inner_hi = hi - 1 if hi > 0 and times[hi - 1] == t1 else hi
    xs = [t0, *times[inner_lo:inner_hi], t1]
    ys = [_value_at(times, vals, t0), *vals[inner_lo:inner_hi], _value_at(times, vals, t1)]
    return xs, ys, hi - lo


def _trapezoid(xs: list[int], ys: list[float]) -> float:
    """Trapezoid integral of ``ys`` over ``xs`` (nanoseconds), in value x seconds."""
    total = 0.0
    for i in range(1, len(xs)):
        total += (ys[i - 1] + ys[i]) / 2.0 * (xs[i] - xs[i - 1])
    return total / 1e9


class Sampler:
    """Samples registered sources ``hz`` times a second on one daemon thread.

    ``start()`` launches the thread (idempotent), ``stop()`` ends and joins it
    (idempotent; a stopped sampler may be started again). Sources may be added and
    removed at any time. A source that raises is counted in :meth:`errors` and skipped
    for that tick; the thread never dies of it.
    """

    def __init__(
        self,
        hz: float = DEFAULT_HZ,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], int] = time.monotonic_ns,
        name: str = "llmlab-sampler",
    ) -> None:
        if not (math.isfinite(hz) and hz > 0):
            raise ValueError(f"sampler rate must be a positive number of Hz, got {hz!r}")
        if not (math.isfinite(retention_s) and retention_s > 0):
            raise ValueError(f"retention must be a positive number of seconds, got {retention_s!r}")
        self.hz = float(hz)
        self.retention_s = float(retention_s)
        self.clock = clock
        self.name = name
        #: Rows kept per source (the history is trimmed back to this, in batches).
        self.capacity = max(2, math.ceil(retention_s * hz) + 1)
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sources ------------------------------------------------------------------

    def add_source(self, name: str, fn: SourceFn, *, accumulate: str | None = None) -> None:
        """Register ``fn`` under ``name``; ``accumulate`` names a metric whose running
        integral :meth:`cumulative` reports (e.g. ``"power_w"`` -> joules)."""
        with self._lock:
            if name in self._series:
                raise ValueError(f"sampler source {name!r} already registered")
            self._series[name] = _Series(fn, self.capacity, accumulate)

    def remove_source(self, name: str) -> None:
        """Forget a source and its history (no error if it is unknown)."""
        with self._lock:
            self._series.pop(name, None)

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of the registered sources."""
        with self._lock:
            return tuple(self._series)

    def errors(self, name: str) -> int:
        """How many times source ``name`` raised."""
        with self._lock:
            return self._get(name).errors

    # -- sampling -----------------------------------------------------------------

    def tick(self) -> None:
        """Read every source once, now."""
        with self._lock:
            for series in self._series.values():
                self._read(series)

    def tick_source(self, name: str) -> int:
        """Read one source now (e.g. at a window edge); returns the sample's time."""
        with self._lock:
            return self._read(self._get(name))

    def _read(self, series: _Series) -> int:
        """Timestamp, call and store one source (lock held)."""
        t_ns = self.clock()
        try:
            values = series.fn()
        except Exception:  # noqa: BLE001 -- a failing gauge must not kill the thread
            series.errors += 1
            return t_ns
        if series.times and t_ns <= series.times[-1]:
            return t_ns  # a clock that did not advance: keep the series strictly ordered
        series.append(t_ns, values)
        return t_ns

    # -- thread -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the sampling thread (no-op if it is already running)."""
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join the sampling thread. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        """The thread: tick at a fixed rate; after a stall, resume without bursting."""
        period = 1.0 / self.hz
        deadline = time.monotonic()
        while not stop.is_set():
            self.tick()
            deadline += period
            delay = deadline - time.monotonic()
            if delay < 0:
                deadline = time.monotonic()
                delay = 0.0
            if stop.wait(delay):
                break

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------

    def _get(self, name: str) -> _Series:
        try:
            return self._series[name]
        except KeyError:
            raise KeyError(f"unknown sampler source {name!r}") from None

    def _points(self, name: str, key: str, t0: int, t1: int) -> tuple[list[int], list[float]]:
        """Copy one metric's finite points around [t0, t1]; NoSamples if there are none."""
        with self._lock:
            times, vals = self._get(name).points(key, t0, t1)
        if not times:
            raise NoSamples(f"no {key!r} samples from source {name!r}")
        return times, vals

    def samples(self, name: str) -> list[tuple[int, dict[str, float | None]]]:
        """The kept history of one source as ``(t_ns, {metric: value})`` rows."""
        with self._lock:
            series = self._get(name)
            columns = {key: list(col) for key, col in series.columns.items()}
            times = list(series.times)
        return [
            (t, {k: (None if math.isnan(c[i]) else c[i]) for k, c in columns.items()})
            for i, t in enumerate(times)
        ]

    def integrate(self, name: str, t0_ns: int, t1_ns: int, key: str = "power_w") -> float:
        """Trapezoid integral of ``key`` over [t0_ns, t1_ns] in value x seconds (watts
        -> joules); edges interpolated, held flat outside the kept samples."""
        if t1_ns < t0_ns:
            raise ValueError(f"integration span ends before it starts: {t0_ns} > {t1_ns}")
        times, vals = self._points(name, key, t0_ns, t1_ns)
        xs, ys, _ = _window(times, vals, t0_ns, t1_ns)
        return _trapezoid(xs, ys)

    def stats(self, name: str, t0_ns: int, t1_ns: int, key: str) -> Stats:
        """Time-weighted average and maximum of ``key`` over [t0_ns, t1_ns]."""
        if t1_ns < t0_ns:
            raise ValueError(f"stats span ends before it starts: {t0_ns} > {t1_ns}")
        times, vals = self._points(name, key, t0_ns, t1_ns)
        xs, ys, n = _window(times, vals, t0_ns, t1_ns)
        if t1_ns == t0_ns:
            avg = ys[0]
        else:
            avg = _trapezoid(xs, ys) * 1e9 / (t1_ns - t0_ns)
        return Stats(avg=avg, max=max(ys), n=n)

    def cumulative(self, name: str) -> tuple[int, float]:
        """``(t_ns, integral)``: the running integral of the source's ``accumulate``
        metric up to its last good sample (0.0 at the first). Non-decreasing for
        non-negative values; unaffected by the bounded history."""
        with self._lock:
            series = self._get(name)
            if series.acc_key is None:
                raise ValueError(f"sampler source {name!r} accumulates nothing")
            if series.acc_last is None:
                raise NoSamples(f"no {series.acc_key!r} samples from source {name!r}")
            return series.acc_last[0], series.acc_j
