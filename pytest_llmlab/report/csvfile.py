"""``results.csv``: the records as one flat table, written atomically.

`records_frame` flattens each record (one generation) into one row of `CSV_COLUMNS`:
the record's own fields, its ``energy`` reading (components, GPU statistics, carbon,
cost), its ``confidence`` metrics and the number of its ``tool_calls``. A field a record lacks (no energy reading, no
logprobs, no GPU) is a missing value, an empty cell in the CSV. Columns are typed:
nullable integers (``Int64``), floats (NaN for missing), nullable booleans
(``boolean``) and nullable strings (``string``); a column whose values do not fit its
type (a hand-edited file) is kept as objects rather than rejected. pandas is imported
on first use, so loading this module stays fast.

`write_csv` writes one row per generation, the columns `CSV_COLUMNS`, UTF-8,
comma-separated (quoted where a cell needs it), ``\\n`` line ends, a header line (text
that is not valid Unicode, a lone surrogate, is written backslash-escaped).
Missing values are empty cells; floats are written as ``repr`` writes them, the
shortest text that reads back as the same number; booleans are ``True``/``False``.
Text cells are untrusted (model names, categories, a server's finish reason): one
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which a
spreadsheet would run as a formula, gets a leading ``'`` (`pytest_llmlab.redact.csv_cell`,
OWASP's advice); numeric columns, and text that is a plain number, stay as they are.

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
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmlab.redact import csv_cell

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = ["CSV_COLUMNS", "CSV_RECORD_FIELDS", "records_frame", "write_csv"]

#: The columns of ``results.csv``, in order (see `records_frame`).
CSV_COLUMNS: tuple[str, ...] = (
    "test_id",
    "suite",
    "category",
    "case_id",
    "points",
    "max_points",
    "model",
    "alias",
    "spec",
    "provider",
    "temperature",
    "run",
    "turn",
    "outcome",
    "run_passed",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "ttft_s",
    "total_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "rates_from",
    "tokens_per_s",
    "finish_reason",
    "replayed",
    "joules",
    "cpu_joules",
    "cpu_provenance",
    "dram_joules",
    "dram_provenance",
    "gpu_joules",
    "gpu_provenance",
    "wh",
    "wh_per_1k",
    "prefill_joules",
    "decode_joules",
    "provenance",
    "measured",
    "low_confidence",
    "baseline_w",
    "net_joules",
    "gross_joules",
    "gpu_util_avg",
    "gpu_util_max",
    "gpu_mem_avg_mb",
    "gpu_mem_peak_mb",
    "gpu_temp_avg_c",
    "gpu_temp_max_c",
    "gpu_power_avg_w",
    "gpu_power_max_w",
    "mean_prob",
    "min_prob",
    "first_token_prob",
    "perplexity",
    "entropy",
    "tool_calls",
    "avg_tool_confidence",
    "min_tool_confidence",
    "cost",
    "gco2e",
    "host",
    "worker",
    "fingerprint",
    "cpu_model",
    "run_id",
)

_INT = "Int64"
_FLOAT = "float64"
_BOOL = "boolean"
_TEXT = "string"

# Where each column comes from: (source, key, dtype). Sources: "record" (top level),
# "energy", "cpu"/"dram"/"gpu" (energy components), "gpu_stats", "confidence",
# "tool_calls" (``count``: how many calls the record's list holds; the calls
# themselves are in results.jsonl).
_SOURCES: dict[str, tuple[str, str, str]] = {
    "test_id": ("record", "test_id", _TEXT),
    "suite": ("record", "suite", _TEXT),
    "category": ("record", "category", _TEXT),
    "case_id": ("record", "case_id", _TEXT),
    "points": ("record", "points", _FLOAT),
    "max_points": ("record", "max_points", _FLOAT),
    "model": ("record", "model", _TEXT),
    "alias": ("record", "alias", _TEXT),
    "spec": ("record", "spec", _TEXT),
    "provider": ("record", "provider", _TEXT),
    "temperature": ("record", "temperature", _FLOAT),
    "run": ("record", "run", _INT),
    "turn": ("record", "turn", _INT),
    "outcome": ("record", "outcome", _TEXT),
    "run_passed": ("record", "run_passed", _BOOL),
    "prompt_tokens": ("record", "prompt_tokens", _INT),
    "cached_prompt_tokens": ("record", "cached_prompt_tokens", _INT),
    "completion_tokens": ("record", "completion_tokens", _INT),
    "ttft_s": ("record", "ttft_s", _FLOAT),
    "total_s": ("record", "total_s", _FLOAT),
    "prefill_tokens_per_s": ("record", "prefill_tokens_per_s", _FLOAT),
    "decode_tokens_per_s": ("record", "decode_tokens_per_s", _FLOAT),
    "rates_from": ("record", "rates_from", _TEXT),
    "tokens_per_s": ("record", "tokens_per_s", _FLOAT),
    "finish_reason": ("record", "finish_reason", _TEXT),
    "replayed": ("record", "replayed", _BOOL),
    "joules": ("energy", "joules", _FLOAT),
    "cpu_joules": ("cpu", "joules", _FLOAT),
    "cpu_provenance": ("cpu", "provenance", _TEXT),
    "dram_joules": ("dram", "joules", _FLOAT),
    "dram_provenance": ("dram", "provenance", _TEXT),
    "gpu_joules": ("gpu", "joules", _FLOAT),
    "gpu_provenance": ("gpu", "provenance", _TEXT),
    "wh": ("energy", "wh", _FLOAT),
    "wh_per_1k": ("energy", "wh_per_1k", _FLOAT),
    "prefill_joules": ("energy", "prefill_joules", _FLOAT),
    "decode_joules": ("energy", "decode_joules", _FLOAT),
    "provenance": ("energy", "provenance", _TEXT),
    "measured": ("energy", "measured", _BOOL),
    "low_confidence": ("energy", "low_confidence", _BOOL),
    "baseline_w": ("energy", "baseline_w", _FLOAT),
    "net_joules": ("energy", "net_joules", _FLOAT),
    "gross_joules": ("energy", "gross_joules", _FLOAT),
    "gpu_util_avg": ("gpu_stats", "util_avg", _FLOAT),
    "gpu_util_max": ("gpu_stats", "util_max", _FLOAT),
    "gpu_mem_avg_mb": ("gpu_stats", "mem_avg_mb", _FLOAT),
    "gpu_mem_peak_mb": ("gpu_stats", "mem_peak_mb", _FLOAT),
    "gpu_temp_avg_c": ("gpu_stats", "temp_avg_c", _FLOAT),
    "gpu_temp_max_c": ("gpu_stats", "temp_max_c", _FLOAT),
    "gpu_power_avg_w": ("gpu_stats", "power_avg_w", _FLOAT),
    "gpu_power_max_w": ("gpu_stats", "power_max_w", _FLOAT),
    "mean_prob": ("confidence", "mean_prob", _FLOAT),
    "min_prob": ("confidence", "min_prob", _FLOAT),
    "first_token_prob": ("confidence", "first_token_prob", _FLOAT),
    "perplexity": ("confidence", "perplexity", _FLOAT),
    "entropy": ("confidence", "entropy", _FLOAT),
    "tool_calls": ("tool_calls", "count", _INT),
    "avg_tool_confidence": ("record", "avg_tool_confidence", _FLOAT),
    "min_tool_confidence": ("record", "min_tool_confidence", _FLOAT),
    "cost": ("energy", "cost", _FLOAT),
    "gco2e": ("energy", "gco2e", _FLOAT),
    "host": ("record", "host", _TEXT),
    "worker": ("record", "worker", _TEXT),
    "fingerprint": ("record", "fingerprint", _TEXT),
    "cpu_model": ("record", "cpu_model", _TEXT),
    "run_id": ("record", "run_id", _TEXT),
}
assert tuple(_SOURCES) == CSV_COLUMNS

#: The columns read from the record's own top-level fields, in column order.
CSV_RECORD_FIELDS: tuple[str, ...] = tuple(
    key for source, key, _dtype in _SOURCES.values() if source == "record"
)

_EMPTY: dict[str, Any] = {}


def _dicts(values: Iterable[Any]) -> list[dict[str, Any]]:
    """Each value if it is a dict (other mappings copied into one), else an empty one
    (None, or a hand-edited oddity)."""
    return [
        v if isinstance(v, dict) else dict(v) if isinstance(v, Mapping) else _EMPTY for v in values
    ]


def _pandas() -> Any:
    """The pandas module, imported on first use (it takes most of a second)."""
    return importlib.import_module("pandas")


_NONE = type(None)
# The Python types each column type takes as is (None is missing).
_ACCEPTS: dict[str, frozenset[type]] = {
    _FLOAT: frozenset({float, int, _NONE}),
    _INT: frozenset({int, _NONE}),
    _BOOL: frozenset({bool, _NONE}),
    _TEXT: frozenset({str, _NONE}),
}


def _typed(values: list[Any], dtype: str) -> Any:
    """A column of ``dtype`` from plain values, or of objects (the values unchanged)
    when any value is of another type (``"8"`` or ``True`` among integers)."""
    import numpy  # a pandas dependency

    if set(map(type, values)) <= _ACCEPTS[dtype]:
        try:
            if dtype == _FLOAT:
                return numpy.array(values, dtype=float)
            return _pandas().array(values, dtype=dtype)
        except (OverflowError, TypeError, ValueError):  # an integer beyond 64 bits
            pass
    objects = numpy.empty(len(values), dtype=object)
    objects[:] = values  # element by element: a list value stays one cell
    return _pandas().array(objects, dtype=object)


def records_frame(records: Sequence[Mapping[str, Any]]) -> pandas.DataFrame:
    """One row per record with the columns `CSV_COLUMNS`, in that order.

    Columns are built whole from lists (no row-by-row appends): 100k records take a
    second or two. ``suite`` and ``category`` come from record keys of
    those names when a record has them; every value a record lacks is missing (NaN,
    ``<NA>`` or None by column type).
    """
    sources: dict[str, list[dict[str, Any]]] = {"record": _dicts(records)}
    sources["energy"] = _dicts(r.get("energy") for r in sources["record"])
    for part in ("cpu", "dram", "gpu", "gpu_stats"):
        sources[part] = _dicts(e.get(part) for e in sources["energy"])
    sources["confidence"] = _dicts(r.get("confidence") for r in sources["record"])
    sources["tool_calls"] = [
        {"count": len(calls)} if isinstance(calls := r.get("tool_calls"), list) else _EMPTY
        for r in sources["record"]
    ]
    columns = {
        name: _typed(list(map(dict.get, sources[source], repeat(key))), dtype)
        for name, (source, key, dtype) in _SOURCES.items()
    }
    return _pandas().DataFrame(columns, columns=list(CSV_COLUMNS))


# --------------------------------------------------------------------------- writing

_CHUNK_ROWS = 10_000  # rows joined per write: bounded memory, few system calls


def _cell(value: Any, missing: Any) -> str:
    """The text of one value of an object column: empty for None, NaN and ``missing``
    (pandas' NA); ``repr`` for floats; text defused (`csv_cell`); ``str`` for anything
    else."""
    if value is None or value is missing:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(csv_cell(value) if isinstance(value, str) else value)


def _defused(cells: list[str]) -> list[str]:
    """Text cells with every would-be formula defused (`csv_cell`)."""
    return [str(csv_cell(cell)) for cell in cells]


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
    missing = _pandas().NA
    columns: list[list[str]] = []
    for name in CSV_COLUMNS:
        series = frame[name]
        if series.dtype.kind == "f":  # repr never needs quotes
            columns.append(_float_cells(series))
        elif series.dtype == object:  # values of any type (a hand-edited record)
            columns.append(_quoted([_cell(v, missing) for v in series.tolist()]))
        else:  # Int64, boolean, string: pandas formats them, NA is empty
            cells = series.astype("string").fillna("").tolist()
            columns.append(_quoted(_defused(cells) if series.dtype == _TEXT else cells))
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


def write_csv(records: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
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
