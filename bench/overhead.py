"""Measure what pytest-llmlab adds on top of a bare streamed request.

    python bench/overhead.py [--rounds 20] [--tokens 64] [--warmup 2] [--json]

Starts the embedded llama.cpp server once (``local:smollm2-135m``, pulled into
``$LLMLAB_HOME`` if needed), then times, in interleaved rounds (which path goes first
alternates every round):

* plugin: ``LLM.generate(prompt, max_tokens=N, temperature=0, seed=1)``: request
  building, SSE parsing, chunk decoding, Generation assembly;
* direct: one raw httpx streaming POST of the exact same JSON body to
  ``<base_url>/chat/completions``, reading every SSE line until ``[DONE]``.

It reports the median seconds of each path, and the median and quartiles of the
per-round ratio plugin/direct. Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from pytest_llmlab.energy.meters import select_meters

PROMPT = (
    "Write a numbered list of 60 different fruits, one per line, with a short "
    "description of each. Do not stop early."
)
TARGET_RATIO = 1.02


def _payloads(client: Any, url: str, body: dict[str, Any]) -> Iterator[str]:
    """The ``data:`` payloads of one raw streamed POST, up to ``[DONE]``."""
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            yield payload


def _direct(client: Any, url: str, body: dict[str, Any]) -> tuple[float, str | None]:
    """One raw streamed POST; returns (seconds, the last data payload before [DONE])."""
    last: str | None = None
    start = time.perf_counter()
    for payload in _payloads(client, url, body):
        last = payload
    return time.perf_counter() - start, last


def _direct_text(client: Any, url: str, body: dict[str, Any]) -> tuple[str, int | None]:
    """Untimed: the direct path's full answer text and completion token count."""
    parts: list[str] = []
    tokens: int | None = None
    for payload in _payloads(client, url, body):
        chunk = json.loads(payload)
        for choice in chunk.get("choices") or ():
            parts.append((choice.get("delta") or {}).get("content") or "")
        if chunk.get("usage"):
            tokens = chunk["usage"].get("completion_tokens")
    return "".join(parts), tokens


def _usage_tokens(payload: str | None) -> int | None:
    if payload is None:
        return None
    usage = json.loads(payload).get("usage") or {}
    return usage.get("completion_tokens")


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    import httpx

    from pytest_llmlab.llm import LLM
    from pytest_llmlab.models.local import EmbeddedLlamaCpp
    from pytest_llmlab.models.spec import parse_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (at least 20)")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per generation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 20:
        parser.error("--rounds must be at least 20")

    spec = parse_spec("local:smollm2-135m")
    provider = EmbeddedLlamaCpp(
        model=spec.model,
        display=spec.display,
        threads=args.threads,
        ctx=2048,
        timeout_s=120,
        announce=lambda message: print(message, file=sys.stderr),
    )
    # The plugin path as a test gets it: metered by the session's auto-selected meters.
    meters = select_meters(("auto",))
    print(f"meters: {meters.description}", file=sys.stderr)
    llm = LLM(model_spec=spec, temperature=0.0, provider=provider, meters=meters)
    client: httpx.Client | None = None
    wall_start = time.perf_counter()
    try:
        started = time.perf_counter()
        provider.ensure_available()
        startup_s = time.perf_counter() - started
        options: dict[str, Any] = {"max_tokens": args.tokens, "temperature": 0, "seed": 1}
        request = llm.build_request(PROMPT, **options)
        body = provider.request_body(request)
        url = f"{provider.base_url}/chat/completions"
        # Like the plugin's own client for a loopback URL: keep-alive, no proxy.
        client = httpx.Client(
            headers={"Accept": "text/event-stream"}, timeout=httpx.Timeout(120), trust_env=False
        )

        # Untimed check: both paths send the same thing and get the same answer.
        check = llm.generate(PROMPT, **options)
        direct_text, direct_tokens = _direct_text(client, url, body)
        same_text = check.text == direct_text

        for _ in range(args.warmup):
            llm.generate(PROMPT, **options)
            _direct(client, url, body)

        plugin_s: list[float] = []
        direct_s: list[float] = []
        ratios: list[float] = []
        plugin_counts: set[int | None] = set()
        direct_counts: set[int | None] = set()
        for round_no in range(args.rounds):
            order = ("plugin", "direct") if round_no % 2 == 0 else ("direct", "plugin")
            timed: dict[str, float] = {}
            for path in order:
                if path == "plugin":
                    t0 = time.perf_counter()
                    generation = llm.generate(PROMPT, **options)
                    timed[path] = time.perf_counter() - t0
                    plugin_counts.add(generation.usage.completion_tokens)
                else:
                    seconds, last = _direct(client, url, body)
                    timed[path] = seconds
                    direct_counts.add(_usage_tokens(last))
            plugin_s.append(timed["plugin"])
            direct_s.append(timed["direct"])
            ratios.append(timed["plugin"] / timed["direct"])
    finally:
        llm.close()
        provider.close()
        if client is not None:
            client.close()

    wall_s = time.perf_counter() - wall_start
    p25, p75 = _quartiles(ratios)
    median_ratio = statistics.median(ratios)
    met = median_ratio <= TARGET_RATIO
    result = {
        "model": spec.spec,
        "threads": args.threads,
        "ctx": 2048,
        "max_tokens": args.tokens,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "startup_s": round(startup_s, 3),
        "wall_s": round(wall_s, 1),
        "completion_tokens": {
            "plugin": sorted(plugin_counts, key=lambda c: -1 if c is None else c),
            "direct": sorted(direct_counts, key=lambda c: -1 if c is None else c),
            "check_plugin": check.usage.completion_tokens,
            "check_direct": direct_tokens,
        },
        "finish_reason": check.finish_reason,
        "same_text": same_text,
        "plugin_median_s": statistics.median(plugin_s),
        "direct_median_s": statistics.median(direct_s),
        "plugin_min_max_s": [min(plugin_s), max(plugin_s)],
        "direct_min_max_s": [min(direct_s), max(direct_s)],
        "ratio_median": median_ratio,
        "ratio_p25": p25,
        "ratio_p75": p75,
        # Robust to a busy machine: the fastest run of each path, compared.
        "ratio_of_minima": min(plugin_s) / min(direct_s),
        "target_ratio": TARGET_RATIO,
        "target_met": met,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    tokens = result["completion_tokens"]
    print(f"model {spec.spec}, {args.threads} threads, ctx 2048, max_tokens {args.tokens}")
    print(
        f"server start: {startup_s:.2f} s; {args.rounds} rounds after {args.warmup} warm-up; "
        f"wall {wall_s:.1f} s"
    )
    print(
        f"completion tokens: plugin {tokens['plugin']}, direct {tokens['direct']} "
        f"(finish_reason {check.finish_reason!r}; same text both paths: {same_text})"
    )
    print(
        f"plugin median:  {result['plugin_median_s']:.4f} s "
        f"(min {min(plugin_s):.4f}, max {max(plugin_s):.4f})"
    )
    print(
        f"direct median:  {result['direct_median_s']:.4f} s "
        f"(min {min(direct_s):.4f}, max {max(direct_s):.4f})"
    )
    print(f"ratio plugin/direct: median {median_ratio:.4f}, p25 {p25:.4f}, p75 {p75:.4f}")
    print(f"ratio of minima (fastest plugin / fastest direct): {result['ratio_of_minima']:.4f}")
    print(
        f"target: median ratio within 2% (<= {TARGET_RATIO:.2f}): "
        f"{'met' if met else 'NOT met'} ({median_ratio:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
