"""``results.csv``: the records as one flat table, written atomically.

One row per generation, the columns `pytest_llmlab.report.table.CSV_COLUMNS`, UTF-8,
comma-separated (quoted where a cell needs it), ``\\n`` line ends, a header line (text
that is not valid Unicode, a lone surrogate, is written backslash-escaped).
Missing values are empty cells; floats are written as ``repr`` writes them, the
shortest text that reads back as the same number; booleans are ``True``/``False``.

The columns come from `records_frame` (the DataFrame); each is formatted to text and
quoted as `csv.writer`'s default dialect quotes (``QUOTE_MINIMAL``: a cell with a
comma, a quote, ``\\n`` or ``\\r``) in one pass per column, and the rows are joined in
chunks: faster than ``DataFrame.to_csv``, which formats floats through numpy (100k
records in a few seconds, about 60 % of its time). Unlike ``to_csv(lineterminator="\\n")`` it also quotes a lone
``\\r``, which the csv module would otherwise read back as a line break.

The file is written to a temporary file in the same folder, flushed, fsynced and
renamed over the target (`os.replace`): a crash or an error while writing leaves the
old file or the new one, never half of each, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import secrets
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from pytest_llmlab.report.table import CSV_COLUMNS, records_frame

__all__ = ["write_csv"]

_CHUNK_ROWS = 10_000  # rows joined per write: bounded memory, few system calls


def _cell(value: Any, missing: Any) -> str:
    """The text of one value of an object column: empty for None, NaN and ``missing``
    (pandas' NA); ``repr`` for floats; ``str`` for anything else."""
    if value is None or value is missing:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _float_cells(series: Any) -> list[str]:
    """A float64 column: ``repr`` of each value, empty where it is NaN (missing)."""
    import numpy  # a pandas dependency

    values = series.to_numpy()
    missing = numpy.isnan(values)
    if missing.all():
        return [""] * len(values)
    cells = list(map(repr, values.tolist()))
    for index in numpy.flatnonzero(missing).tolist():
        cells[index] = ""
    return cells


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _quoted(cells: list[str]) -> list[str]:
    """Cells in double quotes (inner quotes doubled) where they hold a comma, a quote,
    ``\\n`` or ``\\r``, as `csv.QUOTE_MINIMAL` writes them; one scan when none does."""
    if not _NEEDS_QUOTES.search("\x00".join(cells)):
        return cells
    return [
        '"' + cell.replace('"', '""') + '"' if _NEEDS_QUOTES.search(cell) else cell
        for cell in cells
    ]


def _text_columns(frame: Any) -> list[list[str]]:
    """Every column of ``frame`` (`CSV_COLUMNS`) as a list of CSV cells, quoted."""
    missing = importlib.import_module("pandas").NA
    columns: list[list[str]] = []
    for name in CSV_COLUMNS:
        series = frame[name]
        if series.dtype.kind == "f":  # repr never needs quotes
            columns.append(_float_cells(series))
        elif series.dtype == object:  # values of any type (a hand-edited record)
            columns.append(_quoted([_cell(v, missing) for v in series.tolist()]))
        else:  # Int64, boolean, string: pandas formats them, NA is empty
            columns.append(_quoted(series.astype("string").fillna("").tolist()))
    return columns


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (POSIX); best effort where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_csv(records: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Write ``records`` to ``path`` as CSV (see the module docstring); return the path.

    The folder is created if needed. Any error (a full disk, an interrupt) propagates
    after the temporary file is removed; the old file is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = _text_columns(records_frame(records))
    # A fresh name per call (pid and random), created exclusively; unlike a
    # NamedTemporaryFile it gets the usual permissions (the umask's), not 0600.
    partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = partial.open("x", encoding="utf-8", errors="backslashreplace", newline="")
    try:
        with handle:
            handle.write(",".join(CSV_COLUMNS) + "\n")
            rows = zip(*columns, strict=True)
            while chunk := list(islice(rows, _CHUNK_ROWS)):
                handle.write("".join([",".join(row) + "\n" for row in chunk]))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target
