"""Collection time of a big prompt suite against the equivalent parametrized Python test.

    python bench/collect_scale.py [--cases 10000] [--rounds 3]

Writes, in a temporary folder, a JSONL suite of ``--cases`` cases (each with a prompt,
two checks and a category) and a Python test parametrized over the same number of
prompts that requests ``llm``; both run on two models, so each side collects
2 x cases items. Times ``pytest --collect-only -q`` of each in a fresh process
(interpreter start and plugin import included on both sides), alternating the two for
``--rounds`` rounds, and prints the median of each, their ratio, and the targets: the
suite within 1.5x of the Python test and under 5 s. No model is loaded: collection
never contacts one. Run on demand; not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

TARGET_RATIO = 1.5
TARGET_SECONDS = 5.0
MODELS = "local:smollm2-135m,llamacpp:other-model"

PYTHON_TEST = """
import pytest

PROMPTS = [f"What is {{i}} plus {{i}}? Answer with the number only." for i in range({cases})]


@pytest.mark.parametrize("prompt", PROMPTS, ids=[f"case-{{i}}" for i in range({cases})])
def test_case(llm, prompt):
    gen = llm.generate(prompt, max_tokens=8)
    assert str(2 * PROMPTS.index(prompt)) in gen.text
"""


def write_inputs(folder: Path, cases: int) -> tuple[Path, Path]:
    """The suite file and the Python test file, each in its own subfolder."""
    suite_dir, python_dir = folder / "suite", folder / "python"
    suite_dir.mkdir()
    python_dir.mkdir()
    suite = suite_dir / "big.suite.jsonl"
    with suite.open("w", encoding="utf-8") as out:
        for i in range(cases):
            case = {
                "id": f"case-{i}",
                "prompt": f"What is {i} plus {i}? Answer with the number only.",
                "category": f"group-{i % 10}",
                "max_tokens": 8,
                "checks": [{"contains": str(2 * i)}, {"max_words": 3}],
            }
            out.write(json.dumps(case) + "\n")
    test = python_dir / "test_big.py"
    test.write_text(PYTHON_TEST.format(cases=cases), encoding="utf-8")
    return suite, test


def collect_seconds(target: Path, expected_items: int) -> float:
    """Wall time of one ``pytest --collect-only -q`` of ``target`` in a new process."""
    command = [
        sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
        f"--llm-models={MODELS}", f"--llm-report-dir={target.parent / 'reports'}",
        str(target),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=target.parent, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"collection of {target} failed:\n{done.stdout[-2000:]}{done.stderr}")
    collected = sum(1 for line in done.stdout.splitlines() if "::" in line)
    if collected != expected_items:
        raise SystemExit(f"{target}: collected {collected} items, expected {expected_items}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    items = 2 * args.cases
    with tempfile.TemporaryDirectory(prefix="llmlab-collect-") as tmp:
        suite, test = write_inputs(Path(tmp), args.cases)
        suite_times: list[float] = []
        python_times: list[float] = []
        for _ in range(args.rounds):
            python_times.append(collect_seconds(test, items))
            suite_times.append(collect_seconds(suite, items))
    suite_s, python_s = statistics.median(suite_times), statistics.median(python_times)
    ratio = suite_s / python_s
    print(f"items per side: {items} ({args.cases} cases x 2 models), {args.rounds} rounds")
    print(f"python parametrized test: {python_s:.2f} s (median of {python_times})")
    print(f"JSONL suite:              {suite_s:.2f} s (median of {suite_times})")
    print(
        f"ratio suite/python: {ratio:.2f} (target <= {TARGET_RATIO}); "
        f"suite {'under' if suite_s < TARGET_SECONDS else 'OVER'} {TARGET_SECONDS:g} s"
    )
    return 0 if ratio <= TARGET_RATIO and suite_s < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
