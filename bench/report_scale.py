"""Time the HTML report (and the CSV file, when its writer exists) at 1k, 10k, 100k records.

    python bench/report_scale.py [--sizes 1000,10000,100000] [--out DIR] [--json]

Builds synthetic records shaped like ``results.jsonl`` lines (six models, three
temperatures, repeated runs, energy readings with mixed provenance, a few failures
and errors, outputs of a few hundred characters and some of several kilobytes), then
for each size times `pytest_llmlab.report.html.write_html` (aggregation, charts,
rendering and the atomic write) and, if `pytest_llmlab.report.csvfile.write_csv` can
be imported, the CSV writer. Prints seconds and file size per size; the HTML target
is under 10 s and under 20 MB at 100k records. Run on demand; not a test.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_llmlab.report.html import write_html

__all__ = ["main", "synthetic_records"]

TARGET_SECONDS = 10.0
TARGET_BYTES = 20 * 1024 * 1024

_MODELS = (
    ("local:smollm2-135m", "local", 0.2, "estimated"),
    ("local:qwen2.5-0.5b", "local", 0.5, "estimated"),
    ("vllm:llama-3.1-8b", "vllm", 1.5, "measured"),
    ("vllm:mistral-7b", "vllm", 1.2, "measured-apportioned"),
    ("openai:gpt-4o-mini", "openai", 0.8, "estimated"),
    ("lmstudio:granite-3.0-2b", "lmstudio", 0.9, "integrated"),
)
_TEMPERATURES = (0.0, 0.3, 0.7)
_WORDS = ("the", "capital", "of", "France", "is", "Paris", "and", "energy", "per", "token")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def synthetic_records(count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` records with the fields the reports read, reproducible by ``seed``."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    tests = max(1, count // (len(_MODELS) * len(_TEMPERATURES) * 5))
    for index in range(count):
        model, provider, scale, provenance = _MODELS[index % len(_MODELS)]
        temperature = _TEMPERATURES[(index // len(_MODELS)) % len(_TEMPERATURES)]
        test = (index // (len(_MODELS) * len(_TEMPERATURES))) % tests
        completion = rng.randint(4, 256)
        wh_per_1k = scale * rng.lognormvariate(0.0, 0.4) * (1 + temperature)
        wh = wh_per_1k * completion / 1000.0
        failed = rng.random() < 0.1 + 0.2 * temperature
        errored = rng.random() < 0.01
        long_output = rng.random() < 0.02
        records.append(
            {
                "test_id": f"tests/test_suite.py::test_case_{test}[{model}-T{temperature:g}]",
                "outcome": "error" if errored else ("failed" if failed else "passed"),
                "model": model,
                "spec": model,
                "alias": None,
                "provider": provider,
                "temperature": temperature,
                "prompt_tokens": rng.randint(20, 400),
                "completion_tokens": completion,
                "ttft_s": rng.uniform(0.02, 0.8),
                "total_s": rng.uniform(0.2, 5.0),
                "prefill_tokens_per_s": rng.uniform(100, 2000),
                "decode_tokens_per_s": rng.uniform(10, 120),
                "tokens_per_s": rng.uniform(5, 100),
                "finish_reason": "error" if errored else "stop",
                "error": "HTTP 500 from http://127.0.0.1:8000/v1: boom" if errored else None,
                "prompt": f"Question {test}: {_text(rng, 20)}",
                "output": _text(rng, 1500 if long_output else rng.randint(5, 60)),
                "reasoning": "",
                "seed": index,
                "max_tokens": 256,
                "usage_reported": True,
                "energy": {
                    "joules": wh * 3600.0,
                    "wh": wh,
                    "wh_per_1k": wh_per_1k,
                    "provenance": provenance,
                    "measured": provenance != "estimated",
                    "low_confidence": False,
                    "note": f"synthetic {provenance} reading",
                    "meter": ["synthetic"],
                    "gco2e": wh * 0.4,
                    "cost": wh / 1000.0 * 0.3,
                },
                "worker": f"gw{index % 4}",
                "host": "bench",
                "finished_at": 1_795_000_000.0 + index,
                "run": index % 5,
                "run_passed": not failed,
                "sampling": None,
                "confidence": {"mean_prob": rng.random()},
                "fingerprint": "0123456789ab",
                "cpu_model": "Synthetic CPU",
            }
        )
    return records


def _csv_writer() -> Callable[[list[dict[str, Any]], Path], Any] | None:
    """`write_csv` when the CSV module is there, else None."""
    try:
        module = importlib.import_module("pytest_llmlab.report.csvfile")
    except ImportError:
        return None
    writer: Callable[[list[dict[str, Any]], Path], Any] = module.write_csv
    return writer


def _time(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when the 100k HTML misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--out", type=Path, default=None, help="keep the files here")
    parser.add_argument("--json", action="store_true", help="print one JSON line per size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    write_csv = _csv_writer()
    if write_csv is None:
        print("pytest_llmlab.report.csvfile not found: timing the HTML report only")
    missed = False
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            records = synthetic_records(size)
            html_path = folder / f"report-{size}.html"
            html_s = _time(
                functools.partial(write_html, records, html_path, title=f"{size} records")
            )
            result: dict[str, Any] = {
                "records": size,
                "html_s": round(html_s, 3),
                "html_mb": round(html_path.stat().st_size / 1e6, 2),
            }
            if write_csv is not None:
                csv_path = folder / f"results-{size}.csv"
                result["csv_s"] = round(_time(functools.partial(write_csv, records, csv_path)), 3)
                result["csv_mb"] = round(csv_path.stat().st_size / 1e6, 2)
            if size >= 100_000 and (
                html_s > TARGET_SECONDS or html_path.stat().st_size > TARGET_BYTES
            ):
                missed = True
            if args.json:
                print(json.dumps(result))
            else:
                line = (
                    f"{size:>7} records: HTML {result['html_s']:6.2f} s {result['html_mb']:6.2f} MB"
                )
                if "csv_s" in result:
                    line += f" | CSV {result['csv_s']:6.2f} s {result['csv_mb']:6.2f} MB"
                print(line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
