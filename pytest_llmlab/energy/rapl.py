"""RAPL energy counters read straight from Linux powercap sysfs.

Zones live under ``/sys/class/powercap`` (or ``$LLMLAB_POWERCAP_ROOT``): top-level
``intel-rapl:N`` (MSR interface; AMD uses the same name) and ``intel-rapl-mmio:N``
(MMIO interface), each with ``name``, ``energy_uj`` and ``max_energy_range_uj`` and
subzones ``intel-rapl:N:M`` (``dram``, ``core``, ``uncore``). We keep package zones and
their ``dram`` subzone: ``psys`` covers the whole platform (it would double-count the
packages) and ``core``/``uncore`` are parts of the package already. A package exposed
by both interfaces is kept once, from MSR.

``energy_uj`` wraps at ``max_energy_range_uj``. A daemon thread reads every counter
often enough that it cannot wrap twice unseen, and ``sample()`` runs the same update, so
each process holds a monotonic unwrapped counter (raw + wraps x range).

How often: a zone's fastest wrap is its range at its maximum power, the largest
positive ``constraint_*_max_power_uw`` of the zone, or :data:`ASSUMED_MAX_WATTS` where
it states none (DRAM zones usually, AMD often). The poller reads :data:`POLLS_PER_WRAP`
times per fastest wrap of any zone (clamped to [0.05 s, 5 s]), so a late poll, or power
up to that many times the stated maximum, still sees every wrap.

What a read means, against the previous read of the same counter (``dt`` apart):

- forward: energy, no wrap;
- backward by less than :data:`NOISE_FRACTION` of the range: read noise (held at the
  previous value, so the counter never goes back), not a wrap: a wrap would mean 99% of
  a range since the last read, which no zone draws between reads taken on schedule;
- backward by more: one wrap. Where that wrap means more than ``POLLS_PER_WRAP`` times
  the zone's maximum power, it is counted and flagged (an impossible step);
- ``dt`` longer than one wrap period at the maximum power (a stalled thread, a paused
  VM): the wraps in between cannot be counted uniquely. The read is counted as above
  (never an invented wrap count) and flagged.

Each counted wrap and each flag becomes a `CounterEvent` in the samples' log: windows
carry the events inside them, so a flagged read makes the reading low-confidence, and
attribution can place this process's counter against another's exactly.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from .base import CounterEvent, CounterSample, MeterUnavailable

__all__ = [
    "ASSUMED_MAX_WATTS",
    "DEFAULT_ROOT",
    "NOISE_FRACTION",
    "POLLS_PER_WRAP",
    "ROOT_ENV",
    "RaplMeter",
    "poll_interval_for",
]

#: Where the kernel exposes powercap zones.
DEFAULT_ROOT = "/sys/class/powercap"
#: Environment variable that points the meter at another tree (tests, containers).
ROOT_ENV = "LLMLAB_POWERCAP_ROOT"
#: Highest power a zone is assumed to draw where it states no maximum (no positive
#: ``constraint_*_max_power_uw``): twice the 500 W TDP of the largest server packages
#: sold, so the fastest wrap it implies errs on the short side.
ASSUMED_MAX_WATTS = 1000.0
#: Polls per wrap period at the zone's maximum power: several, so a late or
#: descheduled poll still lands before a second wrap.
POLLS_PER_WRAP = 4
#: A backward step below this fraction of the range is read noise, not a wrap.
NOISE_FRACTION = 0.01
#: Events a counter's log keeps (oldest dropped): a wrap takes minutes on real zones.
_MAX_EVENTS = 1024
_MIN_POLL_S = 0.05
_MAX_POLL_S = 5.0
#: sysfs values are short decimal strings; 64 bytes hold any 64-bit counter.
_READ_SIZE = 64

_MSR_PREFIX = "intel-rapl"
_MMIO_PREFIX = "intel-rapl-mmio"
#: Lower rank wins when one package appears under both interfaces.
_INTERFACE_RANK = {_MSR_PREFIX: 0, _MMIO_PREFIX: 1}
_TOP_ZONE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)$")
_MAX_POWER = re.compile(r"^constraint_\d+_max_power_uw$")
_PACKAGE = "package-"


@dataclass(frozen=True, slots=True)
class _ZoneSpec:
    """A kept zone found on disk, before any counter file is opened."""

    domain: str  # "package-0", "dram-0"
    directory: Path
    prefix: str  # interface it came from, for the permission remedy


@dataclass(slots=True)
class _Counter:
    """One open counter and its unwrap state (guarded by the meter's lock)."""

    domain: str
    path: Path  # the energy_uj file, for error messages
    fd: int
    range_uj: int
    max_power_w: float
    #: Whether the zone states its maximum (else max_power_w is ASSUMED_MAX_WATTS).
    max_power_stated: bool = True
    last_raw: int = 0  # the highest raw value since the last wrap (noise is held)
    last_t_ns: int = 0
    wraps: int = 0
    events: tuple[CounterEvent, ...] = ()
    period_ns: float = field(init=False)  # one wrap at full power (uJ / W = us)
    noise_uj: float = field(init=False)  # backward steps below this are noise

    def __post_init__(self) -> None:
        self.period_ns = self.range_uj * 1000 / self.max_power_w
        self.noise_uj = self.range_uj * NOISE_FRACTION


def poll_interval_for(ranges_uj: Sequence[int], max_watts: Sequence[float] | None = None) -> float:
    """Seconds between polls: :data:`POLLS_PER_WRAP` polls per fastest wrap of any of
    the counters (its range at its maximum power, :data:`ASSUMED_MAX_WATTS` where
    ``max_watts`` is not given), clamped to [0.05 s, 5 s]."""
    watts = max_watts if max_watts is not None else [ASSUMED_MAX_WATTS] * len(ranges_uj)
    fastest_wrap_s = min(r / 1e6 / w for r, w in zip(ranges_uj, watts, strict=True))
    return min(_MAX_POLL_S, max(_MIN_POLL_S, fastest_wrap_s / POLLS_PER_WRAP))


def _max_power_w(directory: Path) -> float:
    """A zone's maximum power: its largest positive ``constraint_*_max_power_uw``, or
    :data:`ASSUMED_MAX_WATTS` where it has none (unreadable or garbage files ignored)."""
    stated = _stated_max_power_w(directory)
    return stated if stated is not None else ASSUMED_MAX_WATTS


def _stated_max_power_w(directory: Path) -> float | None:
    """A zone's largest positive ``constraint_*_max_power_uw`` in W, or None."""
    best = 0
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        if _MAX_POWER.match(name):
            try:
                text = (directory / name).read_bytes().strip()
            except OSError:
                continue
            if text.isdigit():
                best = max(best, int(text))
    return best / 1e6 if best > 0 else None


def _default_root() -> Path:
    """``$LLMLAB_POWERCAP_ROOT`` when set and non-empty, else the kernel's tree."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def _read_name(directory: Path) -> str | None:
    """A zone's ``name``, or None when it has none (then it is not a RAPL zone)."""
    try:
        return (directory / "name").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _domain_sort_key(domain: str) -> tuple[tuple[int, ...], int]:
    """package-0, dram-0, package-1, dram-1 (numbers compare as numbers: 10 after 9)."""
    kind, _, suffix = domain.partition("-")
    return tuple(int(n) for n in re.findall(r"\d+", suffix)), 0 if kind == "package" else 1


def _discover(root: Path) -> list[_ZoneSpec]:
    """Package zones and their dram subzones under ``root``, deduplicated, ordered."""
    kept: dict[str, tuple[tuple[int, int], _ZoneSpec]] = {}

    def keep(spec: _ZoneSpec, rank: tuple[int, int]) -> None:
        # The same package under MSR and MMIO counts the same joules: keep one.
        if spec.domain not in kept or rank < kept[spec.domain][0]:
            kept[spec.domain] = (rank, spec)

    for entry in sorted(os.listdir(root)):
        match = _TOP_ZONE.match(entry)
        directory = root / entry
        if match is None or not directory.is_dir():
            continue  # control-type dirs ("intel-rapl"), flat subzone links, others
        name = _read_name(directory)
        if name is None or not name.startswith(_PACKAGE):
            continue  # psys: the whole platform, includes the packages
        prefix, index = match.group(1), int(match.group(2))
        rank = (_INTERFACE_RANK[prefix], index)
        keep(_ZoneSpec(name, directory, prefix), rank)
        socket = name[len(_PACKAGE) :]
        for sub in sorted(directory.glob(f"{entry}:*")):
            # core/uncore are inside the package figure already; only dram is extra.
            if sub.is_dir() and _read_name(sub) == "dram":
                keep(_ZoneSpec(f"dram-{socket}", sub, prefix), rank)
    return sorted((spec for _, spec in kept.values()), key=lambda s: _domain_sort_key(s.domain))


def _permission_message(path: Path, root: Path, prefixes: set[str]) -> str:
    """Why an energy_uj file cannot be read, and the two ways to allow it."""
    globs = " ".join(f"{root}/{p}:*/energy_uj {root}/{p}:*/*/energy_uj" for p in sorted(prefixes))
    rules = "\n".join(
        f'  ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="{p}:*", '
        'RUN+="/bin/chmod o+r /sys%p/energy_uj"'
        for p in sorted(prefixes)
    )
    return (
        f"RAPL: permission denied reading {path} (energy_uj is readable by root only "
        "since the 2020 PLATYPUS side-channel fix, CVE-2020-8694).\n"
        f"For this boot:\n  sudo chmod o+r {globs}\n"
        "For good, a udev rule, e.g. /etc/udev/rules.d/99-llmlab-rapl.rules:\n"
        f"{rules}\n"
        "(This lets every local user read the energy counters; on a shared machine grant "
        "a group instead.)"
    )


def _parse_uj(data: bytes, path: Path) -> int:
    """A counter file's content as a non-negative integer, or MeterUnavailable."""
    text = data.strip()
    # bytes.isdigit is ASCII-only: no sign, no spaces, no Unicode digits.
    if not text.isdigit():
        raise MeterUnavailable(f"RAPL: {path} holds {data[:32]!r}, not a counter in uJ")
    return int(text)


def _open_counter(path: Path, root: Path, prefixes: set[str]) -> int:
    """Open a counter file once; every later read is a pread at offset 0."""
    try:
        return os.open(path, os.O_RDONLY)
    except PermissionError as exc:
        raise MeterUnavailable(_permission_message(path, root, prefixes)) from exc
    except OSError as exc:
        raise MeterUnavailable(f"RAPL: cannot open {path}: {exc.strerror}") from exc


def _pread_uj(fd: int, path: Path) -> int:
    """Read a counter through its open fd (sysfs rereads must start at offset 0)."""
    try:
        data = os.pread(fd, _READ_SIZE, 0)
    except OSError as exc:
        raise MeterUnavailable(f"RAPL: cannot read {path}: {exc.strerror}") from exc
    return _parse_uj(data, path)


def _read_range(directory: Path, root: Path, prefixes: set[str]) -> int:
    """A zone's ``max_energy_range_uj``, read once: it is constant for the boot."""
    path = directory / "max_energy_range_uj"
    fd = _open_counter(path, root, prefixes)
    try:
        value = _pread_uj(fd, path)
    finally:
        os.close(fd)
    if value <= 0:
        # A zero range would make every read look like a wrap.
        raise MeterUnavailable(f"RAPL: {path} holds {value}, not a positive range in uJ")
    return value


def _unwrap(counter: _Counter, raw: int, t_ns: int) -> int:
    """Fold a fresh raw reading taken at ``t_ns`` into ``counter`` and return the
    unwrapped value in uJ (the rules are in the module's docstring).

    Exact as long as reads come at least once per wrap period, which the poller
    guarantees; a read that breaks that, or an impossible step, is logged as a doubt.
    Call with the meter's lock held.
    """
    last = counter.last_raw
    dt_ns = t_ns - counter.last_t_ns
    counter.last_t_ns = t_ns
    if raw >= last:
        counter.last_raw = raw
        if dt_ns <= counter.period_ns:
            return counter.wraps * counter.range_uj + raw  # the common case: no event
        _log(counter, last, dt_ns, wrapped=False, impossible_w=None)
        return counter.wraps * counter.range_uj + raw
    if last - raw < counter.noise_uj:
        # Noise: hold the previous value, so the counter never goes backwards.
        if dt_ns > counter.period_ns:
            _log(counter, last, dt_ns, wrapped=False, impossible_w=None)
        return counter.wraps * counter.range_uj + last
    counter.wraps += 1
    counter.last_raw = raw
    watts = (raw + counter.range_uj - last) * 1e3 / dt_ns if dt_ns > 0 else math.inf
    impossible = watts if watts > POLLS_PER_WRAP * counter.max_power_w else None
    _log(counter, last, dt_ns, wrapped=True, impossible_w=impossible)
    return counter.wraps * counter.range_uj + raw


def _log(
    counter: _Counter, last: int, dt_ns: int, *, wrapped: bool, impossible_w: float | None
) -> None:
    """Append the event of the read just folded into ``counter`` (previous raw value
    ``last``, ``dt_ns`` after the previous read): a wrap, a doubt, or both."""
    doubt = None
    if dt_ns > counter.period_ns:
        doubt = (
            f"RAPL {counter.domain}: {dt_ns / 1e9:.4g} s between reads, longer than one "
            f"wrap period ({counter.period_ns / 1e9:.4g} s at {counter.max_power_w:g} W): "
            f"wraps in between cannot be counted; counted {int(wrapped)}"
        )
    elif impossible_w is not None:
        doubt = (
            f"RAPL {counter.domain}: counter stepped back {last - counter.last_raw} uJ in "
            f"{dt_ns / 1e9:.4g} s; as a wrap that is {impossible_w:.4g} W, beyond "
            f"{POLLS_PER_WRAP} x the zone's {counter.max_power_w:g} W; counted 1 wrap"
        )
    range_uj = counter.range_uj
    before = (counter.wraps - wrapped) * range_uj + last
    after = counter.wraps * range_uj + counter.last_raw
    event = CounterEvent(
        counter.last_t_ns - dt_ns,
        before / 1e6,
        counter.last_t_ns,
        after / 1e6,
        counter.wraps,
        doubt,
    )
    counter.events = (*counter.events[-(_MAX_EVENTS - 1) :], event)


class RaplMeter:
    """Package and DRAM energy per socket from powercap sysfs (the ``Meter`` protocol).

    Raises :class:`MeterUnavailable` when there is no powercap tree, no package zone,
    or a counter cannot be read (the message gives the chmod/udev remedy). ``close()``
    (or leaving the ``with`` block) stops the poller thread and closes the files.
    """

    name: str = "rapl"

    def __init__(
        self,
        root: str | Path | None = None,
        poll_interval_s: float | None = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
    ):
        """``poll_interval_s`` overrides the derived interval; ``clock`` (ns, default
        ``time.monotonic_ns``) stamps every read (tests inject one)."""
        self.root = Path(root) if root is not None else _default_root()
        if poll_interval_s is not None and not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s!r}")
        if not self.root.is_dir():
            raise MeterUnavailable(f"RAPL: {self.root} not present (virtual machine or non-Linux?)")
        specs = _discover(self.root)
        if not any(s.domain.startswith(_PACKAGE) for s in specs):
            raise MeterUnavailable(
                f"RAPL: no package zone (intel-rapl:N or intel-rapl-mmio:N named "
                f"package-N) under {self.root}"
            )
        self._lock = threading.Lock()
        # Signalled after each poller pass, so callers can wait for a fresh pass.
        self._polled = threading.Condition(self._lock)
        self._poll_count = 0
        self._closed = False
        self._stop = threading.Event()
        self._clock = clock
        self._counters = self._open_all(specs)
        #: What POLLS_PER_WRAP polls per fastest wrap need; used unless overridden.
        self.required_poll_interval_s = poll_interval_for(
            [c.range_uj for c in self._counters], [c.max_power_w for c in self._counters]
        )
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else self.required_poll_interval_s
        )
        self._thread = threading.Thread(target=self._run, name="llmlab-rapl-poller", daemon=True)
        self._thread.start()

    def _open_all(self, specs: list[_ZoneSpec]) -> list[_Counter]:
        """Open every kept counter and take the baseline reading; on any failure close
        what was opened, so a meter that could not start leaks nothing."""
        prefixes = {s.prefix for s in specs}
        counters: list[_Counter] = []
        try:
            for spec in specs:
                range_uj = _read_range(spec.directory, self.root, prefixes)
                path = spec.directory / "energy_uj"
                fd = _open_counter(path, self.root, prefixes)
                stated = _stated_max_power_w(spec.directory)
                counter = _Counter(
                    spec.domain,
                    path,
                    fd,
                    range_uj,
                    stated if stated is not None else ASSUMED_MAX_WATTS,
                    max_power_stated=stated is not None,
                )
                counters.append(counter)
                counter.last_raw = _pread_uj(counter.fd, path)
                counter.last_t_ns = self._clock()
        except BaseException:
            for counter in counters:
                os.close(counter.fd)
            raise
        return counters

    @property
    def domains(self) -> list[str]:
        """The kept domains, in sample order."""
        return [c.domain for c in self._counters]

    @property
    def power_limits_w(self) -> dict[str, float]:
        """Each domain's stated maximum power (largest ``constraint_*_max_power_uw``)
        in W, where the zone states one: a window's average above it is implausible."""
        return {c.domain: c.max_power_w for c in self._counters if c.max_power_stated}

    @property
    def description(self) -> str:
        """One line for the terminal: what is read, from where, how often polled."""
        return (
            f"{', '.join(self.domains)} from {self.root} "
            f"(wraps tracked every {self.poll_interval_s:g} s)"
        )

    def _read_all_locked(self) -> list[CounterSample]:
        """Read and unwrap every counter; the one path shared by sample() and the
        poller, so wraps are counted once whichever read sees them. Lock held: reads
        must be ordered with their unwrap updates or a stale pre-wrap read could land
        after a post-wrap one and count a second, phantom wrap."""
        samples = []
        clock = self._clock
        for counter in self._counters:
            raw = _pread_uj(counter.fd, counter.path)
            t_ns = clock()
            total_uj = _unwrap(counter, raw, t_ns)
            # Positional: this runs per domain at every window edge (the 100 us target).
            samples.append(
                CounterSample(
                    counter.domain,
                    total_uj / 1e6,
                    t_ns,
                    counter.range_uj / 1e6,
                    "measured",
                    counter.wraps,
                    counter.events,
                )
            )
        return samples

    def sample(self) -> list[CounterSample]:
        """Every kept domain's unwrapped counter now: package-0, dram-0, package-1..."""
        with self._lock:
            if self._closed:
                raise RuntimeError("RaplMeter is closed")
            return self._read_all_locked()

    def _poll(self) -> None:
        """One poller pass: read every counter so no wrap goes unseen."""
        with self._lock:
            if self._closed:
                return
            self._read_all_locked()
            self._poll_count += 1
            self._polled.notify_all()

    def _run(self) -> None:
        """Poller thread body: poll every interval until close()."""
        while not self._stop.wait(self.poll_interval_s):
            try:
                self._poll()
            except MeterUnavailable:
                # Transient (or lasting) read trouble: the next sample() raises it to
                # the caller; an exception escaping a thread would only be a warning.
                continue

    def wait_for_poll(self, timeout: float) -> bool:
        """Block until the poller completes a pass that started after this call
        (for tests and diagnostics). False on timeout or when closed."""
        with self._polled:
            # A pass holds the lock from its first read to its count update, so no pass
            # is mid-read now: the next one to finish read the counters after we got here.
            target = self._poll_count + 1
            return (
                self._polled.wait_for(lambda: self._poll_count >= target or self._closed, timeout)
                and not self._closed
            )

    def close(self) -> None:
        """Stop the poller and close the counter files. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for counter in self._counters:
                os.close(counter.fd)
            self._polled.notify_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RaplMeter(root={str(self.root)!r}, domains={self.domains!r})"
