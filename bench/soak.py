"""Soak: many generations in one pytest session against an instant loopback double.

    python bench/soak.py                       # 100,000 generations, 100 per test
    python bench/soak.py --generations 10000   # a shorter run

The double (tests/loopback.py, OpenAI's documented chat.completion.chunk stream) runs
in this process and answers every request at once with an 8-token stream; the session
under test runs in a subprocess, as a user's would, with the default meters. Each test
makes its generations and appends its own probe to a file: resident memory, open file
descriptors and threads of the pytest process, and the time of every generation.

Printed, both sides from the same run: RSS at the first and at the last test (target:
growth under 100 MB), the median time per generation over the first and the last 1,000
(target: no growth beyond noise), file descriptors and threads at start and end (no
leak), the session's peak RSS including report writing, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from loopback import LoopbackServer, stream

TEST_FILE = """
import json, os, threading, time
import pytest

OUT = os.environ["SOAK_OUT"]
PER_TEST = int(os.environ["SOAK_PER_TEST"])


def _probe():
    with open("/proc/self/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
    }


@pytest.mark.parametrize("i", range(int(os.environ["SOAK_TESTS"])))
def test_soak(llm, i):
    start = _probe()
    times = []
    for _ in range(PER_TEST):
        t0 = time.perf_counter()
        gen = llm.generate("Say hello.", max_tokens=8)
        times.append(time.perf_counter() - t0)
        assert gen.finish_reason == "stop"
    with open(OUT, "a") as out:
        out.write(json.dumps({"i": i, "start": start, "end": _probe(), "times": times}) + "\\n")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=100_000)
    parser.add_argument("--per-test", type=int, default=100)
    args = parser.parse_args()
    tests = max(1, args.generations // args.per_test)
    # The double keeps no request: its own growth would slow its answers over time.
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer(keep_requests=False) as server:
        server.default = stream(["Hello", ",", " wor", "ld", "!", " How", " are", " you"])
        folder = Path(tmp)
        (folder / "test_soak.py").write_text(textwrap.dedent(TEST_FILE), encoding="utf-8")
        out = folder / "probes.jsonl"
        env = {
            **os.environ,
            "SOAK_OUT": str(out),
            "SOAK_TESTS": str(tests),
            "SOAK_PER_TEST": str(args.per_test),
            "LLMLAB_VLLM_BASE_URL": server.base_url,
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--llm-models=vllm:soak", "--llm-baseline-s=0", "test_soak.py"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=folder, env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            return 1
        probes = sorted((json.loads(line) for line in out.open()), key=lambda p: p["i"])
        records = sum(1 for _ in (folder / "reports" / "results.jsonl").open())
    times = [t for probe in probes for t in probe["times"]]
    window = min(1000, len(times) // 2)
    first, last = probes[0], probes[-1]
    growth = last["end"]["rss_mb"] - first["start"]["rss_mb"]
    early, late = statistics.median(times[:window]), statistics.median(times[-window:])
    print(f"generations: {len(times):,} in {len(probes):,} tests, {records:,} records written")
    print(f"wall: {wall:.1f} s ({wall / len(times) * 1e3:.2f} ms per generation, all in)")
    print(
        f"RSS: {first['start']['rss_mb']:.1f} MB at the first test, "
        f"{last['end']['rss_mb']:.1f} MB after the last: growth {growth:+.1f} MB (target < 100)"
    )
    print(f"session peak RSS (report writing included): {peak_mb:.1f} MB")
    print(
        f"median per generation: first {window:,} {early * 1e3:.3f} ms, last {window:,} "
        f"{late * 1e3:.3f} ms: ratio {late / early:.3f}"
    )
    print(
        f"file descriptors: {first['start']['fds']} -> {last['end']['fds']}; "
        f"threads: {first['start']['threads']} -> {last['end']['threads']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
