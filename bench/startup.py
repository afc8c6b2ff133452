"""What the plugin costs a pytest start: its import, and a session of trivial tests.

    python bench/startup.py                # 15 imports, 7 paired sessions of 1,000 tests
    python bench/startup.py --rounds 3     # quicker, noisier

Two figures, each side measured in the same run:

* import: ``python -X importtime -c "import pytest, _pytest.pytester; import
  pytest_llmlab.plugin"`` in a fresh interpreter, ``--imports`` times; the cumulative
  microseconds of ``pytest_llmlab.plugin`` are what the plugin adds beyond pytest's
  own import (pytest, and the pytester plugin this project's tests load, come
  first). Printed: the median and the range, against the target of 60 ms.
* session: a temporary folder with one file of 1,000 trivial tests, run as ``python
  -m pytest -q -p no:cacheprovider`` with the plugin (as installed: an entry point)
  and with ``-p no:llmlab``, back to back, ``--rounds`` times, alternating which goes
  first. Printed: each side's median wall seconds, and the median of each round's
  ratio (the two ran back to back, so a drift in the machine's speed cancels),
  against the target of within 3 %.

Python files are compiled first (``compileall``), as an installed package's are: this
project's sandbox sets PYTHONDONTWRITEBYTECODE, which would make every import compile
from source. Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest_llmlab

IMPORT_TARGET_MS = 60.0
SESSION_TARGET = 1.03
_IMPORT = "import pytest, _pytest.pytester; import pytest_llmlab.plugin"
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| pytest_llmlab\.plugin$", re.MULTILINE)


def plugin_import_ms() -> float:
    """One fresh interpreter's cumulative import time of the plugin, in ms."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _IMPORT],
        capture_output=True,
        text=True,
        check=True,
    )
    match = _LINE.search(done.stderr)
    if match is None:
        raise SystemExit(f"no import time for pytest_llmlab.plugin in:\n{done.stderr[-2000:]}")
    return int(match.group(1)) / 1000


def session_s(folder: Path, *extra: str) -> float:
    """Wall seconds of one pytest session over ``folder`` (it must pass)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "."]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}")
    return elapsed


def write_tests(folder: Path, count: int) -> None:
    body = "\n\n".join(f"def test_{i}() -> None:\n    assert {i} + 1 > {i}" for i in range(count))
    (folder / "test_trivial.py").write_text(body + "\n", encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imports", type=int, default=15, help="fresh interpreters timed")
    parser.add_argument("--rounds", type=int, default=7, help="paired sessions")
    parser.add_argument("--tests", type=int, default=1000, help="trivial tests per session")
    args = parser.parse_args(argv)
    if args.imports < 1 or args.rounds < 1 or args.tests < 1:
        parser.error("--imports, --rounds and --tests must be at least 1")

    package = Path(pytest_llmlab.__file__).parent
    compileall.compile_dir(package, quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the children keep their .pyc too

    imports = sorted(plugin_import_ms() for _ in range(args.imports))
    median_ms = statistics.median(imports)
    print(
        f"import pytest_llmlab.plugin beyond pytest's own: median {median_ms:.1f} ms "
        f"(range {imports[0]:.1f}-{imports[-1]:.1f} ms over {args.imports} interpreters)"
    )
    print(
        f"target: under {IMPORT_TARGET_MS:g} ms: {_verdict(median_ms < IMPORT_TARGET_MS)} "
        f"({median_ms:.1f} ms)",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="llmlab-startup-") as tmp:
        folder = Path(tmp)
        write_tests(folder, args.tests)
        session_s(folder)  # warm the file cache and this folder's .pyc
        with_plugin: list[float] = []
        without: list[float] = []
        for round_no in range(args.rounds):
            sides = [("with", ()), ("without", ("-p", "no:llmlab"))]
            for name, extra in sides if round_no % 2 == 0 else sides[::-1]:
                (with_plugin if name == "with" else without).append(session_s(folder, *extra))
    ratios = sorted(w / o for w, o in zip(with_plugin, without, strict=True))
    ratio = statistics.median(ratios)
    print(
        f"{args.tests:,} trivial tests: with the plugin median "
        f"{statistics.median(with_plugin):.3f} s, without (-p no:llmlab) "
        f"{statistics.median(without):.3f} s; ratio {ratio:.3f}, the median of each "
        f"round's pair [{', '.join(f'{r:.3f}' for r in ratios)}]"
    )
    print(
        f"target: within {SESSION_TARGET - 1:.0%}: {_verdict(ratio <= SESSION_TARGET)} "
        f"({ratio - 1:+.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
