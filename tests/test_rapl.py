"""The RAPL meter against fake powercap trees (and the real one where there is one).

Each fake tree mimics the kernel's layout: top-level zone dirs ``intel-rapl:N`` /
``intel-rapl-mmio:N`` with ``name``, ``energy_uj``, ``max_energy_range_uj`` and nested
subzones. Counters are changed by rewriting ``energy_uj`` in place (same inode), since
the meter keeps the file open and preads it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_llmlab.energy import rapl
from pytest_llmlab.energy.base import CounterSample, Meter, MeterUnavailable
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.energy.rapl import RaplMeter, poll_interval_for

#: A range large enough that the default poll interval clamps to its 5 s ceiling, so
#: the poller never runs during tests that did not ask for it.
BIG_RANGE = 262_143_328_850
#: Long enough that the poller never fires within a test that does not want it.
NO_POLL = 3600.0


def zone(
    parent: Path, entry: str, name: str, energy_uj: int = 0, range_uj: int = BIG_RANGE
) -> Path:
    """Write one zone dir (``parent/entry``) with its three files; return the dir."""
    directory = parent / entry
    directory.mkdir()
    (directory / "name").write_text(f"{name}\n")
    (directory / "energy_uj").write_text(f"{energy_uj}\n")
    (directory / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return directory


def set_energy(directory: Path, value: int | str) -> None:
    """Rewrite ``energy_uj`` in place: same inode, so the meter's open fd sees it."""
    with open(directory / "energy_uj", "r+", encoding="ascii") as f:
        f.seek(0)
        f.write(f"{value}\n")
        f.truncate()


def joules(samples: list[CounterSample]) -> dict[str, float]:
    return {s.domain: s.joules for s in samples}


def delta(before: list[CounterSample], after: list[CounterSample]) -> dict[str, float]:
    """Per-domain energy between two samples, rounded to whole microjoules."""
    a, b = joules(before), joules(after)
    return {d: round((b[d] - a[d]) * 1e6) / 1e6 for d in b}


@pytest.fixture
def threads_restored() -> Iterator[None]:
    """Every meter a test builds must leave no thread behind once closed."""
    start = threading.active_count()
    yield
    assert threading.active_count() == start


@pytest.fixture
def open_meter(threads_restored: None) -> Iterator[Callable[..., RaplMeter]]:
    """Build meters that are closed after the test even when it fails."""
    meters: list[RaplMeter] = []

    def make(root: Path, poll_interval_s: float | None = NO_POLL) -> RaplMeter:
        meter = RaplMeter(root, poll_interval_s=poll_interval_s)
        meters.append(meter)
        return meter

    yield make
    for meter in meters:
        meter.close()


def test_one_socket_package_only(tmp_path: Path, open_meter: Callable[..., RaplMeter]) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=5_000_000)
    meter = open_meter(tmp_path)
    checked: Meter = meter  # structurally a Meter
    assert checked.name == "rapl"
    first = meter.sample()
    assert [s.domain for s in first] == ["package-0"]
    assert first[0].joules == 5.0
    assert first[0].wrap_j == BIG_RANGE / 1e6
    assert first[0].provenance == "measured"
    set_energy(pkg, 7_500_000)
    second = meter.sample()
    assert delta(first, second) == {"package-0": 2.5}
    assert second[0].t_ns >= first[0].t_ns


def test_one_socket_with_dram(tmp_path: Path, open_meter: Callable[..., RaplMeter]) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000)
    dram = zone(pkg, "intel-rapl:0:0", "dram", energy_uj=300_000)
    meter = open_meter(tmp_path)
    first = meter.sample()
    assert joules(first) == {"package-0": 1.0, "dram-0": 0.3}
    set_energy(pkg, 4_000_000)
    set_energy(dram, 800_000)
    assert delta(first, meter.sample()) == {"package-0": 3.0, "dram-0": 0.5}


def test_two_sockets_with_dram_in_stable_order(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    # Created out of order: the sample order must not depend on listing order.
    pkg1 = zone(tmp_path, "intel-rapl:1", "package-1", energy_uj=20)
    dram1 = zone(pkg1, "intel-rapl:1:0", "dram", energy_uj=2)
    pkg0 = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=10)
    dram0 = zone(pkg0, "intel-rapl:0:0", "dram", energy_uj=1)
    meter = open_meter(tmp_path)
    first = meter.sample()
    assert [s.domain for s in first] == ["package-0", "dram-0", "package-1", "dram-1"]
    set_energy(pkg0, 1_000_010)
    set_energy(dram0, 250_001)
    set_energy(pkg1, 2_000_020)
    set_energy(dram1, 500_002)
    assert delta(first, meter.sample()) == {
        "package-0": 1.0,
        "dram-0": 0.25,
        "package-1": 2.0,
        "dram-1": 0.5,
    }


def test_psys_core_uncore_skipped(tmp_path: Path, open_meter: Callable[..., RaplMeter]) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=100)
    zone(pkg, "intel-rapl:0:0", "core", energy_uj=50)
    zone(pkg, "intel-rapl:0:1", "uncore", energy_uj=20)
    zone(pkg, "intel-rapl:0:2", "dram", energy_uj=30)
    zone(tmp_path, "intel-rapl:1", "psys", energy_uj=999)
    # The kernel also lists subzones flat at the root and the control type itself.
    (tmp_path / "intel-rapl").mkdir()
    (tmp_path / "intel-rapl:0:0").symlink_to(pkg / "intel-rapl:0:0")
    meter = open_meter(tmp_path)
    assert meter.domains == ["package-0", "dram-0"]
    assert joules(meter.sample()) == {"package-0": 100e-6, "dram-0": 30e-6}


def test_msr_mmio_duplicate_package_kept_once(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    msr = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", energy_uj=777_000)
    meter = open_meter(tmp_path)
    first = meter.sample()
    assert joules(first) == {"package-0": 0.001}  # the MSR zone's value
    set_energy(msr, 2_001_000)
    set_energy(mmio, 999_999_000)
    assert delta(first, meter.sample()) == {"package-0": 2.0}


def test_mmio_only_package_is_used(tmp_path: Path, open_meter: Callable[..., RaplMeter]) -> None:
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", energy_uj=4_000_000)
    zone(tmp_path, "intel-rapl:0", "psys", energy_uj=1)
    meter = open_meter(tmp_path)
    assert joules(meter.sample()) == {"package-0": 4.0}


def test_wrap_inside_window_via_sample(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=900, range_uj=1000)
    meter = open_meter(tmp_path)
    first = meter.sample()
    set_energy(pkg, 100)  # 900 -> 1000 (wrap) -> 100: 100 + 100 uJ
    second = meter.sample()
    assert delta(first, second) == {"package-0": 200e-6}
    assert second[0].joules == 1100e-6
    assert second[0].wrap_j == 1000e-6


def test_wrap_seen_by_polling_thread(tmp_path: Path, open_meter: Callable[..., RaplMeter]) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=900, range_uj=1000)
    meter = open_meter(tmp_path, poll_interval_s=0.005)
    first = meter.sample()
    set_energy(pkg, 50)  # wrapped: 100 + 50 uJ
    assert meter.wait_for_poll(timeout=5.0)
    set_energy(pkg, 120)  # 70 more, no wrap
    assert delta(first, meter.sample()) == {"package-0": 220e-6}


def test_two_wraps_between_samples_seen_by_poller(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=900, range_uj=1000)
    meter = open_meter(tmp_path, poll_interval_s=0.005)
    first = meter.sample()
    set_energy(pkg, 400)  # first wrap: 100 + 400 = 500 uJ
    assert meter.wait_for_poll(timeout=5.0)
    set_energy(pkg, 100)  # second wrap: 600 + 100 = 700 uJ
    assert meter.wait_for_poll(timeout=5.0)
    # Read directly (900 -> 100) this would look like a single wrap: 200 uJ.
    assert delta(first, meter.sample()) == {"package-0": 1200e-6}


def test_internal_poll_counts_wraps_like_sample(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=900, range_uj=1000)
    meter = open_meter(tmp_path)
    first = meter.sample()
    for value in (300, 950, 10, 990, 5):  # three wraps, each seen by a poll
        set_energy(pkg, value)
        meter._poll()
    # 100+300, 650, 50+10, 980, 10+5 = 2105 uJ = 3 * 1000 + 5 - 900
    assert delta(first, meter.sample()) == {"package-0": 2105e-6}


def test_default_poll_interval_is_a_safe_fraction_of_the_wrap(tmp_path: Path) -> None:
    # A zone that states no maximum power is assumed to draw 1000 W: 2^32 uJ then wraps
    # in 4.29 s, and four polls per wrap are 1.074 s apart.
    assert rapl.ASSUMED_MAX_WATTS == 1000.0
    assert poll_interval_for([2**32]) == pytest.approx(2**32 / 1e6 / 1000 / 4)
    # The fastest-wrapping counter decides.
    assert poll_interval_for([BIG_RANGE, 2**32]) == pytest.approx(2**32 / 1e6 / 1000 / 4)
    assert poll_interval_for([BIG_RANGE]) == 5.0
    assert poll_interval_for([1000]) == 0.05
    zone(tmp_path, "intel-rapl:0", "package-0", range_uj=2**32)
    with RaplMeter(tmp_path) as meter:
        assert meter.poll_interval_s == pytest.approx(2**32 / 1e6 / 1000 / 4)


def test_permission_denied_gives_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None
) -> None:
    # Tests run as root, where chmod 000 does not stop reads: refuse the open instead.
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1)
    denied = pkg / "energy_uj"
    real_open = os.open

    def fake_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(tmp_path)
    message = str(info.value)
    assert f"permission denied reading {denied}" in message
    assert (
        f"sudo chmod o+r {tmp_path}/intel-rapl:*/energy_uj {tmp_path}/intel-rapl:*/*/energy_uj"
        in message
    )
    assert (
        'ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
        'RUN+="/bin/chmod o+r /sys%p/energy_uj"' in message
    )


def test_permission_remedy_names_the_default_sysfs_paths() -> None:
    message = rapl._permission_message(
        Path("/sys/class/powercap/intel-rapl:0/energy_uj"),
        Path("/sys/class/powercap"),
        {"intel-rapl"},
    )
    assert (
        "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
        "/sys/class/powercap/intel-rapl:*/*/energy_uj" in message
    )


def test_unreadable_counter_names_the_file(tmp_path: Path, threads_restored: None) -> None:
    # A directory in place of the file: open succeeds, the read fails (EISDIR).
    pkg = zone(tmp_path, "intel-rapl:0", "package-0")
    (pkg / "energy_uj").unlink()
    (pkg / "energy_uj").mkdir()
    with pytest.raises(MeterUnavailable, match=r"cannot read .*intel-rapl:0/energy_uj"):
        RaplMeter(tmp_path)


def test_root_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(missing)
    assert str(info.value) == f"RAPL: {missing} not present (virtual machine or non-Linux?)"


def test_no_package_zone(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "psys")
    (tmp_path / "intel-rapl").mkdir()
    with pytest.raises(MeterUnavailable, match="no package zone") as info:
        RaplMeter(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("garbage", ["", "abc", "-5", "12 34", "1.5"])
def test_garbage_counter_names_the_file(
    tmp_path: Path, garbage: str, threads_restored: None
) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0")
    set_energy(pkg, garbage)
    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(tmp_path)
    assert f"RAPL: {pkg / 'energy_uj'} holds" in str(info.value)


def test_garbage_after_start_raises_from_sample(
    tmp_path: Path, open_meter: Callable[..., RaplMeter]
) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=5)
    meter = open_meter(tmp_path)
    set_energy(pkg, "oops")
    with pytest.raises(MeterUnavailable, match="energy_uj holds b'oops"):
        meter.sample()


@pytest.mark.parametrize("bad_range", ["0", "x"])
def test_bad_range_names_the_file(tmp_path: Path, bad_range: str, threads_restored: None) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0")
    (pkg / "max_energy_range_uj").write_text(bad_range)
    with pytest.raises(MeterUnavailable, match="max_energy_range_uj holds"):
        RaplMeter(tmp_path)


def test_failed_start_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None
) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0")
    bad = zone(tmp_path, "intel-rapl:1", "package-1")
    set_energy(bad, "junk")
    closed: list[int] = []
    real_close = os.close

    def spy_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    opened: list[int] = []
    real_open = os.open

    def spy_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "close", spy_close)
    with pytest.raises(MeterUnavailable):
        RaplMeter(tmp_path)
    assert sorted(opened) == sorted(closed)


def test_close_is_idempotent_and_stops_the_thread(tmp_path: Path, threads_restored: None) -> None:
    start = threading.active_count()
    zone(tmp_path, "intel-rapl:0", "package-0")
    meter = RaplMeter(tmp_path, poll_interval_s=0.005)
    assert threading.active_count() == start + 1
    assert meter.wait_for_poll(timeout=5.0)
    meter.close()
    assert threading.active_count() == start
    assert not meter._thread.is_alive()
    fds = [c.fd for c in meter._counters]
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed
    meter.close()
    assert threading.active_count() == start
    with pytest.raises(RuntimeError, match="closed"):
        meter.sample()
    assert meter.wait_for_poll(timeout=0.01) is False


def test_context_manager_closes(tmp_path: Path, threads_restored: None) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=3_000_000)
    with RaplMeter(tmp_path) as meter:
        assert joules(meter.sample()) == {"package-0": 3.0}
    assert not meter._thread.is_alive()
    with pytest.raises(RuntimeError):
        meter.sample()


def test_invalid_poll_interval(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0")
    with pytest.raises(ValueError, match="poll_interval_s"):
        RaplMeter(tmp_path, poll_interval_s=0)


def test_root_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None
) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=42_000_000)
    monkeypatch.setenv("LLMLAB_POWERCAP_ROOT", str(tmp_path))
    with RaplMeter() as meter:
        assert meter.root == tmp_path
        assert joules(meter.sample()) == {"package-0": 42.0}
    monkeypatch.setenv("LLMLAB_POWERCAP_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(MeterUnavailable, match="elsewhere not present"):
        RaplMeter()


def test_real_rapl_hardware(monkeypatch: pytest.MonkeyPatch, threads_restored: None) -> None:
    monkeypatch.delenv("LLMLAB_POWERCAP_ROOT", raising=False)
    try:
        meter = RaplMeter()
    except MeterUnavailable as exc:
        pytest.skip(str(exc))
    with meter:
        first = meter.sample()
        time.sleep(0.2)
        second = meter.sample()
    assert [s.domain for s in first] == [s.domain for s in second]
    assert any(s.domain.startswith("package-") for s in first)
    for a, b in zip(first, second, strict=True):
        assert b.joules >= a.joules
        watts = (b.joules - a.joules) / ((b.t_ns - a.t_ns) / 1e9)
        if a.domain.startswith("package-"):
            assert 0 < watts < 2000, (a.domain, watts)
        else:
            assert 0 <= watts < 2000, (a.domain, watts)


# -- wrap counting against an injected clock (no sleeps) ----------------------------

#: 262,143.5 J: two wraps plus 1 J are 524,288 J.
HALF_RANGE_UJ = 262_143_500_000
#: Intel's usual range (262,143.33 J): a 1 uJ step back read as a wrap is 262,143 J.
INTEL_RANGE_UJ = 262_143_328_850


class FakeClock:
    """``time.monotonic_ns`` stand-in: the tests move time by hand."""

    def __init__(self, t_ns: int = 1_000_000_000) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * 1e9)


def max_power(directory: Path, **constraints: int) -> None:
    """Write ``constraint_N_max_power_uw`` files: ``max_power(d, c0=..., c1=...)``."""
    for key, uw in constraints.items():
        (directory / f"constraint_{key[1:]}_max_power_uw").write_text(f"{uw}\n")


@pytest.fixture
def clocked_meter(threads_restored: None) -> Iterator[Callable[..., RaplMeter]]:
    """Meters on an injected clock whose poller thread never fires: the test reads."""
    meters: list[RaplMeter] = []

    def make(root: Path, clock: FakeClock) -> RaplMeter:
        meter = RaplMeter(root, poll_interval_s=NO_POLL, clock=clock)
        meters.append(meter)
        return meter

    yield make
    for meter in meters:
        meter.close()


def test_poll_interval_from_the_zones_max_power(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """The largest positive ``constraint_*_max_power_uw`` is the zone's maximum; a zone
    without one (the dram subzone here) is assumed to draw ASSUMED_MAX_WATTS."""
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", range_uj=2**32)
    max_power(pkg, c0=250_000_000, c1=2_000_000_000, c2=0)  # 250 W, 2000 W, unset
    (pkg / "constraint_3_max_power_uw").write_text("junk\n")  # ignored
    zone(pkg, "intel-rapl:0:0", "dram", range_uj=BIG_RANGE)
    meter = clocked_meter(tmp_path, FakeClock())
    required = meter.required_poll_interval_s
    # 2^32 uJ at 2000 W wrap in 2.147 s: four polls per wrap.
    assert required == pytest.approx(2**32 / 1e6 / 2000 / 4)
    assert 4 * required * 2000 <= 2**32 / 1e6 * (1 + 1e-12)
    assert poll_interval_for([2**32, BIG_RANGE], [2000.0, 1000.0]) == pytest.approx(required)
    with RaplMeter(tmp_path) as derived:  # no override: the derived interval is used
        assert derived.poll_interval_s == pytest.approx(required)


def test_stated_max_power_is_the_plausibility_limit(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """Only a zone that states its maximum bounds readings; the assumed 1000 W of one
    that does not is for poll timing, never a limit."""
    from pytest_llmlab.energy.meters import MeterSet

    pkg = zone(tmp_path, "intel-rapl:0", "package-0")
    max_power(pkg, c0=150_000_000, c1=200_000_000)  # PL1 150 W, PL2 200 W
    dram = zone(pkg, "intel-rapl:0:0", "dram")
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    assert meter.power_limits_w == {"package-0": 200.0}
    meters = MeterSet([meter], "rapl")
    window = meters.open()
    set_energy(pkg, 3 * 250_000_000)  # 250 W over 3 s
    set_energy(dram, 3 * 400_000_000)  # 400 W, but no stated limit
    clock.advance(3.0)
    reading = window.close()
    assert reading.low_confidence_reason == (
        "package-0: average power 250 W is above the device's 200 W limit"
    )


def test_two_wraps_between_reads_counted_by_polls_at_full_power(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """A 500 W zone at full power for two wraps and 1 J (1048.576 s), read at the
    meter's own poll interval (5 s): every wrap is seen, 524,288 J exactly."""
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", range_uj=HALF_RANGE_UJ)
    max_power(pkg, c0=500_000_000)
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    interval = meter.required_poll_interval_s
    assert interval == 5.0  # 524 s per wrap at 500 W: clamped to the 5 s ceiling
    first = meter.sample()
    energy_uj = 0
    total_uj = 2 * HALF_RANGE_UJ + 1_000_000
    while energy_uj < total_uj:
        step = min(round(interval * 500 * 1e6), total_uj - energy_uj)
        energy_uj += step
        clock.advance(step / 500 / 1e6)
        set_energy(pkg, energy_uj % HALF_RANGE_UJ)
        meter._poll()
    last = meter.sample()
    assert delta(first, last) == {"package-0": 524_288.0}
    assert last[0].wraps == 2
    assert [e.doubt for e in last[0].events] == [None, None]  # two clean wraps


def test_reads_further_apart_than_a_wrap_are_low_confidence(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """The poller stalled (a paused VM): 1048.576 s between two reads of a 500 W zone,
    two wrap periods. The counter moved 1 J; two wraps and 524,288 J are as possible
    as none. The reading keeps the 1 J it can see, invents no count, and says why it
    is low-confidence."""
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", range_uj=HALF_RANGE_UJ)
    max_power(pkg, c0=500_000_000)
    clock = FakeClock()
    meters = MeterSet([clocked_meter(tmp_path, clock)], "rapl")
    clock.advance(1.0)
    window = meters.open("stalled")
    clock.advance(1048.576)
    set_energy(pkg, 1_000_000)
    reading = window.close()
    assert reading.joules == pytest.approx(1.0)
    assert reading.low_confidence
    reason = reading.low_confidence_reason or ""
    assert "RAPL package-0: 1049 s between reads, longer than one wrap period" in reason
    assert "(524.3 s at 500 W)" in reason and "counted 0" in reason
    (event,) = reading.windows[0]["events"]
    assert event["doubt"] == reason
    assert (event["t1_ns"] - event["t0_ns"], event["wraps"]) == (1_048_576_000_000, 0)
    # A window after the stall is trusted again.
    clock.advance(2.0)
    later = meters.open("after")
    clock.advance(2.0)
    set_energy(pkg, 2_000_000)
    after = later.close()
    assert after.joules == pytest.approx(1.0)
    assert not after.low_confidence and after.windows[0]["events"] == []


def test_one_microjoule_back_is_noise_not_a_wrap(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """A counter stepping back 1 uJ is read noise: 0 J, not a phantom 262,143 J wrap;
    the counter holds its value and counts on from there."""
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000, range_uj=INTEL_RANGE_UJ)
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    first = meter.sample()
    clock.advance(0.001)
    set_energy(pkg, 4_999_999)
    glitch = meter.sample()
    assert delta(first, glitch) == {"package-0": 0.0}
    assert glitch[0].wraps == 0 and glitch[0].events == ()
    clock.advance(0.001)
    set_energy(pkg, 5_000_005)
    assert delta(first, meter.sample()) == {"package-0": 5e-6}


def test_noise_threshold_is_one_percent_of_the_range(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """A 1 J range (1000 W zone: one wrap per ms): back 9,999 uJ (under 1%) is noise;
    back 10,000 uJ is a wrap (990,000 uJ in 1 ms: 990 W, possible)."""
    assert rapl.NOISE_FRACTION == 0.01
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 500_000, range_uj=1_000_000)
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    first = meter.sample()
    clock.advance(0.0001)
    set_energy(pkg, 490_001)
    assert delta(first, meter.sample()) == {"package-0": 0.0}
    clock.advance(0.001)
    set_energy(pkg, 490_000)
    wrapped = meter.sample()
    assert delta(first, wrapped) == {"package-0": 0.99}
    (event,) = wrapped[0].events
    assert (event.wraps, event.doubt, event.j0, event.j1) == (1, None, 0.5, 1.49)


def test_impossible_step_back_is_one_wrap_flagged(
    tmp_path: Path, clocked_meter: Callable[..., RaplMeter]
) -> None:
    """Back by 100 kJ in 1 s: as a wrap that is 162 kW, beyond 4 x the zone's 1000 W.
    Counted as the one wrap the register's rules say, and flagged."""
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 200_000_000_000, range_uj=INTEL_RANGE_UJ)
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    first = meter.sample()
    clock.advance(1.0)
    set_energy(pkg, 100_000_000_000)
    second = meter.sample()
    assert delta(first, second) == {"package-0": 162_143.32885}
    (event,) = second[0].events
    assert event.wraps == 1
    assert event.doubt == (
        "RAPL package-0: counter stepped back 100000000000 uJ in 1 s; as a wrap that is "
        "1.621e+05 W, beyond 4 x the zone's 1000 W; counted 1 wrap"
    )


def test_event_log_is_bounded(tmp_path: Path, clocked_meter: Callable[..., RaplMeter]) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0, range_uj=1_000_000)
    clock = FakeClock()
    meter = clocked_meter(tmp_path, clock)
    for i in range(1, 2500):
        clock.advance(0.0005)
        set_energy(pkg, 600_000 if i % 2 else 100_000)  # a wrap every other read
        meter.sample()
    events = meter.sample()[0].events
    assert len(events) == rapl._MAX_EVENTS
    assert events[-1].wraps == 1249
