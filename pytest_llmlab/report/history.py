"""Run history: named runs of records in one SQLite file, for comparisons over time.

The file (default ``.llmlab/history.sqlite``) holds three tables::

    schema_version(version)                                 one row: SCHEMA_VERSION
    runs(id, name UNIQUE, created_at, fingerprint, hardware JSON, git_commit, n_records)
    records(run_id -> runs.id, seq, json)                   one row per record, in order

`save_run` writes a run in one transaction (a crash leaves the old history intact);
saving under a name that exists replaces that run and says so through ``announce``.
`load_run` reads a run back by name, or the newest with ``"latest"``; `list_runs` lists
them newest first. The database runs in WAL mode, so a reader (a report, a CI step)
never blocks a writer. Only the standard library's ``sqlite3`` is used.

`load_source` reads "a run" as the command line and options name one: a results file,
``history:NAME``, or a bare run name (``latest``, ``nightly``). `session_history` is
what the plugin does at the end of a session: compare with a baseline, then save.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pytest_llmlab.errors import HistoryError
from pytest_llmlab.report.compare import RegressionCheck, compare_runs
from pytest_llmlab.report.load import load_records
from pytest_llmlab.report.prices import Price
from pytest_llmlab.results import dumps_record

__all__ = [
    "DEFAULT_HISTORY",
    "LATEST",
    "SCHEMA_VERSION",
    "HistoryError",
    "RunInfo",
    "SessionHistory",
    "Source",
    "git_commit",
    "list_runs",
    "load_run",
    "load_source",
    "save_run",
    "session_history",
]

#: Where the history lives unless told otherwise (relative to the working directory).
DEFAULT_HISTORY = Path(".llmlab") / "history.sqlite"
#: The name `load_run` reads as "the newest run".
LATEST = "latest"
#: Bumped when the tables change; a file with another version is refused, not guessed.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    fingerprint TEXT,
    hardware TEXT,
    git_commit TEXT,
    n_records INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One saved run (without its records)."""

    id: int
    name: str
    created_at: float
    fingerprint: str | None
    hardware: dict[str, Any] | None
    git_commit: str | None
    n_records: int

    def describe(self) -> str:
        """``'nightly' (2025-06-01 12:00, 40 records, commit 1a2b3c4d)``."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created_at))
        commit = f", commit {self.git_commit[:8]}" if self.git_commit else ""
        return f"{self.name!r} ({when}, {self.n_records} records{commit})"


def git_commit(cwd: Path | None = None, timeout_s: float = 2.0) -> str | None:
    """The commit being tested: ``$GITHUB_SHA``, else ``git rev-parse HEAD``, else None.

    Best effort: no git, no repository, or a git slower than ``timeout_s`` gives None.
    """
    sha = os.environ.get("GITHUB_SHA", "").strip()
    if sha:
        return sha
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


@contextmanager
def _connect(path: Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    """A connection with the schema checked (and created when ``create``)."""
    if not create and not path.is_file():
        raise HistoryError(f"no history at {path} (save a run first)")
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, timeout=30.0)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            if create:
                conn.execute("PRAGMA journal_mode = WAL")
                with conn:
                    conn.executescript(_SCHEMA)
                    if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            _check_version(conn, path)
            yield conn
    except (sqlite3.Error, OSError) as exc:
        raise HistoryError(f"history {path}: {exc}") from None


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.Error:
        row = None
    if row is None or row[0] != SCHEMA_VERSION:
        found = "none" if row is None else row[0]
        raise HistoryError(
            f"history {path} has schema version {found}, this pytest-llmlab reads "
            f"{SCHEMA_VERSION}: move the file aside to start a new history"
        )


def _info(row: Sequence[Any]) -> RunInfo:
    hardware = json.loads(row[4]) if row[4] else None
    return RunInfo(
        id=int(row[0]),
        name=str(row[1]),
        created_at=float(row[2]),
        fingerprint=row[3],
        hardware=hardware if isinstance(hardware, dict) else None,
        git_commit=row[5],
        n_records=int(row[6]),
    )


_RUN_COLUMNS = "id, name, created_at, fingerprint, hardware, git_commit, n_records"


def save_run(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    name: str,
    fingerprint: str | None,
    hardware: Mapping[str, Any] | None,
    commit: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> int:
    """Save ``records`` as the run ``name``; returns its id.

    A run already saved under ``name`` is replaced (in the same transaction) and
    ``announce`` is told which. ``commit`` defaults to `git_commit`. Raises
    HistoryError for an empty name or an unusable file.
    """
    if not name.strip():
        raise HistoryError("a history run needs a name")
    if commit is None:
        commit = git_commit()
    lines = [dumps_record(dict(record)) for record in records]
    hardware_json = json.dumps(dict(hardware), default=str) if hardware is not None else None
    with _connect(path, create=True) as conn, conn:
        old = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ?", (name,)).fetchone()
        if old is not None:
            conn.execute("DELETE FROM runs WHERE id = ?", (old[0],))
        cursor = conn.execute(
            "INSERT INTO runs (name, created_at, fingerprint, hardware, git_commit, n_records)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, time.time(), fingerprint, hardware_json, commit, len(lines)),
        )
        run_id = cursor.lastrowid
        assert run_id is not None
        conn.executemany(
            "INSERT INTO records (run_id, seq, json) VALUES (?, ?, ?)",
            ((run_id, seq, line) for seq, line in enumerate(lines)),
        )
    if old is not None and announce is not None:
        announce(f"llmlab history: replaced run {_info(old).describe()} in {path}")
    return run_id


def list_runs(path: Path) -> list[RunInfo]:
    """Every saved run, newest first; an empty list when there is no history file."""
    if not path.is_file():
        return []
    with _connect(path, create=False) as conn:
        rows = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC"
        ).fetchall()
    return [_info(row) for row in rows]


def load_run(path: Path, name: str = LATEST) -> tuple[RunInfo, list[dict[str, Any]]]:
    """The run saved as ``name`` (or the newest, for ``"latest"``) and its records.

    A name that is not saved is a HistoryError listing the saved names.
    """
    with _connect(path, create=False) as conn:
        if name == LATEST:
            query = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT 1"
            row = conn.execute(query).fetchone()
        else:
            query = f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ?"
            row = conn.execute(query, (name,)).fetchone()
        if row is None:
            names = [r[0] for r in conn.execute("SELECT name FROM runs ORDER BY created_at")]
            saved = ", ".join(names) if names else "none"
            what = "no runs" if name == LATEST else f"no run named {name!r}"
            raise HistoryError(f"history {path} has {what} (saved: {saved})")
        info = _info(row)
        lines = conn.execute(
            "SELECT json FROM records WHERE run_id = ? ORDER BY seq", (info.id,)
        ).fetchall()
    return info, [json.loads(line[0]) for line in lines]


class Source(NamedTuple):
    """A run read by `load_source`: what it is, its records, and lines it skipped."""

    description: str
    records: list[dict[str, Any]]
    notes: list[str]


def load_source(source: str, history: Path) -> Source:
    """A run named the way a user names one, in this order:

    * ``history:NAME`` (``history:latest``, or ``history:`` for the newest): a saved run;
    * an existing file: a results JSONL file (lines that are not records are skipped
      and listed in ``notes``, never raised as warnings);
    * something that looks like a path (a ``/`` or a ``.jsonl`` ending): HistoryError,
      no such file;
    * anything else: a saved run's name (``latest``, ``nightly``).
    """
    if source.startswith("history:"):
        info, records = load_run(history, source.partition(":")[2] or LATEST)
        return Source(f"run {info.describe()} of {history}", records, [])
    if not Path(source).is_file():
        if "/" in source or os.sep in source or source.endswith(".jsonl"):
            raise HistoryError(f"no such results file: {source}")
        try:
            info, records = load_run(history, source)
        except HistoryError as exc:
            if source == LATEST:
                raise
            raise HistoryError(f"{source!r} is no results file, and {exc}") from None
        return Source(f"run {info.describe()} of {history}", records, [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_records(Path(source))
    return Source(f"results file {source}", records, [str(w.message) for w in caught])


@dataclass(frozen=True, slots=True)
class SessionHistory:
    """What `session_history` did: lines for the terminal summary, and the regressions
    (one line each) that fail the session."""

    lines: list[str]
    failures: list[str]


def session_history(
    records: Sequence[Mapping[str, Any]],
    *,
    path: Path,
    save_as: str | None,
    compare_with: str | None,
    checks: Sequence[RegressionCheck] = (),
    prices: Mapping[str, Price] | None = None,
    kwh_price: float | None = None,
    fingerprint: str | None = None,
    hardware: Mapping[str, Any] | None = None,
) -> SessionHistory:
    """Compare ``records`` with the run ``compare_with`` (see `load_source`), then save
    them as ``save_as``; either step is skipped when its argument is None.

    The comparison comes first, so ``compare_with="latest"`` means the run before this
    one. A baseline that cannot be read (the first run of a new history) is a warning
    line, as in pytest-benchmark, unless ``checks`` gate on it: a gate fails closed, so
    a missing baseline is then a failure. A history that cannot be written is a
    warning. ``failures`` holds the regressions beyond ``checks`` (`Comparison.failures`).
    """
    lines: list[str] = []
    failures: list[str] = []
    if compare_with is not None:
        try:
            baseline = load_source(compare_with, path)
        except HistoryError as exc:
            if checks:
                gate = ",".join(str(check) for check in checks)
                failures.append(
                    f"llmlab compare: no baseline to gate on: {exc}; "
                    f"--llm-compare-fail={gate} cannot pass without one"
                )
            else:
                lines.append(f"llmlab compare: not compared: {exc}")
        else:
            comparison = compare_runs(baseline.records, records, prices=prices, kwh_price=kwh_price)
            lines.append(f"llmlab compare: against {baseline.description}")
            lines.extend(f"llmlab compare: warning: {note}" for note in baseline.notes)
            lines.extend(f"llmlab compare: warning: {w}" for w in comparison.warnings)
            lines.extend(comparison.table())
            failures = comparison.failures(checks)
    if save_as is not None:
        try:
            run_id = save_run(
                path,
                records,
                name=save_as,
                fingerprint=fingerprint,
                hardware=hardware,
                announce=lines.append,
            )
        except HistoryError as exc:
            lines.append(f"llmlab history: not saved: {exc}")
            return SessionHistory(lines, failures)
        saved = f"{len(records)} records as run {save_as!r} (id {run_id}) in {path}"
        lines.append(f"llmlab history: saved {saved}")
    return SessionHistory(lines, failures)
