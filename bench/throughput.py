"""Throughput of ``--llm-concurrency``: one prompt suite at 1, 4 and 16 in flight.

    python bench/throughput.py                   # both parts
    python bench/throughput.py --no-embedded     # the loopback part only
    python bench/throughput.py --profile 16      # then one profiled session at 16

Part 1, a cloud-like server: a suite of ``--cases`` cases (64) against the loopback
double of the OpenAI chat-completions stream (tests/loopback.py, in this process: a
scripted double, not a model) serving ``vllm:tiny``, which answers every request with
a two-token stream after a fixed ``--latency`` (200 ms) before its first token. Each
session runs pytest in a subprocess in a temporary folder holding the suite, with
``-p no:xdist -p no:cacheprovider --llm-report-dir=<tmp>`` and ``--llm-concurrency``
1, 4 and 16. A conftest.py there records ``time.monotonic()`` at the start and end of
``pytest_runtestloop`` (the test loop alone: no interpreter or pytest start-up, no
collection, no end-of-session reports) and every item's outcome. Printed for each: the
loop's seconds and the whole subprocess's, the speedup over 1, and the ratio to the
ideal ``cases x latency / N``; PASS/MISS for the targets: a speedup of at least 12x at
16, and every ratio to the ideal under 1.25.

Part 2, the embedded model: ``--embedded-cases`` cases (16; max_tokens 32,
temperature 0, seed 0) on ``local:smollm2-135m`` with 1 and then 4 llama.cpp slots
(``--llm-concurrency`` 1 and 4). A Python test that runs first generates one token
through the ``llm`` fixture, so that the server's start (model load, warm-up) falls
before the timed part: the seconds from that test's end to the loop's end. Printed:
the completion tokens (from the run's results.jsonl) over those seconds for each, and
their ratio; what this CPU gives, no target (on a 2-core box 4 slots share the same two
cores). Skipped, saying why, without the model in the store or the embedded runtime.

Checks, not timings (the exit status is 1 when one fails, 0 otherwise, a missed target
included): every session exits 0 and every case passes with one record; the double
received exactly one request per case, each case's prompt once (a case generated ahead
is never generated again by its item). ``--profile N`` then reruns the loopback session
at N under cProfile (the main thread: where the items run) and prints the top
functions. Run on demand; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Found with tests/ on mypy's command line (as .ci/run checks), not without.
from loopback import LoopbackServer, stream  # type: ignore[import-not-found, unused-ignore]

from pytest_llmlab.models.store import list_stored

__all__ = ["main"]

SPEEDUP_TARGET = 12.0
SPEEDUP_AT = 16
IDEAL_RATIO_TARGET = 1.25
LOOPBACK_MODEL = "vllm:tiny"
EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_MODEL = f"local:{EMBEDDED_NAME}"
#: Plugins the inner runs do not need (as tests/suite_runs.py leaves out).
QUIET = ("-p", "no:hypothesispytest", "-p", "no:anyio")
ANSWER = ("The answer", " is 42.")

CONFTEST = '''
"""bench/throughput.py's probe: when the test loop starts and ends, each item's outcome."""
import json
import os
import time

import pytest

_marks = {}
_outcomes = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    profiled = os.environ.get("THROUGHPUT_PROFILE")
    if profiled:  # the test loop alone: no start-up, no reports
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    _marks["loop_start"] = time.monotonic()
    try:
        return (yield)
    finally:
        _marks["loop_end"] = time.monotonic()
        if profiled:
            profiler.disable()
            profiler.dump_stats(profiled)
        with open(os.environ["THROUGHPUT_PROBE"], "w", encoding="utf-8") as out:
            json.dump({**_marks, "outcomes": _outcomes}, out)


def pytest_runtest_logreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_runtest_logfinish(nodeid, location):
    _marks.setdefault("first_done", time.monotonic())
'''

WARM_TEST = '''
def test_warm(llm):
    """Starts the embedded server before the timed suite (one token)."""
    llm.generate("Say hi.", max_tokens=1)
'''


@dataclass
class Session:
    """One inner pytest session and what it left behind."""

    label: str
    returncode: int
    wall_s: float
    loop_s: float
    first_done_s: float
    outcomes: dict[str, str]
    records: list[dict[str, Any]]
    output: str
    posts: list[Any] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    def summary(self) -> str:
        counted = {o: self.count(o) for o in ("passed", "failed", "error", "skipped")}
        return ", ".join(f"{n} {o}" for o, n in counted.items() if n) or "nothing ran"


def _prompt(index: int) -> str:
    return f"question {index}"


def _embedded_prompt(index: int) -> str:
    return f"Write a numbered list of ten different fruits, starting the list at {index + 1}."


def write_suite(
    path: Path, name: str, defaults: dict[str, Any], cases: list[dict[str, Any]]
) -> None:
    """A YAML suite file (each mapping in JSON's flow style, which YAML reads)."""
    lines = [f"suite: {name}", f"defaults: {json.dumps(defaults)}", "cases:"]
    lines += [f"  - {json.dumps(case)}" for case in cases]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare(folder: Path) -> None:
    """The probe conftest, and an empty ini so that the folder is the rootdir."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conftest.py").write_text(CONFTEST.lstrip("\n"), encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def inner_env(base_url: str | None) -> dict[str, str]:
    """The environment of an inner run, as tests/loopback.py's ``point_vllm_at`` sets
    it: no stray ``LLMLAB_*`` or provider keys (the model store stays), no idle baseline."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("LLMLAB_") and name != "LLMLAB_HOME")
        and not name.endswith("_API_KEY")
        and name != "OPENAI_BASE_URL"
    }
    env["LLMLAB_BASELINE_S"] = "0"
    if base_url is not None:
        env["LLMLAB_VLLM_BASE_URL"] = base_url
    return env


def run_session(
    folder: Path,
    label: str,
    model: str,
    concurrency: int,
    targets: list[str],
    env: dict[str, str],
    *,
    extra: tuple[str, ...] = (),
    profile: Path | None = None,
) -> Session:
    """One pytest session in ``folder``, in a subprocess; its probe and records."""
    probe = folder / f"probe-{label}.json"
    reports = folder / f"reports-{label}"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
               *QUIET, f"--llm-models={model}", f"--llm-concurrency={concurrency}",
               f"--llm-report-dir={reports}", *extra, *targets]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=folder,
        env={
            **env,
            "THROUGHPUT_PROBE": str(probe),
            **({"THROUGHPUT_PROFILE": str(profile)} if profile is not None else {}),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    marks: dict[str, Any] = {}
    if probe.exists():
        marks = json.loads(probe.read_text(encoding="utf-8"))
    results = reports / "results.jsonl"
    records = []
    if results.exists():
        lines = results.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    start, end = marks.get("loop_start", 0.0), marks.get("loop_end", 0.0)
    return Session(
        label=label,
        returncode=done.returncode,
        wall_s=wall,
        loop_s=end - start,
        first_done_s=marks.get("first_done", start) - start,
        outcomes=marks.get("outcomes", {}),
        records=records,
        output=done.stdout + done.stderr,
    )


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def _last_user(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    users = [m.get("content") for m in messages or () if m.get("role") == "user"]
    return str(users[-1]) if users else ""


# -- part 1: the loopback double -----------------------------------------------------


def loopback_part(root: Path, args: argparse.Namespace) -> tuple[list[Session], list[str]]:
    """The suite at each concurrency; the sessions and the failed checks."""
    folder = root / "loopback"
    prepare(folder)
    cases = [
        {"id": f"c{i:03d}", "prompt": _prompt(i), "checks": [{"icontains": "answer"}]}
        for i in range(args.cases)
    ]
    write_suite(folder / "throughput.suite.yaml", "throughput", {"max_tokens": 16}, cases)
    expected_prompts = sorted(_prompt(i) for i in range(args.cases))
    sessions: list[Session] = []
    problems: list[str] = []
    with LoopbackServer() as server:
        server.default = stream(list(ANSWER), first_token_delay_s=args.latency)
        env = inner_env(server.base_url)
        for n in args.levels:
            before = len(server.posts)
            session = run_session(
                folder, f"n{n}", LOOPBACK_MODEL, n, ["throughput.suite.yaml"], env
            )
            session.posts = server.posts[before:]
            sessions.append(session)
            problems += check_loopback(session, args.cases, expected_prompts)
            print(
                f"  N={n:<3} loop {session.loop_s:6.3f} s (subprocess wall {session.wall_s:5.2f} s);"
                f" {session.summary()}; {len(session.records)} records; "
                f"{len(session.posts)} requests to the double",
                flush=True,
            )
        errors = server.errors
    if errors:
        problems.append(f"the loopback double itself failed: {errors!r}")
    return sessions, problems


def check_loopback(session: Session, cases: int, expected_prompts: list[str]) -> list[str]:
    problems: list[str] = []
    label = f"N={session.label[1:]}"
    all_passed = session.count("passed") == len(session.outcomes) == cases
    if session.returncode != 0 or not all_passed:
        problems.append(
            f"{label}: pytest exited {session.returncode} with {session.summary()} "
            f"(expected {cases} passed):\n{_tail(session.output)}"
        )
    passed_records = [r for r in session.records if r.get("outcome") == "passed"]
    if len(session.records) != cases or len(passed_records) != cases:
        problems.append(
            f"{label}: {len(session.records)} records, {len(passed_records)} passed "
            f"(expected {cases})"
        )
    prompts = sorted(_last_user(post.body) for post in session.posts)
    if len(session.posts) != cases or prompts != expected_prompts:
        repeated = len(prompts) - len(set(prompts))
        problems.append(
            f"{label}: the double received {len(session.posts)} requests for "
            f"{len(set(prompts))} distinct prompts ({repeated} repeated; expected {cases}, "
            "each case's prompt once)"
        )
    return problems


def report_loopback(sessions: list[Session], args: argparse.Namespace) -> None:
    base = next((s for s in sessions if s.label == "n1"), None)
    print(f"  {'N':>3} {'loop s':>8} {'ideal s':>8} {'ratio':>6} {'speedup vs 1':>13}")
    for n, session in zip(args.levels, sessions, strict=True):
        ideal = args.cases * args.latency / n
        versus = f"{base.loop_s / session.loop_s:12.2f}x" if base else f"{'-':>13}"
        print(f"  {n:>3} {session.loop_s:8.3f} {ideal:8.3f} {session.loop_s / ideal:6.2f} {versus}")
    top = next((s for s in sessions if s.label == f"n{SPEEDUP_AT}"), None)
    if base is not None and top is not None:
        speedup = base.loop_s / top.loop_s
        print(
            f"target: speedup at {SPEEDUP_AT} of at least {SPEEDUP_TARGET:g}x: "
            f"{_verdict(speedup >= SPEEDUP_TARGET)} ({speedup:.2f}x: {base.loop_s:.3f} s at 1, "
            f"{top.loop_s:.3f} s at {SPEEDUP_AT})"
        )
    for n, session in zip(args.levels, sessions, strict=True):
        ideal = args.cases * args.latency / n
        ratio = session.loop_s / ideal
        print(
            f"target: N={n} under {IDEAL_RATIO_TARGET:g}x the ideal {args.cases} x "
            f"{args.latency:g} / {n} = {ideal:.3f} s: {_verdict(ratio < IDEAL_RATIO_TARGET)} "
            f"({session.loop_s:.3f} s, {ratio:.2f}x)"
        )


# -- part 2: the embedded model ------------------------------------------------------


def embedded_unavailable() -> str | None:
    """Why the embedded part cannot run here; None when it can."""
    if find_spec("xllamacpp") is None:
        return "the embedded runtime is not installed (pip install 'pytest-llmlab[local]')"
    if not any(m.name == EMBEDDED_NAME for m in list_stored()):
        return (
            f"{EMBEDDED_MODEL} is not in the model store "
            f"(.venv/bin/llmlab models pull {EMBEDDED_NAME})"
        )
    return None


def embedded_part(root: Path, args: argparse.Namespace) -> list[str]:
    """1 vs 4 slots on the embedded model; the failed checks."""
    reason = embedded_unavailable()
    if reason is not None:
        print(f"  skipped: {reason}")
        return []
    folder = root / "embedded"
    prepare(folder)
    (folder / "test_warm.py").write_text(WARM_TEST.lstrip("\n"), encoding="utf-8")
    defaults = {
        "max_tokens": args.embedded_tokens,
        "temperature": 0,
        "seed": 0,
        "checks": [{"not_contains": "never-in-any-answer"}],
    }
    cases = [{"id": f"e{i:03d}", "prompt": _embedded_prompt(i)} for i in range(args.embedded_cases)]
    write_suite(folder / "embedded.suite.yaml", "throughput-embedded", defaults, cases)
    env = inner_env(None)
    problems: list[str] = []
    rates: dict[int, float] = {}
    for slots in (1, 4):
        session = run_session(
            folder, f"slots{slots}", EMBEDDED_MODEL, slots,
            ["test_warm.py", "embedded.suite.yaml"], env,
        )  # fmt: skip
        warm = next((o for nodeid, o in session.outcomes.items() if "test_warm" in nodeid), None)
        if warm != "passed":
            print(
                f"  skipped: {EMBEDDED_MODEL} did not load with {slots} slot(s) (the warm-up "
                f"test: {warm or 'did not run'}); the run's output ends:\n{_tail(session.output)}"
            )
            return problems
        suite = [r for r in session.records if "test_warm" not in str(r.get("test_id"))]
        tokens = sum(int(r.get("completion_tokens") or 0) for r in suite)
        timed = session.loop_s - session.first_done_s
        rates[slots] = tokens / timed if timed > 0 else 0.0
        expected = args.embedded_cases + 1
        if session.returncode != 0 or session.count("passed") != expected:
            problems.append(
                f"embedded, {slots} slot(s): pytest exited {session.returncode} with "
                f"{session.summary()} (expected {expected} passed):\n{_tail(session.output)}"
            )
        if len(suite) != args.embedded_cases or any(r.get("outcome") != "passed" for r in suite):
            problems.append(
                f"embedded, {slots} slot(s): {len(suite)} suite records "
                f"(expected {args.embedded_cases}, all passed)"
            )
        print(
            f"  {slots} slot(s): {tokens} completion tokens in {timed:.3f} s = "
            f"{rates[slots]:.1f} tokens/s (server start and warm-up {session.first_done_s:.2f} s "
            f"before; loop {session.loop_s:.2f} s, subprocess wall {session.wall_s:.2f} s); "
            f"{session.summary()}",
            flush=True,
        )
    if rates.get(1):
        print(
            f"  ratio 4 slots / 1 slot: {rates[4] / rates[1]:.2f}x ({rates[4]:.1f} vs "
            f"{rates[1]:.1f} tokens/s; {os.cpu_count()} logical CPUs; no target)"
        )
    return problems


# -- profile -------------------------------------------------------------------------


def profile_part(root: Path, args: argparse.Namespace) -> None:
    """The loopback suite at ``--profile`` once more, under cProfile."""
    folder = root / "loopback"
    out = root / "inner.prof"
    with LoopbackServer() as server:
        server.default = stream(list(ANSWER), first_token_delay_s=args.latency)
        session = run_session(
            folder, f"profile{args.profile}", LOOPBACK_MODEL, args.profile,
            ["throughput.suite.yaml"], inner_env(server.base_url), profile=out,
        )  # fmt: skip
    print(
        f"\n-- cProfile of one session's test loop at N={args.profile} (main thread; loop "
        f"{session.loop_s:.3f} s under the profiler, subprocess wall {session.wall_s:.2f} s)"
    )
    if not out.exists():
        print(f"  no profile written:\n{_tail(session.output)}")
        return
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"\n-- top {args.top_n} by {order}")
        stats.sort_stats(order).print_stats(args.top_n)
    for name in args.callees:
        print(f"\n-- what {name} calls")
        stats.sort_stats("cumulative").print_callees(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=64, help="loopback suite cases")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds to first token")
    parser.add_argument(
        "--levels", type=lambda text: [int(n) for n in text.split(",")], default=[1, 4, 16],
        help="concurrency levels, comma-separated (default 1,4,16)",
    )  # fmt: skip
    parser.add_argument("--embedded-cases", type=int, default=16)
    parser.add_argument("--embedded-tokens", type=int, default=32, help="max_tokens per case")
    parser.add_argument("--no-embedded", action="store_true", help="the loopback part only")
    parser.add_argument("--profile", type=int, metavar="N", help="then profile a session at N")
    parser.add_argument("--top-n", type=int, default=30, help="profile rows shown")
    parser.add_argument(
        "--callees", action="append", default=[], metavar="NAME",
        help="with --profile: also what functions matching NAME call (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cases < 1 or args.latency <= 0 or any(n < 1 for n in args.levels):
        parser.error("--cases, --latency and every level must be positive")

    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmlab-throughput-") as tmp:
        root = Path(tmp)
        print(
            f"loopback double ({LOOPBACK_MODEL}): {args.cases} suite cases, each answered "
            f"{args.latency * 1e3:g} ms after its request, at --llm-concurrency "
            f"{', '.join(map(str, args.levels))}",
            flush=True,
        )
        sessions, problems = loopback_part(root, args)
        report_loopback(sessions, args)
        if not args.no_embedded:
            print(
                f"\nembedded model ({EMBEDDED_MODEL}): {args.embedded_cases} suite cases, "
                f"max_tokens {args.embedded_tokens}, temperature 0, seed 0, 1 vs 4 slots",
                flush=True,
            )
            problems += embedded_part(root, args)
        if args.profile is not None:
            profile_part(root, args)
    for problem in problems:
        print(f"check failed: {problem}")
    print(f"checks: {'all passed' if not problems else f'{len(problems)} failed'}")
    print(f"\nwall {time.perf_counter() - wall:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
