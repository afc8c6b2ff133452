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
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .base import CounterSample, MeterUnavailable

__all__ = [
    "ASSUMED_MAX_WATTS",
    "DEFAULT_ROOT",
    "ROOT_ENV",
    "RaplMeter",
    "poll_interval_for",
]

#: Where the kernel exposes powercap zones.
DEFAULT_ROOT = "/sys/class/powercap"
#: Environment variable that points the meter at another tree (tests, containers).
ROOT_ENV = "LLMLAB_POWERCAP_ROOT"
#: Highest power one zone is assumed to draw; sets the fastest possible wrap.
ASSUMED_MAX_WATTS = 500.0
#: Poll this fraction of the fastest wrap period: several polls per period, so a late
#: or descheduled poll still lands before a second wrap.
_POLL_SAFETY_FRACTION = 0.25
_MIN_POLL_S = 0.05
_MAX_POLL_S = 5.0
#: sysfs values are short decimal strings; 64 bytes hold any 64-bit counter.
_READ_SIZE = 64

_MSR_PREFIX = "intel-rapl"
_MMIO_PREFIX = "intel-rapl-mmio"
#: Lower rank wins when one package appears under both interfaces.
_INTERFACE_RANK = {_MSR_PREFIX: 0, _MMIO_PREFIX: 1}
_TOP_ZONE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)$")
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
    last_raw: int = 0
    wraps: int = 0


def poll_interval_for(ranges_uj: list[int]) -> float:
    """Seconds between polls: a safe fraction of the fastest possible wrap of any of
    the counters at :data:`ASSUMED_MAX_WATTS`, clamped to [0.05 s, 5 s]."""
    fastest_wrap_s = min(r / 1e6 for r in ranges_uj) / ASSUMED_MAX_WATTS
    return min(_MAX_POLL_S, max(_MIN_POLL_S, fastest_wrap_s * _POLL_SAFETY_FRACTION))


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


def _unwrap(counter: _Counter, raw: int) -> int:
    """Fold a fresh raw reading into ``counter`` and return the unwrapped value in uJ.

    A reading below the previous one means the register passed ``range_uj`` and
    restarted: one wrap. This is exact as long as reads come at least once per wrap
    period, which the poller guarantees. Call with the meter's lock held.
    """
    if raw < counter.last_raw:
        counter.wraps += 1
    counter.last_raw = raw
    return counter.wraps * counter.range_uj + raw


class RaplMeter:
    """Package and DRAM energy per socket from powercap sysfs (the ``Meter`` protocol).

    Raises :class:`MeterUnavailable` when there is no powercap tree, no package zone,
    or a counter cannot be read (the message gives the chmod/udev remedy). ``close()``
    (or leaving the ``with`` block) stops the poller thread and closes the files.
    """

    name: str = "rapl"

    def __init__(self, root: str | Path | None = None, poll_interval_s: float | None = None):
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
        self._counters = self._open_all(specs)
        self.poll_interval_s = (
            poll_interval_s
            if poll_interval_s is not None
            else poll_interval_for([c.range_uj for c in self._counters])
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
                counter = _Counter(
                    spec.domain, path, _open_counter(path, self.root, prefixes), range_uj
                )
                counters.append(counter)
                counter.last_raw = _pread_uj(counter.fd, path)
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
        for counter in self._counters:
            raw = _pread_uj(counter.fd, counter.path)
            t_ns = time.monotonic_ns()
            total_uj = _unwrap(counter, raw)
            # Positional: this runs per domain at every window edge (the 100 us target).
            samples.append(
                CounterSample(counter.domain, total_uj / 1e6, t_ns, counter.range_uj / 1e6)
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
