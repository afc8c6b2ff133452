"""Cassettes, resume and rescore, end to end.

Inner pytest runs (pytester, and real subprocesses where a process must die) against
the loopback double of the OpenAI chat-completions stream (tests/loopback.py: a
scripted double of the documented SSE format, not a model), which counts every request
it receives: a replay, a resumed generation and a rescore must send none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackServer, raw, serve_loopback, stall, stream
from suite_runs import MODEL, SuiteLab

from pytest_llmlab.cassettes import (
    Cassettes,
    CassetteWarning,
    ItemTape,
    RunGenerations,
    replayed_reading,
    request_fields,
    request_key,
)
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.base import Message, Request
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.replay import decode_frames, encode_frames, split_frames
from pytest_llmlab.models.spec import parse_spec

ONE_TEST = textwrap.dedent(
    """
    def test_x(llm):
        gen = llm.generate("hi", max_tokens=8)
        assert gen.text == "Hello world"
    """
)


def cassette_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the wire level ----------------------------------------------------------------------


def test_frames_are_cut_after_events_and_join_to_the_body() -> None:
    pieces = [
        (1, b"data: a\n"),
        (2, b"\ndata: b\r"),
        (3, b"\n\r\n: c\n\ndata: [D"),
        (4, b"ONE]\n\n"),
    ]
    frames = split_frames(pieces, events=True)
    assert frames == [
        (2, b"data: a\n\n"),
        (3, b"data: b\r\n\r\n"),
        (3, b": c\n\n"),
        (4, b"data: [DONE]\n\n"),
    ]
    assert b"".join(data for _, data in frames) == b"".join(data for _, data in pieces)


def test_ndjson_frames_are_lines_and_a_cut_line_is_kept() -> None:
    frames = split_frames([(5, b'{"a": 1}\n{"b"'), (9, b': 2}\n{"c')], events=False)
    assert frames == [(5, b'{"a": 1}\n'), (9, b'{"b": 2}\n'), (9, b'{"c')]


def test_frames_that_are_not_utf8_survive_the_file() -> None:
    frames = [(1, "data: é\n\n".encode()), (2, b"\xff\xfe raw")]
    encoded = json.loads(json.dumps(encode_frames(frames)))
    assert encoded[1][1] == {"base64": "//4gcmF3"}
    assert decode_frames(encoded) == frames
    with pytest.raises(ValueError, match=r"frames\[1\]: the offset"):
        decode_frames([[5, "a"], [4, "b"]])


def test_the_key_covers_what_determines_the_answer_and_nothing_else() -> None:
    spec = parse_spec("vllm:tiny")
    base = Request(messages=[Message(role="user", content="hi")], temperature=0.0, max_tokens=8)
    key = request_key(request_fields(spec, base))
    aliased = parse_spec("tiny=vllm:tiny")  # an alias is a name, not a parameter
    assert request_key(request_fields(aliased, base)) == key
    same = base.model_copy(update={"params": {"top_p": 1}})
    assert request_key(request_fields(spec, same)) == request_key(
        request_fields(spec, base.model_copy(update={"params": {"top_p": 1.0}}))
    )
    for change in (
        {"temperature": 0.5},
        {"max_tokens": 9},
        {"seed": 1},
        {"stop": ["x"]},
        {"params": {"top_p": 0.5}},
        {"messages": [Message(role="user", content="hi!")]},
    ):
        assert request_key(request_fields(spec, base.model_copy(update=change))) != key, change
    assert request_key(request_fields(parse_spec("vllm:other"), base)) != key


def test_a_replayed_reading_is_never_shown_as_measured() -> None:
    recorded = {
        "joules": 12.0,
        "cpu": {"joules": 12.0, "provenance": "measured", "domains": ["package-0"]},
        "provenance": "measured",
        "measured": True,
        "windows": [{"domain": "package-0"}],
        "duration_s": 2.0,
    }
    reading = replayed_reading(recorded, "cassettes/t.jsonl")
    assert (reading.joules, reading.provenance, reading.measured) == (12.0, "replayed", False)
    assert reading.cpu is not None and reading.cpu.provenance == "replayed"
    assert reading.windows == []
    assert reading.note is not None and "recorded as measured" in reading.note
    missing = replayed_reading(None, "cassettes/t.jsonl")
    assert (missing.joules, missing.provenance) == (None, "unavailable")


# -- pytest runs ------------------------------------------------------------------------


def test_record_new_then_replay_only_sends_nothing(lab: SuiteLab) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run("--llm-record=new").assert_outcomes(passed=1)
    (live,) = lab.records()
    assert (live["replayed"], live["cassette"]) == (False, None)
    cassette = lab.path / "cassettes" / "test_a.py.jsonl"
    (entry,) = cassette_lines(cassette)
    assert entry["test"] == "test_a.py::test_x[vllm:tiny-T0]"
    assert entry["request"]["messages"] == [{"role": "user", "content": "hi"}]
    assert entry["status"] == 200 and entry["content_type"].startswith("text/event-stream")
    assert entry["frames"][-1][1] == "data: [DONE]\n\n"
    offsets = [offset for offset, _ in entry["frames"]]
    assert offsets == sorted(offsets) and offsets[0] >= entry["head_ns"] > 0
    sent = len(lab.server.posts)

    result = lab.run("--llm-record=none")
    result.assert_outcomes(passed=1)
    assert len(lab.server.posts) == sent
    (replayed,) = lab.records()
    assert (replayed["replayed"], replayed["cassette"]) == (True, "cassettes/test_a.py.jsonl")
    for field in ("output", "completion_tokens", "prompt_tokens", "ttft_s", "total_s"):
        assert replayed[field] == live[field], field
    assert replayed["confidence"] == live["confidence"]
    assert replayed["energy"]["provenance"] in ("replayed", "unavailable")
    assert replayed["fingerprint"] == entry["hardware"]["fingerprint"]


def test_replay_only_needs_no_server(lab: SuiteLab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run("--llm-record=new").assert_outcomes(passed=1)
    monkeypatch.setenv("LLMLAB_VLLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing there
    lab.run("--llm-record=none").assert_outcomes(passed=1)


def test_a_miss_names_the_test_the_key_and_what_differs(lab: SuiteLab) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run("--llm-record=new").assert_outcomes(passed=1)
    lab.write("test_a.py", ONE_TEST.replace('"hi", max_tokens=8', '"hello", max_tokens=9'))
    sent = len(lab.server.posts)
    result = lab.run("--llm-record=none")
    result.assert_outcomes(failed=1)
    assert len(lab.server.posts) == sent
    # The error line of the failure's report; the short summary may repeat it, cut to width.
    (line,) = [
        line for line in result.outlines if line.startswith("E ") and "CassetteMiss:" in line
    ]
    assert (
        "no recording of this request of test_a.py::test_x[vllm:tiny-T0] (--llm-record=none)"
        in line
    )
    assert "in cassettes/test_a.py.jsonl; nearest recorded: key " in line
    assert "max_tokens (8 recorded, 9 now)" in line
    assert "messages[0].content ('hi' recorded, 'hello' now)" in line
    assert "cassettes.py" not in result.stdout.str()  # the message, not our traceback


def test_new_records_only_what_is_missing(lab: SuiteLab) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run("--llm-record=new").assert_outcomes(passed=1)
    lab.write("test_a.py", ONE_TEST + '\n\ndef test_y(llm):\n    llm.generate("other")\n')
    sent = len(lab.server.posts)
    lab.run("--llm-record=new").assert_outcomes(passed=2)
    assert len(lab.server.posts) == sent + 1
    assert len(cassette_lines(lab.path / "cassettes" / "test_a.py.jsonl")) == 2


def test_all_records_again_and_the_file_keeps_one_entry_each(lab: SuiteLab) -> None:
    lab.write("test_a.py", 'def test_x(llm):\n    print("GOT", llm.generate("hi").text)\n')
    lab.always("first")
    lab.run("--llm-record=all").assert_outcomes(passed=1)
    lab.always("second")
    lab.run("--llm-record=all").assert_outcomes(passed=1)
    (entry,) = cassette_lines(lab.path / "cassettes" / "test_a.py.jsonl")
    assert any("second" in text for _, text in entry["frames"])
    result = lab.run("--llm-record=none", "-s")
    assert "GOT second" in result.stdout.str()


def test_repeated_runs_replay_their_own_samples(lab: SuiteLab) -> None:
    lab.write(
        "test_a.py",
        """
        import pytest

        @pytest.mark.llm(runs=3, pass_rate=1)
        def test_runs(llm):
            print("RUN", llm.generate("pick").text)

        def test_sample(llm):
            print("SAMPLE", [g.text for g in llm.sample("again", n=3)])
        """,
    )
    lab.answer("one", "two", "three", "x", "y", "z")
    lab.run("--llm-record=new").assert_outcomes(passed=2)
    sent = len(lab.server.posts)
    result = lab.run("--llm-record=none", "-s")
    result.assert_outcomes(passed=2)
    assert len(lab.server.posts) == sent
    out = result.stdout.str()
    assert out.index("RUN one") < out.index("RUN two") < out.index("RUN three")
    assert "SAMPLE ['x', 'y', 'z']" in out


def test_suites_record_and_replay_with_their_points(lab: SuiteLab) -> None:
    lab.write(
        "suites/geo.suite.yaml",
        """
        suite: geo
        cases:
          - id: paris
            prompt: Capital of France?
            checks: [{icontains: paris}]
          - id: rome
            prompt: Capital of Italy?
            checks: [{icontains: rome}]
        """,
    )
    lab.answer("Paris", "Milan")
    lab.run("--llm-record=new", "suites").assert_outcomes(passed=1, failed=1)
    recorded = [(r["case_id"], r["outcome"], r["points"]) for r in lab.records()]
    assert (lab.path / "suites" / "cassettes" / "geo.suite.yaml.jsonl").is_file()
    sent = len(lab.server.posts)
    lab.run("--llm-record=none", "suites").assert_outcomes(passed=1, failed=1)
    assert len(lab.server.posts) == sent
    assert [(r["case_id"], r["outcome"], r["points"]) for r in lab.records()] == recorded
    assert all(r["replayed"] for r in lab.records())


def test_a_corrupted_line_names_the_file_and_line(lab: SuiteLab) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run("--llm-record=new").assert_outcomes(passed=1)
    cassette = lab.path / "cassettes" / "test_a.py.jsonl"
    cassette.write_text(cassette.read_text(encoding="utf-8")[:-40] + "\n", encoding="utf-8")
    result = lab.run("--llm-record=none")
    result.assert_outcomes(failed=1)
    assert "CassetteError: cassettes/test_a.py.jsonl:1: not a JSON line" in result.stdout.str()


def test_workers_record_into_one_file_and_replay_it(lab: SuiteLab) -> None:
    tests = "\n".join(
        f"def test_{i}(llm):\n    assert llm.generate('q{i}').text == 'a'\n" for i in range(6)
    )
    lab.write("test_many.py", tests)
    lab.always("a")
    lab.run("--llm-record=new", "-n", "2", xdist=True).assert_outcomes(passed=6)
    entries = cassette_lines(lab.path / "cassettes" / "test_many.py.jsonl")
    assert sorted(e["test"].split("::")[1] for e in entries) == [
        f"test_{i}[vllm:tiny-T0]" for i in range(6)
    ]
    sent = len(lab.server.posts)
    lab.run("--llm-record=none", "-n", "2", xdist=True).assert_outcomes(passed=6)
    assert len(lab.server.posts) == sent


# -- timing ------------------------------------------------------------------------------


def _recorded(server: LoopbackServer, tmp_path: Path) -> float:
    """Record one generation with a slow first token; its recorded TTFT."""
    pool = ProviderPool(base_urls={"vllm": server.base_url}, timeout_s=10.0)
    spec = parse_spec(MODEL)
    cassettes = Cassettes(mode="new", folder="cassettes", speed=0.0, rootdir=tmp_path)
    tape = ItemTape(test_id="t", test_file=tmp_path / "test_t.py", cassettes=cassettes, run=None,
                    replayer=pool.replayer)  # fmt: skip
    server.play(stream(["a", "b", "c", "d"], first_token_delay_s=0.25, token_delay_s=0.05))
    try:
        live = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape)
        generation = live.generate("slow", max_tokens=8)
    finally:
        cassettes.close()
        pool.close()
    assert generation.timings.ttft_s is not None and generation.timings.ttft_s >= 0.25
    return generation.timings.ttft_s


def _replay(tmp_path: Path, speed: float) -> tuple[float, float, float]:
    """Replay it at ``speed``: seconds to the first text chunk and to the end, both
    measured here, and the TTFT the replayed Generation reports."""
    pool = ProviderPool(base_urls={"vllm": "http://127.0.0.1:9/v1"}, timeout_s=10.0)
    spec = parse_spec(MODEL)
    cassettes = Cassettes(mode="none", folder="cassettes", speed=speed, rootdir=tmp_path)
    tape = ItemTape(test_id="t", test_file=tmp_path / "test_t.py", cassettes=cassettes, run=None,
                    replayer=pool.replayer)  # fmt: skip
    llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape)
    try:
        start = time.monotonic()
        first: float | None = None
        stream_ = llm.stream("slow", max_tokens=8)
        for _ in stream_:
            first = time.monotonic() - start if first is None else first
        total = time.monotonic() - start
    finally:
        pool.close()
    assert first is not None and stream_.generation.replayed
    assert stream_.generation.text == "abcd"
    ttft = stream_.generation.timings.ttft_s
    assert ttft is not None
    return first, total, ttft


def test_speed_one_keeps_the_recorded_pace_and_speed_zero_is_instant(
    server: LoopbackServer, tmp_path: Path
) -> None:
    recorded_ttft = _recorded(server, tmp_path)
    first, total, reported = _replay(tmp_path, speed=1.0)
    assert reported == pytest.approx(recorded_ttft, abs=1e-9)  # the recorded figure
    # Played at the recorded offsets: never early, and late only by scheduling.
    assert recorded_ttft - 0.002 <= first <= recorded_ttft + 0.03
    assert total >= recorded_ttft + 3 * 0.05 - 0.002
    _, instant_total, reported = _replay(tmp_path, speed=0.0)
    assert reported == pytest.approx(recorded_ttft, abs=1e-9)
    assert instant_total < recorded_ttft / 5  # nothing waited for
    assert not server.posts[1:]  # one recording, no request from either replay


# -- resume and rescore ------------------------------------------------------------------

SIX_CASES = """
    suite: six
    cases:
""" + "".join(
    f"      - {{id: c{i}, prompt: 'question {i}', checks: [{{icontains: ok}}]}}\n" for i in range(6)
)


def _inner_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", f"--llm-models={MODEL}", "-p", "no:xdist",
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args]  # fmt: skip


def test_resume_after_kill_9_generates_only_what_is_missing(lab: SuiteLab) -> None:
    lab.write("six.suite.yaml", SIX_CASES)
    lab.server.play(stream(["ok"]), stream(["ok"]), stream(["ok"]), stall(after_chunks=1))
    lab.always("ok")
    process = subprocess.Popen(
        _inner_command("six.suite.yaml"),
        cwd=lab.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(lab.server.posts) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(lab.server.posts) == 4, "the inner run never reached its 4th case"
        os.kill(process.pid, signal.SIGKILL)  # mid-generation of the 4th case
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        lab.server._state.release.set()  # let the stalled handler go
    sent = len(lab.server.posts)
    result = lab.run("--llm-resume", "six.suite.yaml")
    result.assert_outcomes(passed=6)
    assert "--llm-resume: 3 generation(s) of earlier runs to reuse" in result.stdout.str()
    assert len(lab.server.posts) == sent + 3  # c3 (killed mid-way), c4, c5
    records = {r["case_id"]: r for r in lab.records()}
    assert [records[f"c{i}"]["replayed"] for i in range(6)] == [True] * 3 + [False] * 3
    # The resumed run logged all six: resuming again generates nothing.
    sent = len(lab.server.posts)
    lab.run("--llm-resume", "six.suite.yaml").assert_outcomes(passed=6)
    assert len(lab.server.posts) == sent


def test_rescore_reruns_edited_checks_without_a_request(
    lab: SuiteLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = lab.write(
        "geo.suite.yaml",
        """
        suite: geo
        cases:
          - {id: paris, prompt: "Capital of France?", checks: [{icontains: paris}]}
          - {id: rome, prompt: "Capital of Italy?", checks: [{icontains: rome}]}
        """,
    )
    lab.answer("Paris", "Milan")
    lab.run("geo.suite.yaml").assert_outcomes(passed=1, failed=1)
    suite.write_text(suite.read_text(encoding="utf-8").replace("rome}", "milan}"), "utf-8")
    sent = len(lab.server.posts)
    monkeypatch.chdir(lab.path)
    rescored = subprocess.run(
        [str(Path(sys.executable).with_name("llmlab")), "rescore", "reports", "--",
         "-p", "no:cacheprovider", "-p", "no:xdist"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    assert len(lab.server.posts) == sent
    outcomes = {r["case_id"]: (r["outcome"], r["replayed"]) for r in lab.records()}
    assert outcomes == {"paris": ("passed", True), "rome": ("passed", True)}
    assert (lab.path / "reports" / "previous" / "results.jsonl").is_file()


def test_rescore_fails_a_request_it_has_no_generation_for(lab: SuiteLab) -> None:
    lab.write("test_a.py", ONE_TEST)
    lab.always("Hello world")
    lab.run().assert_outcomes(passed=1)
    store = lab.path / "reports" / "generations.jsonl"
    assert len(cassette_lines(store)) == 1
    lab.write("test_a.py", ONE_TEST.replace('"hi"', '"bye"'))
    sent = len(lab.server.posts)
    result = lab.run(f"--llm-rescore={store}")
    result.assert_outcomes(failed=1)
    assert len(lab.server.posts) == sent
    assert "no recording of this request of test_a.py::test_x[vllm:tiny-T0] (llmlab rescore)" in (
        result.stdout.str()
    )


def test_secrets_never_reach_a_cassette(
    lab: SuiteLab, monkeypatch: pytest.MonkeyPatch, fresh_process_redactor: None
) -> None:
    key = "sk-test-FAKE0123456789abcdef0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with serve_loopback() as cloud:
        monkeypatch.setenv("OPENAI_BASE_URL", cloud.base_url)
        cloud.default = stream([f"your key is {key}"])
        lab.write("test_a.py", "def test_x(llm):\n    llm.generate('echo my key')\n")
        lab.run("--llm-record=new", model="openai:gpt-4o-mini").assert_outcomes(passed=1)
        assert cloud.posts[0].headers.get("authorization") == f"Bearer {key}"
    cassette = (lab.path / "cassettes" / "test_a.py.jsonl").read_bytes()
    assert key.encode() not in cassette
    assert b"your key is" in cassette
    store = (lab.path / "reports" / "generations.jsonl").read_bytes()
    assert key.encode() not in store


def test_workers_resume_from_the_previous_run(lab: SuiteLab) -> None:
    lab.write("six.suite.yaml", SIX_CASES)
    lab.always("ok")
    lab.run("six.suite.yaml").assert_outcomes(passed=6)
    sent = len(lab.server.posts)
    lab.run("--llm-resume", "-n", "2", "six.suite.yaml", xdist=True).assert_outcomes(passed=6)
    assert len(lab.server.posts) == sent
    assert all(r["replayed"] for r in lab.records())


# -- a model that repeats its key --------------------------------------------------------

FAKE_KEY = "sk-test-FAKE0123456789abcdef0123456789"


def _record_echo(server: LoopbackServer, tmp_path: Path) -> tuple[Path, Path]:
    """Record one ``openai:`` generation from ``server`` (keyed with `FAKE_KEY`) into a
    cassette and a generations log; their paths."""
    pool = ProviderPool(base_urls={"openai": server.base_url}, timeout_s=10.0)
    spec = parse_spec("openai:gpt-4o-mini")
    cassettes = Cassettes(mode="new", folder="cassettes", speed=0.0, rootdir=tmp_path)
    log = tmp_path / "generations.jsonl"
    tape = ItemTape(test_id="t", test_file=tmp_path / "test_t.py", cassettes=cassettes,
                    run=RunGenerations(log=log), replayer=pool.replayer)  # fmt: skip
    try:
        LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape).generate("echo")
    finally:
        cassettes.close()
        assert tape.run is not None
        tape.run.close()
        pool.close()
    return tmp_path / "cassettes" / "test_t.py.jsonl", log


def test_a_key_spread_over_frames_is_not_recorded(
    server: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process_redactor: None,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    server.play(stream(["your key is ", FAKE_KEY[:12], FAKE_KEY[12:], "."]))
    with pytest.warns(CassetteWarning, match="spread over several frames"):
        cassette, log = _record_echo(server, tmp_path)
    assert not cassette.exists()
    (entry,) = cassette_lines(log)
    assert entry["generation"]["text"] == "your key is ***."
    assert entry["generation"]["tokens"] == []  # each piece alone would not be masked
    assert FAKE_KEY[:12].encode() not in log.read_bytes()


def test_a_key_in_one_frame_is_masked_and_recorded(
    server: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process_redactor: None,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    server.play(stream(["your key is ", FAKE_KEY, "."]))
    cassette, _ = _record_echo(server, tmp_path)
    assert FAKE_KEY.encode() not in cassette.read_bytes()
    assert "your key is " in cassette.read_text(encoding="utf-8")


def test_a_key_in_a_frame_that_is_not_utf8_is_masked(
    server: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process_redactor: None,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    event = {
        "choices": [
            {"index": 0, "delta": {"content": f"caf\u00e9 {FAKE_KEY}"}, "finish_reason": "stop"}
        ]
    }
    body = f"data: {json.dumps(event, ensure_ascii=False)}\n\ndata: [DONE]\n\n".encode("latin-1")
    server.play(raw(body, "text/event-stream; charset=iso-8859-1"))
    cassette, _ = _record_echo(server, tmp_path)
    (entry,) = cassette_lines(cassette)
    stored = b"".join(data for _, data in decode_frames(entry["frames"]))
    assert b"caf\xe9" in stored and FAKE_KEY.encode() not in stored
