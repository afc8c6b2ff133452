"""Cassette replay speed: recorded generations through `LLM.generate` vs a bare parse.

    python bench/replay.py                       # 1,000 generations, 5 rounds
    python bench/replay.py --rounds 1 --profile  # one round, then one profiled replay

Records ``--generations`` distinct generations (default 1,000) of ``--tokens`` tokens
(64) with top-``--top`` logprobs (5) from the OpenAI-format loopback double
(tests/loopback.py, run in a child process) into a temporary cassette
(``--llm-record=new``; not timed), stops the double, then times in the same process,
alternating which goes first each round:

* plugin: a fresh `ProviderPool` and `Cassettes` (``mode="none"``, ``speed=0``), one
  `LLM` without meters, and every recorded request again through ``llm.generate``:
  the cassette file's loading (JSON lines, frame decoding) on the first lookup, then
  per request the request and its key, the replay transport (httpx), SSE parsing, chunk
  checks and assembly, and the Generation with the recorded timings, energy and
  backend facts;
* bare: the same cassette file read with a plain loop: ``json.loads`` of each line,
  then of each frame's ``data:`` payload, collecting each generation's content and
  every token's logprob and top alternatives (kept, as ``llm.generations`` keeps its).

A third side, ``msgspec``, is the bare loop with msgspec's JSON decoder, the parser the
plugin uses (`pytest_llmlab.wirejson`): the plugin against it shows what the plugin
costs beyond the parse alone (printed, no target).

Printed: each side's best round, in seconds (wall; the file's loading apart; the CPU
time and the cyclic garbage collector's share beside it) and microseconds per token,
their ratio per token (the median over rounds of each round's plugin/bare: the two run
back to back, so a drift in the machine's speed cancels), and PASS/MISS for the targets: the 1,000 replays under 3 s, and the plugin
under 1.5x the bare loop per token. The replayed texts and token counts are checked
against the recorded ones (a check, not a timing; the exit status is 1 when they
differ, 0 otherwise, a missed target included). ``--profile`` then runs one more
replay under cProfile and prints the top functions by cumulative and by own time.
Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Found with tests/ on mypy's command line (as .ci/run checks), not without.
from loopback import LoopbackServer, stream  # type: ignore[import-not-found, unused-ignore]

from pytest_llmlab.cassettes import Cassettes, ItemTape
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.spec import ModelSpec, parse_spec

TOTAL_TARGET_S = 3.0
RATIO_TARGET = 1.5
SPEC = "vllm:tiny"
TEST_ID = "bench::replay"
#: Where the replay's provider would connect: nothing listens there, and nothing tries.
NOWHERE = "http://127.0.0.1:9/v1"

#: One token as the bare loop keeps it: text, logprob, (text, logprob) alternatives.
BareToken = tuple[str, float, list[tuple[str, float]]]


@dataclass
class Round:
    """One timed pass over every recording (seconds) and what it produced."""

    load_s: float
    total_s: float
    cpu_s: float
    gc_s: float
    gc_full: int
    texts: list[str]
    tokens: int


@dataclass
class Side:
    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def best(self) -> Round:
        return min(self.rounds, key=lambda r: r.total_s)


class GcClock:
    """Time the cyclic garbage collector spends, and its full collections, while on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> Self:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _prompt(index: int) -> str:
    return f"prompt {index}"


def _tokens(index: int, count: int) -> list[str]:
    """The tokens of generation ``index``: distinct per generation, with what JSON
    escapes (a quote, a newline, a non-ASCII letter), as real answers have."""
    shapes = (" w{i}.{j}", ' "q{j}"', "\n{j}", " é{i}")
    return [shapes[j % len(shapes)].format(i=index, j=j) for j in range(count)]


# -- recording (not timed) -----------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """``--serve``: the double, for the recording parent: its base URL on stdout, then
    every scripted answer until the parent closes stdin."""
    with LoopbackServer(keep_requests=False) as server:
        server.play(*(stream(_tokens(i, args.tokens)) for i in range(args.generations)))
        print(server.base_url, flush=True)
        sys.stdin.read()
        errors = server.errors
    if errors:
        print(f"the loopback double failed: {errors!r}", file=sys.stderr)
        return 1
    return 0


def record(folder: Path, root: Path, test_file: Path, args: argparse.Namespace) -> list[str]:
    """Record every generation; the recorded texts. The double runs in a child process,
    so that its side of each request runs beside this one (on another core)."""
    spec = parse_spec(SPEC)
    texts: list[str] = []
    command = [sys.executable, __file__, "--serve", "--generations", str(args.generations),
               "--tokens", str(args.tokens)]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        base_url = child.stdout.readline().strip()
        if not base_url:
            raise SystemExit("the loopback double did not start")
        pool = ProviderPool(base_urls={"vllm": base_url}, timeout_s=10.0)
        cassettes = Cassettes(mode="new", folder=str(folder), speed=0.0, rootdir=root)
        tape = ItemTape(
            test_id=TEST_ID, test_file=test_file, cassettes=cassettes, run=None,
            replayer=pool.replayer,
        )  # fmt: skip
        llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape)
        try:
            for index in range(args.generations):
                generation = llm.generate(
                    _prompt(index), max_tokens=args.tokens, top_logprobs=args.top
                )
                if generation.replayed or generation.finish_reason != "stop":
                    raise SystemExit(f"recording {index} failed: {generation!r}")
                texts.append(generation.text)
        finally:
            llm.close()
            cassettes.close()
            pool.close()
            child.stdin.close()
        if child.wait(timeout=30) != 0:
            raise SystemExit("the loopback double failed (its error is above)")
    return texts


# -- the two timed paths -------------------------------------------------------------


def replay_once(
    spec: ModelSpec, folder: Path, root: Path, test_file: Path, args: argparse.Namespace
) -> Round:
    """Every recording replayed through ``llm.generate``, from a fresh pool and
    cassettes (``--llm-record=none``, speed 0), without meters."""
    pool = ProviderPool(base_urls={"vllm": NOWHERE}, timeout_s=10.0)
    texts: list[str] = []
    tokens = 0
    try:
        with GcClock() as clock:
            cpu = time.process_time()
            start = time.perf_counter()
            cassettes = Cassettes(mode="none", folder=str(folder), speed=0.0, rootdir=root)
            tape = ItemTape(
                test_id=TEST_ID, test_file=test_file, cassettes=cassettes, run=None,
                replayer=pool.replayer,
            )  # fmt: skip
            llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape)
            # The file is read on the first lookup: done apart, so that its share shows.
            cassettes.file_for(test_file).find("", 0)
            loaded = time.perf_counter()
            for index in range(args.generations):
                generation = llm.generate(
                    _prompt(index), max_tokens=args.tokens, top_logprobs=args.top
                )
                texts.append(generation.text)
                tokens += len(generation.tokens)
            end = time.perf_counter()
            cpu = time.process_time() - cpu
        llm.close()
        cassettes.close()
    finally:
        pool.close()
    return Round(loaded - start, end - start, cpu, clock.seconds, clock.full, texts, tokens)


def bare_once(path: Path, loads: Callable[[str], Any] = json.loads) -> Round:
    """The same cassette file with a plain ``loads`` loop (`json.loads`; msgspec's
    decoder for the line that shows what the plugin's parser alone gives)."""
    texts: list[str] = []
    kept: list[list[BareToken]] = []
    tokens = 0
    with GcClock() as clock:
        cpu = time.process_time()
        start = time.perf_counter()
        with path.open(encoding="utf-8") as handle:
            entries = [loads(line) for line in handle if line.strip()]
        loaded = time.perf_counter()
        for entry in entries:
            parts: list[str] = []
            logprobs: list[BareToken] = []
            for _offset, frame in entry["frames"]:
                for line in frame.splitlines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[6:]
                    if payload == "[DONE]":
                        break
                    chunk = loads(payload)
                    for choice in chunk.get("choices") or ():
                        parts.append((choice.get("delta") or {}).get("content") or "")
                        for token in (choice.get("logprobs") or {}).get("content") or ():
                            top = [(t["token"], t["logprob"]) for t in token["top_logprobs"]]
                            logprobs.append((token["token"], token["logprob"], top))
            texts.append("".join(parts))
            kept.append(logprobs)
            tokens += len(logprobs)
        end = time.perf_counter()
        cpu = time.process_time() - cpu
    return Round(loaded - start, end - start, cpu, clock.seconds, clock.full, texts, tokens)


def profile_replay(
    spec: ModelSpec, folder: Path, root: Path, test_file: Path, args: argparse.Namespace
) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    replay_once(spec, folder, root, test_file, args)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"\n-- cProfile of one replay of {args.generations:,}: top {args.top_n} by {order}")
        stats.sort_stats(order).print_stats(args.top_n)


# -- the report ----------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def _line(side: Side) -> str:
    best = side.best
    rounds = ", ".join(f"{r.total_s:.3f}" for r in side.rounds)
    per_token = best.total_s / max(1, best.tokens) * 1e6
    return (
        f"  {side.name:<6} {best.total_s:6.3f} s (file load {best.load_s:.3f}, rest "
        f"{best.total_s - best.load_s:.3f}; cpu {best.cpu_s:.3f}, cyclic gc {best.gc_s:.3f} "
        f"in {best.gc_full} full) {per_token:6.2f} us/token [rounds: {rounds}]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    parser.add_argument("--top", type=int, default=5, help="top_logprobs per token")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each path")
    parser.add_argument("--profile", action="store_true", help="then profile one replay")
    parser.add_argument("--top-n", type=int, default=25, help="profile rows shown")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)
    if args.generations < 1 or args.tokens < 1 or args.rounds < 1:
        parser.error("--generations, --tokens and --rounds must be at least 1")

    spec = parse_spec(SPEC)
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmlab-replay-") as tmp:
        root = Path(tmp)
        folder = root / "cassettes"
        test_file = root / "bench_replay.py"
        started = time.perf_counter()
        recorded = record(folder, root, test_file, args)
        record_s = time.perf_counter() - started
        reader = Cassettes(mode="none", folder=str(folder), speed=0.0, rootdir=root)
        path = reader.file_for(test_file).path
        with path.open(encoding="utf-8") as handle:
            entries = sum(1 for line in handle if line.strip())
        print(
            f"recorded {args.generations:,} generations x {args.tokens} tokens, top-{args.top} "
            f"logprobs, in {record_s:.1f} s (not timed): {entries:,} entries, "
            f"{path.stat().st_size / 1e6:.1f} MB",
            flush=True,
        )

        plugin, bare, fast = Side("plugin"), Side("bare"), Side("msgspec")
        fast_loads = msgspec.json.Decoder().decode
        for round_no in range(args.rounds):
            for side in (plugin, bare) if round_no % 2 == 0 else (bare, plugin):
                gc.collect()
                if side is plugin:
                    side.rounds.append(replay_once(spec, folder, root, test_file, args))
                else:
                    side.rounds.append(bare_once(path))
            gc.collect()
            fast.rounds.append(bare_once(path, fast_loads))

        expected = args.generations * args.tokens
        same_text = all(r.texts == recorded for r in plugin.rounds)
        same_bare = all(r.texts == recorded for r in bare.rounds)
        counts_ok = all(r.tokens == expected for r in (*plugin.rounds, *bare.rounds))
        print(
            f"check: replayed texts equal the recorded ones: {same_text}; bare texts too: "
            f"{same_bare}; tokens plugin {plugin.best.tokens:,}, bare {bare.best.tokens:,} "
            f"(expected {expected:,})"
        )
        print(f"best of {args.rounds} round(s) each, alternating which goes first:")
        print(_line(plugin))
        print(_line(bare))
        print(_line(fast))
        p, b = plugin.best, bare.best
        best_ratio = (p.total_s / max(1, p.tokens)) / (b.total_s / max(1, b.tokens))
        # Each round's two sides ran back to back: their ratio is what a noisy machine
        # (a shared VM whose speed drifts by tens of percent) leaves comparable.
        paired = sorted(
            (q.total_s / max(1, q.tokens)) / (c.total_s / max(1, c.tokens))
            for q, c in zip(plugin.rounds, bare.rounds, strict=True)
        )
        ratio = statistics.median(paired)
        print(
            f"ratio plugin/bare per token: {ratio:.2f}x, the median of each round's pair "
            f"[{', '.join(f'{r:.2f}' for r in paired)}]; best against best {best_ratio:.2f}x "
            f"(file load {p.load_s / b.load_s:.2f}x, "
            f"rest {(p.total_s - p.load_s) / (b.total_s - b.load_s):.2f}x; "
            f"cpu {p.cpu_s / b.cpu_s:.2f}x)"
        )
        to_fast = statistics.median(
            (q.total_s / max(1, q.tokens)) / (c.total_s / max(1, c.tokens))
            for q, c in zip(plugin.rounds, fast.rounds, strict=True)
        )
        print(
            f"the plugin reads JSON with msgspec (pytest_llmlab.wirejson): against a bare "
            f"loop with msgspec's decoder too it is {to_fast:.2f}x per token (no target)"
        )
        print(
            f"target: {args.generations:,} replays under {TOTAL_TARGET_S:g} s: "
            f"{_verdict(p.total_s < TOTAL_TARGET_S)} ({p.total_s:.3f} s)"
        )
        print(
            f"target: plugin under {RATIO_TARGET:g}x the bare loop per token: "
            f"{_verdict(ratio < RATIO_TARGET)} ({ratio:.2f}x)"
        )
        if args.profile:
            gc.collect()
            profile_replay(spec, folder, root, test_file, args)
    print(f"\nwall {time.perf_counter() - wall:.1f} s")
    return 0 if same_text and same_bare and counts_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
