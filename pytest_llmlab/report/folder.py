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
``.spool/<run id>/<worker>.jsonl`` (fsynced) so the controller can recover the
completed generations of a test whose worker died.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

from pytest_llmlab.errors import ReportFolderError

__all__ = ["RUN_FILES", "ReportFolder", "ReportFolderError", "new_run_id", "spool_path"]

#: The files one run writes into the folder (moved aside when the next run starts).
RUN_FILES = ("results.jsonl", "results.csv", "report.html", "metrics.csv")
SPOOL_NAME = ".spool"
PREVIOUS_NAME = "previous"


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261201T204512-3f9a1c``."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def spool_path(folder: Path, run_id: str, worker: str) -> Path:
    """Where process ``worker`` of run ``run_id`` spools its finished generations."""
    return folder / SPOOL_NAME / run_id / f"{worker}.jsonl"


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
