"""The report folder: held by one session at a time, never holding two runs' files.

A session locks its folder for its whole life (``fcntl.flock`` on a lock file keyed by
the folder's real path, in a per-user temporary folder, recording the holder's pid), so a second session on the same folder (two CI jobs on
one runner, a re-run while CI runs) fails at configure with one line naming the folder
and the other session's pid, instead of both writing into one ``results.jsonl``. A
folder that cannot be created or written is the same kind of one-line usage error.

When a run writes its first record, the previous run's files (results.jsonl,
results.csv, report.html, and what a killed run left) move into ``previous/``, so the
folder never mixes the files of two runs even after ``kill -9``; every record carries
its run's id. xdist workers spool each finished generation to
``.spool/<run id>/<worker>.jsonl`` (flushed per line; a dead worker loses none) so the controller can recover the
completed generations of a test whose worker died.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

from pytest_llmlab.errors import ReportFolderError

__all__ = [
    "GENERATIONS_NAME",
    "RUN_FILES",
    "ReportFolder",
    "ReportFolderError",
    "copy_generations",
    "generations_log_path",
    "merge_earlier_generations",
    "merge_run_generations",
    "new_run_id",
    "spool_path",
]

#: The files one run writes into the folder (moved aside when the next run starts).
RUN_FILES = ("results.jsonl", "results.csv", "report.html", "metrics.csv", "generations.jsonl")
#: Where a run keeps its finished generations (`pytest_llmlab.cassettes.RunGenerations`).
GENERATIONS_NAME = "generations.jsonl"
SPOOL_NAME = ".spool"
PREVIOUS_NAME = "previous"


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261201T204512-3f9a1c``."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def spool_path(folder: Path, run_id: str, worker: str) -> Path:
    """Where process ``worker`` of run ``run_id`` spools its finished generations."""
    return folder / SPOOL_NAME / run_id / f"{worker}.jsonl"


def generations_log_path(folder: Path, run_id: str, worker: str) -> Path:
    """Where process ``worker`` of run ``run_id`` logs its finished generations."""
    return folder / SPOOL_NAME / run_id / "generations" / f"{worker}.jsonl"


def _reuse_path(folder: Path, run_id: str) -> Path:
    return folder / SPOOL_NAME / run_id / "reuse" / "earlier.jsonl"


def _slot(line: str) -> tuple[str, int] | None:
    """The key and sample of a generations line; None for a line that is not one (a
    killed process's last, half-written line)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    key, sample = entry.get("key"), entry.get("sample")
    if not isinstance(key, str) or not isinstance(sample, int) or "generation" not in entry:
        return None
    return key, sample


def merge_earlier_generations(folder: Path, run_id: str) -> tuple[Path, int] | None:
    """For ``--llm-resume``: the generations earlier runs in ``folder`` finished (the
    last complete run's ``generations.jsonl``, then what killed runs left in their
    spools, oldest first; a later one of a key and sample wins) merged into one file in
    this run's spool, and how many; None when there are none."""
    sources = [folder / GENERATIONS_NAME]
    spool = folder / SPOOL_NAME
    runs = sorted(p for p in spool.iterdir() if p.name != run_id) if spool.is_dir() else []
    for run in runs:
        sources.append(_reuse_path(folder, run.name))
        sources.extend(sorted((run / "generations").glob("*.jsonl")))
    merged: dict[tuple[str, int], str] = {}
    for source in sources:
        if not source.is_file():
            continue
        with source.open(encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                slot = _slot(line)
                if slot is not None:
                    merged.pop(slot, None)  # the latest goes last, as it came
                    merged[slot] = line if line.endswith("\n") else line + "\n"
    if not merged:
        return None
    target = _reuse_path(folder, run_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", errors="surrogateescape") as out:
        out.writelines(merged.values())
    return target, len(merged)


def copy_generations(source: Path, folder: Path, run_id: str) -> tuple[Path, int]:
    """For ``--llm-rescore``: ``source`` copied into this run's spool, so that the run
    reads it even when it is this folder's own ``generations.jsonl`` (which moves to
    ``previous/`` at the run's first record); and how many entries it holds. OSError
    when it cannot be read."""
    target = _reuse_path(folder, run_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with target.open("rb") as handle:
        count = sum(1 for line in handle if line.strip())
    return target, count


def merge_run_generations(folder: Path, run_id: str) -> None:
    """Join the processes' generation logs of run ``run_id`` into the folder's
    ``generations.jsonl`` (atomically), before its spool is removed."""
    logs = sorted((folder / SPOOL_NAME / run_id / "generations").glob("*.jsonl"))
    if not logs:
        return
    partial = folder / f".{GENERATIONS_NAME}.{os.getpid()}.tmp"
    with partial.open("wb") as out:
        for log in logs:
            data = log.read_bytes()
            out.write(data)
            if data and not data.endswith(b"\n"):  # a killed worker's half line
                out.write(b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, folder / GENERATIONS_NAME)


class ReportFolder:
    """One session's hold on its report folder."""

    def __init__(self, path: Path, *, option: str = "--llm-report-dir") -> None:
        self.path = path
        self._option = option
        self._lock: IO[str] | None = None
        self._started = False

    def acquire(self) -> None:
        """Check that the folder can be written and lock it; `ReportFolderError`
        otherwise. Nothing is created: a session that records nothing leaves no trace.
        """
        where = f"{self._option} {self.path}"
        if self.path.exists() and not self.path.is_dir():
            raise ReportFolderError(f"{where}: is a file, not a folder")
        try:
            _probe_writable(self.path)
        except OSError as exc:
            raise ReportFolderError(f"{where}: cannot write there ({_reason(exc)})") from None
        lock_path = _lock_path(self.path)
        try:
            lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = lock_path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise ReportFolderError(f"{where}: cannot lock it ({_reason(exc)})") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().split(" ", 1)[0].strip() or "unknown"
            handle.close()
            raise ReportFolderError(
                f"{where}: in use by another pytest session (pid {holder}); wait for it "
                f"to finish or give this one its own {self._option}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {self.path}\n")
        handle.flush()
        self._lock = handle

    def start_run(self, run_id: str) -> None:
        """Move the previous run's files into ``previous/`` (once, at the first record),
        with the spool files a killed run left; this run's own spool stays."""
        if self._started:
            return
        self._started = True
        leftovers = [self.path / name for name in RUN_FILES if (self.path / name).exists()]
        spool = self.path / SPOOL_NAME
        stale = [p for p in spool.iterdir() if p.name != run_id] if spool.is_dir() else []
        if not leftovers and not stale:
            return
        previous = self.path / PREVIOUS_NAME
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for path in leftovers:
            os.replace(path, previous / path.name)
        if stale:
            (previous / SPOOL_NAME).mkdir()
            for path in stale:
                os.replace(path, previous / SPOOL_NAME / path.name)

    def remove_spool(self, run_id: str) -> None:
        """Delete this run's spool files once every record is in results.jsonl."""
        shutil.rmtree(self.path / SPOOL_NAME / run_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.path / SPOOL_NAME).rmdir()  # only when empty

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None


def _lock_path(folder: Path) -> Path:
    """The lock of ``folder``: in a per-user temporary folder, keyed by the folder's
    real path, so that locking creates nothing in (or beside) the report folder."""
    key = hashlib.sha256(os.path.realpath(folder).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"pytest-llmlab-{os.getuid()}" / f"{key}.lock"


def _probe_writable(folder: Path) -> None:
    """Create the folder (and missing parents) and a file in it, then remove all that
    was created: OSError when the folder cannot be written."""
    missing: list[Path] = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".llmlab-probe-"):
            pass
    finally:
        for path in missing:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
