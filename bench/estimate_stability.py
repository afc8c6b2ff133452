"""How much a busy neighbour moves the CPU estimate, per process and machine-wide.

    python bench/estimate_stability.py [--generations 20] [--tokens 32] [--threads 1] [--json]

Starts the embedded llama.cpp server once (``local:smollm2-135m``, pulled into
``$LLMLAB_HOME`` if needed) and runs the same generation (temperature 0, fixed seed)
``--generations`` times in each of two conditions:

* idle: nothing else started by the bench;
* busy: one CPU-bound process (``python -c "while True: pass"``) on another core, killed
  afterwards.

Around every generation both CPU estimates are sampled, so both sides come from the
same runs: the per-process one (this process's CPU time, what the embedded model's
readings use) and the machine-wide one (``/proc/stat`` busy time without steal and
guest, what a local server in another process needs). For each condition and scope it
prints the median and the coefficient of variation (stdev / mean) of Wh per 1000
completion tokens, and how far the busy median moved from the idle one. Target: the
per-process median moves under 10 %.

With at least two CPUs the bench pins itself (and so llama.cpp's threads) to the first
CPU and the neighbour to the second (``--no-pin`` to leave scheduling alone), so the
neighbour competes for the machine, not for our core. Run on demand; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from pytest_llmlab.energy.cpu import CpuEstimateMeter, CpuScope

PROMPT = "What is the capital of France? Answer in one word."
TARGET_MOVE = 0.10
SCOPES: tuple[CpuScope, ...] = ("process", "machine")


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if len(values) > 1 and mean > 0 else float("nan")


def _neighbour(cpu: int | None) -> subprocess.Popen[bytes]:
    """One CPU-bound process, pinned to `cpu` where given; spinning when this returns."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(process.pid, {cpu})
    time.sleep(0.5)
    return process


def _condition(
    llm: Any, meters: dict[CpuScope, CpuEstimateMeter], options: dict[str, Any], n: int
) -> dict[str, Any]:
    """`n` generations, each metered by both scopes: Wh/1k per scope, and the tokens."""
    wh_per_1k: dict[str, list[float]] = {scope: [] for scope in SCOPES}
    tokens: set[int] = set()
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    for _ in range(n):
        before = {scope: meter.sample()[0].joules for scope, meter in meters.items()}
        generation = llm.generate(PROMPT, **options)
        after = {scope: meter.sample()[0].joules for scope, meter in meters.items()}
        completion = generation.usage.completion_tokens
        tokens.add(completion)
        for scope in SCOPES:
            joules = after[scope] - before[scope]
            wh_per_1k[scope].append(joules / 3600 / completion * 1000)
    summary: dict[str, Any] = {"loadavg_1m_at_start": load, "completion_tokens": sorted(tokens)}
    for scope in SCOPES:
        values = wh_per_1k[scope]
        summary[scope] = {"median": statistics.median(values), "cv": _cv(values)}
    return summary


def main(argv: list[str] | None = None) -> int:
    from pytest_llmlab.llm import LLM
    from pytest_llmlab.models.local import EmbeddedLlamaCpp
    from pytest_llmlab.models.spec import parse_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=20, help="per condition (>= 5)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per generation")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed generations first")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.generations < 5:
        parser.error("--generations must be at least 5")
    if not os.path.exists("/proc/stat"):
        parser.error("the machine-wide estimate needs /proc/stat (Linux)")

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    if pin:
        os.sched_setaffinity(0, {cpus[0]})  # llama.cpp's threads, started later, inherit it
    meters: dict[CpuScope, CpuEstimateMeter] = {
        scope: CpuEstimateMeter(scope=scope) for scope in SCOPES
    }
    spec = parse_spec("local:smollm2-135m")
    provider = EmbeddedLlamaCpp(
        model=spec.model,
        display=spec.display,
        threads=args.threads,
        ctx=2048,
        timeout_s=120,
        announce=lambda message: print(message, file=sys.stderr),
    )
    llm = LLM(model_spec=spec, temperature=0.0, provider=provider)
    options: dict[str, Any] = {"max_tokens": args.tokens, "temperature": 0, "seed": 1}
    results: dict[str, Any] = {}
    neighbour: subprocess.Popen[bytes] | None = None
    try:
        provider.ensure_available()
        for _ in range(args.warmup):
            llm.generate(PROMPT, **options)
        results["idle"] = _condition(llm, meters, options, args.generations)
        neighbour = _neighbour(cpus[1] if pin else None)
        results["busy"] = _condition(llm, meters, options, args.generations)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        llm.close()
        provider.close()
        for meter in meters.values():
            meter.close()

    moves = {
        scope: results["busy"][scope]["median"] / results["idle"][scope]["median"] - 1
        for scope in SCOPES
    }
    result = {
        "model": spec.spec,
        "cpu": meters["process"].model,
        "watts_per_logical_cpu": meters["process"].watts,
        "cpus": len(cpus) or os.cpu_count(),
        "pinned": f"bench on CPU {cpus[0]}, neighbour on CPU {cpus[1]}" if pin else "no",
        "threads": args.threads,
        "max_tokens": args.tokens,
        "generations": args.generations,
        **results,
        "median_move": moves,
        "target_move": TARGET_MOVE,
        "target_met": abs(moves["process"]) < TARGET_MOVE,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{spec.spec}, {result['cpus']} CPUs ({result['cpu']}), "
        f"{result['watts_per_logical_cpu']:g} W per logical CPU, threads={args.threads}, "
        f"max_tokens={args.tokens}, {args.generations} generations per condition, "
        f"pinned: {result['pinned']}"
    )
    print(f"{'condition':<10} {'scope':<8} {'median Wh/1k':>13} {'CV':>7}  tokens  load")
    for condition in ("idle", "busy"):
        row = results[condition]
        for scope in SCOPES:
            figures = row[scope]
            print(
                f"{condition:<10} {scope:<8} {figures['median']:>13.5f} {figures['cv']:>7.1%}  "
                f"{row['completion_tokens']}  {row['loadavg_1m_at_start']}"
            )
    for scope in SCOPES:
        print(f"busy vs idle median, {scope}: {moves[scope]:+.1%}")
    verdict = "met" if result["target_met"] else "NOT met"
    print(f"target: per-process median moves under {TARGET_MOVE:.0%}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
