"""What the client costs per generation: `llm.generate` (meters on, meters off) vs a
bare httpx + ``json.loads`` loop, all against one stream served instantly.

    python bench/client_cost.py                  # 200 generations, 5 rounds
    python bench/client_cost.py --generations 50 --rounds 3

A child process serves one fixed answer on loopback, as fast as it can: an OpenAI
``chat.completion.chunk`` event stream of ``--tokens`` tokens (128) with top-``--top``
(5) logprobs each, its bytes built once (the form of OpenAI's streaming reference,
https://platform.openai.com/docs/api-reference/chat-streaming, as tests/loopback.py
sends it), over HTTP/1.1 keep-alive. In this process, ``--generations`` requests per
round through each of the three, in blocks of ``--block`` (10) taking turns, which goes
first rotating block by block (so a drift in the machine's speed falls on all three):

* ``meters on``: an `LLM` on the ``vllm:`` provider (loopback: metered) with a
  `MeterSet` of the CPU estimate meter, as a session on a machine without RAPL has;
* ``meters off``: the same `LLM` without meters;
* ``bare``: ``httpx.Client.stream`` and ``iter_lines``, ``json.loads`` of each
  ``data:`` line, keeping each token's text, logprob and alternatives.

Printed: per side the median over rounds of microseconds per token and per request;
the ratio of meters on to bare per token (the median of each round's pair: they ran
back to back), against the target of 1.5x; and what the meters add per generation
(on minus off, the median of each round's difference) against 0.2 ms, and the meters'
own work per generation measured alone (a window opened, marked and closed, 1,000
times), which that difference hides in the machine's noise. Both sides of every ratio
come from this run. Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from pytest_llmlab.energy.base import TokenSegment
from pytest_llmlab.energy.cpu import CpuEstimateMeter
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.spec import parse_spec

SPEC = "vllm:bench"
RATIO_TARGET = 1.5
METERS_TARGET_MS = 0.2


def event_stream(tokens: int, top: int) -> bytes:
    """The answer: a role chunk, one chunk per token (with its logprobs), a finish
    chunk, a usage chunk and ``[DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                 "created": 1, "model": "bench", "choices": choices, **extra}  # fmt: skip
        return f"data: {json.dumps(chunk)}\n\n"

    parts = [event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])]
    for j in range(tokens):
        text = f" w{j}"
        alternatives = [{"token": f"{text}{k}" if k else text, "logprob": -0.1 * k - 0.01,
                         "bytes": list(text.encode())} for k in range(top)]  # fmt: skip
        logprobs = {"content": [{"token": text, "logprob": -0.01, "bytes": list(text.encode()),
                                 "top_logprobs": alternatives}]}  # fmt: skip
        parts.append(event([{"index": 0, "delta": {"content": text}, "logprobs": logprobs,
                             "finish_reason": None}]))  # fmt: skip
    parts.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
    parts.append(event([], usage=usage))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def serve(args: argparse.Namespace) -> int:
    """``--serve``: the server, for the parent: its base URL on stdout, then the same
    answer to every POST until the parent closes stdin."""
    body = event_stream(args.tokens, args.top)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # As servers do: else a short answer's body waits (Nagle) for the ACK of its
        # headers, which the client delays by up to 40 ms.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # the provider's probe of /v1/models
            data = json.dumps({"object": "list", "data": [{"id": "bench"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


def plugin_s(llm: LLM, args: argparse.Namespace, count: int) -> tuple[float, int]:
    """Seconds for ``count`` requests through ``llm.generate``, and the tokens received."""
    tokens = 0
    started = time.perf_counter()
    for _ in range(count):
        generation = llm.generate("hi", max_tokens=args.tokens, top_logprobs=args.top)
        tokens += len(generation.tokens)
    elapsed = time.perf_counter() - started
    llm.generations.clear()  # each block starts as the first did
    return elapsed, tokens


def bare_s(
    client: httpx.Client, url: str, args: argparse.Namespace, count: int
) -> tuple[float, int]:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "logprobs": True, "top_logprobs": args.top, "max_tokens": args.tokens}  # fmt: skip
    tokens = 0
    started = time.perf_counter()
    for _ in range(count):
        parts: list[str] = []
        kept: list[tuple[str, float, list[tuple[str, float]]]] = []
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or ():
                    parts.append((choice.get("delta") or {}).get("content") or "")
                    for token in (choice.get("logprobs") or {}).get("content") or ():
                        top = [(t["token"], t["logprob"]) for t in token["top_logprobs"]]
                        kept.append((token["token"], token["logprob"], top))
        tokens += len(kept)
    return time.perf_counter() - started, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--block", type=int, default=10, help="generations of one side before the next's turn"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)
    if min(args.generations, args.tokens, args.rounds, args.block) < 1:
        parser.error("--generations, --tokens, --rounds and --block must be at least 1")

    command = [sys.executable, __file__, "--serve", "--tokens", str(args.tokens),
               "--top", str(args.top)]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        url = child.stdout.readline().strip()
        spec = parse_spec(SPEC)
        pool = ProviderPool(base_urls={"vllm": url}, timeout_s=30.0)
        meters = MeterSet([CpuEstimateMeter()], "cpu estimate")
        metered = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), meters=meters)
        plain = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec))
        client = httpx.Client(timeout=30.0)
        sides: dict[str, list[tuple[float, int]]] = {"meters on": [], "meters off": [], "bare": []}
        try:
            for llm in (metered, plain):  # warm: connection, probe, first imports
                llm.generate("hi", max_tokens=args.tokens, top_logprobs=args.top)
                llm.generations.clear()
            bare_s(client, url, args, 3)
            order = list(sides)
            blocks = [args.block] * (args.generations // args.block)
            if args.generations % args.block:
                blocks.append(args.generations % args.block)
            for round_no in range(args.rounds):
                spent = dict.fromkeys(sides, (0.0, 0))
                # Short blocks of each side in turn: the machine's drift in speed
                # (a shared VM's tens of percent) falls on all three alike.
                for block_no, count in enumerate(blocks):
                    turn = (round_no + block_no) % 3
                    for name in order[turn:] + order[:turn]:
                        if name == "bare":
                            seconds, tokens = bare_s(client, url, args, count)
                        else:
                            llm = metered if name == "meters on" else plain
                            seconds, tokens = plugin_s(llm, args, count)
                        spent[name] = (spent[name][0] + seconds, spent[name][1] + tokens)
                for name, total in spent.items():
                    sides[name].append(total)
        finally:
            client.close()
            metered.close()
            plain.close()
            meters.close()
            pool.close()
            child.stdin.close()
        child.wait(timeout=30)

    expected = args.generations * args.tokens
    if any(tokens != expected for runs in sides.values() for _, tokens in runs):
        print(f"check failed: a side received other than {expected:,} tokens per round")
        return 1
    print(f"{args.generations} generations x {args.tokens} tokens, top-{args.top}, "
          f"{args.rounds} rounds (medians):")  # fmt: skip
    for name, runs in sides.items():
        per_token = statistics.median(s / expected * 1e6 for s, _ in runs)
        per_request = statistics.median(s / args.generations * 1e3 for s, _ in runs)
        print(f"  {name:<10} {per_token:7.2f} us/token  {per_request:6.3f} ms/request")
    ratios = sorted(
        on / bare for (on, _), (bare, _) in zip(sides["meters on"], sides["bare"], strict=True)
    )
    ratio = statistics.median(ratios)
    added_ms = statistics.median(
        (on - off) / args.generations * 1e3
        for (on, _), (off, _) in zip(sides["meters on"], sides["meters off"], strict=True)
    )
    print(
        f"ratio meters on / bare per token: {ratio:.2f}x [{', '.join(f'{r:.2f}' for r in ratios)}]"
    )
    print(f"target: within {RATIO_TARGET:g}x: {'PASS' if ratio <= RATIO_TARGET else 'MISS'}")
    print(f"meters add {added_ms:.3f} ms per generation (on - off): target under "
          f"{METERS_TARGET_MS:g} ms: {'PASS' if added_ms < METERS_TARGET_MS else 'MISS'}")  # fmt: skip
    window_ms = meter_window_ms(args.tokens)
    print(f"the meters' own work per generation (open, first token, close with its two "
          f"token segments; median of 5 x 1,000 windows): {window_ms:.3f} ms: target under "
          f"{METERS_TARGET_MS:g} ms: {'PASS' if window_ms < METERS_TARGET_MS else 'MISS'}")  # fmt: skip
    return 0


def meter_window_ms(tokens: int) -> float:
    """What a metered generation adds, measured alone: a window of the CPU estimate
    meter opened, marked at the first token and closed with prefill and decode segments
    (the on - off difference above carries the machine's noise of two whole sides)."""
    meters = MeterSet([CpuEstimateMeter()], "cpu estimate")
    runs: list[float] = []
    try:
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(1000):
                window = meters.open("bench")
                window.mark_first_token()
                now = time.monotonic_ns()
                window.close(
                    segments=[
                        TokenSegment(now - 2000, now - 1000, 8),
                        TokenSegment(now - 1000, now, tokens),
                    ],
                    completion_tokens=tokens,
                )
            runs.append((time.perf_counter() - started) / 1000 * 1e3)
    finally:
        meters.close()
    return statistics.median(runs)


if __name__ == "__main__":
    raise SystemExit(main())
