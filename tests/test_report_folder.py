"""The report folder under faults: one session at a time, never two runs mixed,
SIGTERM handled like Ctrl-C, unusable folders rejected at configure in one line.

Every test runs real pytest subprocesses on the embedded model (signals and locks are
per process), with every wait bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PARIS = "What is the capital of France? Answer in one word."


def _records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.05)


@contextmanager
def _holding_session(pytester: pytest.Pytester, *, llm: bool) -> Iterator[subprocess.Popen[bytes]]:
    """A pytest session whose one test (an LLM test, or a plain one) runs until the
    block ends; the block starts once that test is running."""
    flag, release = pytester.path / "holding", pytester.path / "release"
    pytester.makepyfile(
        test_hold=f"""
        import pathlib, time

        def test_hold({"llm_spec" if llm else ""}):
            pathlib.Path({str(flag)!r}).touch()
            deadline = time.monotonic() + 60
            while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        """
    )
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_hold.py"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(flag)
        yield session
    finally:
        release.touch()
        session.wait(timeout=60)


def test_second_session_on_the_same_folder_fails_at_configure(pytester: pytest.Pytester) -> None:
    with _holding_session(pytester, llm=True) as first:
        second = pytester.runpytest_subprocess("test_hold.py")
    assert first.returncode == 0
    assert second.ret == pytest.ExitCode.USAGE_ERROR
    message = [line for line in second.errlines if "pytest-llmlab" in line]
    assert len(message) == 1, second.errlines
    assert str(pytester.path / "reports") in message[0]
    assert f"pid {first.pid}" in message[0]
    assert not (pytester.path / "reports").exists()  # neither session recorded anything


def test_a_session_without_llm_tests_does_not_hold_the_folder(pytester: pytest.Pytester) -> None:
    """Plain unit tests running beside an LLM session never block it."""
    with _holding_session(pytester, llm=False) as first:
        pytester.makepyfile(test_llm="def test_llm(llm_spec):\n    assert llm_spec\n")
        second = pytester.runpytest_subprocess("test_llm.py")
    assert (first.returncode, second.ret) == (0, pytest.ExitCode.OK)


def test_sessions_on_different_folders_run_side_by_side(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--llm-report-dir=r{i}"],
            cwd=pytester.path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]


def test_a_killed_run_never_leaves_files_of_two_runs(pytester: pytest.Pytester) -> None:
    """Run 1 completes; run 2 is killed (-9) after its first record: the folder holds
    only run 2's results.jsonl (the previous run's files moved into previous/), and
    ``llmlab report`` rebuilds CSV and HTML from it."""
    pytester.makepyfile(
        test_run=f"""
        import os, signal

        def test_first(llm):
            llm.generate({PARIS!r}, max_tokens=8)

        def test_second(llm):
            llm.generate("Say hi.", max_tokens=4)
            if os.environ.get("KILL_ME"):
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert pytester.runpytest_subprocess("--llm-baseline-s=0").ret == 0
    reports = pytester.path / "reports"
    (first_run,) = {r["run_id"] for r in _records(reports)}
    env = {**os.environ, "KILL_ME": "1"}
    killed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--llm-baseline-s=0"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    # A killed run's spool stays (its generations, for --llm-resume): hidden.
    current = sorted(p.name for p in reports.iterdir() if not p.name.startswith("."))
    assert current == ["previous", "results.jsonl"], current
    (second_run,) = {r["run_id"] for r in _records(reports)}
    assert second_run != first_run
    assert [r["test_id"].split("::")[1] for r in _records(reports)] == [
        "test_first[local:smollm2-135m-T0]"
    ]
    previous = reports / "previous"
    assert sorted(p.name for p in previous.iterdir()) == [
        "generations.jsonl",
        "report.html",
        "results.csv",
        "results.jsonl",
    ]
    assert {r["run_id"] for r in _records(previous)} == {first_run}
    assert first_run in (previous / "results.csv").read_text(encoding="utf-8")
    assert first_run in (previous / "report.html").read_text(encoding="utf-8")
    cli = Path(sys.executable).with_name("llmlab")
    rebuilt = subprocess.run(
        [str(cli), "report", str(reports / "results.jsonl"), "-o", str(reports / "report.html"),
         "--csv", str(reports / "results.csv")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert second_run in (reports / "results.csv").read_text(encoding="utf-8")
    assert "test_first" in (reports / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_sigterm_is_handled_like_ctrl_c(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    """SIGTERM to the session (sent from inside a test: to itself, or under xdist to
    the controller) stops it like Ctrl-C: non-zero exit, every report written."""
    pytester.makepyfile(
        test_term=f"""
        import os, signal, time

        def test_first(llm):
            assert "Paris" in llm.generate({PARIS!r}, max_tokens=16).text

        def test_terminated():
            target = os.getppid() if os.environ["TERM_TARGET"] == "parent" else os.getpid()
            os.kill(target, signal.SIGTERM)
            time.sleep(120)
        """
    )
    # Under xdist the test runs in a worker: the session to stop is its parent.
    monkeypatch.setenv("TERM_TARGET", "parent" if workers else "self")
    started = time.monotonic()
    args = ["--llm-baseline-s=0", "-p", "no:randomly", *workers]
    if workers:
        args += ["--dist", "loadfile"]  # both tests on one worker, in order
    result = pytester.runpytest_subprocess(*args, timeout=240)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert time.monotonic() - started < 110, output  # the 120 s sleep was cut short
    reports = pytester.path / "reports"
    assert [r["test_id"].split("::")[1] for r in _records(reports)] == [
        "test_first[local:smollm2-135m-T0]"
    ]
    assert len((reports / "results.csv").read_text(encoding="utf-8").splitlines()) == 2
    assert "test_first" in (reports / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("file", "is a file, not a folder"),
        ("under-a-file", "cannot write there"),
        ("proc", "cannot write there"),
    ],
)
def test_unusable_report_folder_is_a_one_line_usage_error(
    pytester: pytest.Pytester, make: str, expected: str
) -> None:
    """A report path that is a file, lies under a file, or is on a read-only file
    system (``/proc``, read-only even for root) is rejected before any test runs."""
    (pytester.path / "taken").write_text("not a folder")
    target = {
        "file": pytester.path / "taken",
        "under-a-file": pytester.path / "taken" / "reports",
        "proc": Path("/proc/pytest-llmlab-reports"),
    }[make]
    if make == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc file system here")
    pytester.makepyfile(test_x="def test_x(llm):\n    pass\n")
    result = pytester.runpytest_subprocess(f"--llm-report-dir={target}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.errlines if line.strip()]
    assert len(lines) == 1, lines
    assert str(target) in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr.str()
