"""Generations in flight inside one process: ``--llm-concurrency``, suite cases made
ahead of their items, ``llm.map``; and the logprobs marker.

Inner pytest runs against the loopback double of the OpenAI chat-completions stream
(tests/loopback.py: a scripted double of the documented SSE format, not a model). The
double answers slowly here, and counts what is in flight at once: that, not a clock,
shows the concurrency.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from loopback import LoopbackServer, stream
from suite_runs import SuiteLab

from pytest_llmlab.cassettes import request_fields, request_key
from pytest_llmlab.llm import LLM, Prefetched
from pytest_llmlab.models.base import Generation
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.spec import parse_spec

EIGHT_CASES = "suite: eight\ncases:\n" + "".join(
    f"  - {{id: c{i}, prompt: 'question {i}', checks: [{{icontains: 'answer {i}'}}]}}\n"
    for i in range(8)
)


class InFlight:
    """Wraps the double's handler to count requests being answered at once.

    A request stops counting just before the double writes the end of its body: the
    client may read that end and send its next request before the handler's thread
    returns, and counting until the return would see two at once that the client
    never had."""

    def __init__(self, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()
        self._counting = threading.local()
        handler: Any = server._httpd.RequestHandlerClass  # type: ignore[union-attr]
        original, end_body = handler.do_POST, handler._end_chunked
        counter = self

        def counted(handler_self: object) -> None:
            with counter._lock:
                counter.now += 1
                counter.most = max(counter.most, counter.now)
            counter._counting.on = True
            try:
                original(handler_self)
            finally:
                counter._done()

        def ending(handler_self: object) -> None:
            counter._done()
            end_body(handler_self)

        monkeypatch.setattr(handler, "do_POST", counted)
        monkeypatch.setattr(handler, "_end_chunked", ending)

    def _done(self) -> None:
        """This handler thread's request stops counting (once)."""
        if getattr(self._counting, "on", False):
            self._counting.on = False
            with self._lock:
                self.now -= 1


def test_suite_cases_are_generated_ahead_and_report_in_order(
    lab: SuiteLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.write("eight.suite.yaml", EIGHT_CASES)
    counter = InFlight(lab.server, monkeypatch)
    # The double answers in the order requests arrive: each answer names its question.
    lab.server.default = stream(["?"])
    answers = {f"question {i}": f"answer {i}" for i in range(8)}
    handler: Any = lab.server._httpd.RequestHandlerClass  # type: ignore[union-attr]
    play = handler._play

    def by_prompt(handler_self: object, script: object, body: dict[str, object]) -> None:
        messages = body["messages"]
        assert isinstance(messages, list)
        text = answers[messages[-1]["content"]]
        play(handler_self, stream([text], first_token_delay_s=0.2), body)

    monkeypatch.setattr(handler, "_play", by_prompt)
    result = lab.run("--llm-concurrency=4", "-v", "eight.suite.yaml")
    result.assert_outcomes(passed=8)
    assert counter.most == 4  # never more than asked, and that many
    assert len(lab.server.posts) == 8  # each case generated once, not again by its item
    order = [line.split("::")[1].split(" ")[0] for line in result.outlines if " PASSED" in line]
    assert order == [f"c{i}[vllm:tiny-T0]" for i in range(8)]
    records = lab.records()
    assert [r["case_id"] for r in records] == [f"c{i}" for i in range(8)]
    assert all(r["output"] == f"answer {i}" for i, r in enumerate(records))


def test_concurrency_one_keeps_one_request_at_a_time(
    lab: SuiteLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.write("eight.suite.yaml", EIGHT_CASES)
    counter = InFlight(lab.server, monkeypatch)
    lab.server.default = stream(["a"], first_token_delay_s=0.05)
    lab.run("--llm-concurrency=1", "eight.suite.yaml").assert_outcomes(failed=8)
    assert counter.most == 1


def test_a_stop_leaves_no_request_running(lab: SuiteLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """-x: nothing starts after the stop, and what was in flight is never recorded.

    A slot starts the next request when its stream ends: the first four end together,
    so their slots may start four more before the first item's outcome is known (each
    answer takes 0.5 s: those cannot also have ended by then), and no more."""
    sixteen = "cases:\n" + "".join(
        f"  - {{id: c{i}, prompt: 'q{i}', checks: [{{contains: right}}]}}\n" for i in range(16)
    )
    lab.write("sixteen.suite.yaml", sixteen)
    counter = InFlight(lab.server, monkeypatch)
    lab.server.default = stream(["wrong"], first_token_delay_s=0.5)
    result = lab.run("--llm-concurrency=4", "-x", "sixteen.suite.yaml")
    result.assert_outcomes(failed=1)
    assert len(lab.records()) == 1  # what was made ahead and never taken is not recorded
    sent = len(lab.server.posts)
    assert 4 <= sent <= 4 + 4 and counter.most <= 4
    time.sleep(1.0)
    assert len(lab.server.posts) == sent  # and none started after the stop


def test_a_request_not_made_ahead_after_all_is_sent_by_its_test(server: LoopbackServer) -> None:
    """A queued request whose stream could not be opened in its thread settles with
    None: the test's own call sends it, once, and records it as usual."""
    server.default = stream(["sent here"])
    pool = ProviderPool(base_urls={"vllm": server.base_url}, timeout_s=10.0)
    spec = parse_spec("vllm:tiny")
    llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec))
    try:
        key = request_key(request_fields(spec, llm.build_request("hi")))
        urged: list[bool] = []
        future: Future[Generation | None] = Future()
        future.set_result(None)
        llm.prefetched = Prefetched(
            key=key, future=future, stop=threading.Event(), urge=lambda: urged.append(True)
        )
        gen = llm.generate("hi")
        assert (gen.text, gen.error, urged) == ("sent here", None, [True])
        assert len(server.posts) == 1 and llm.generations == [gen]
        assert llm.prefetched is None  # taken: its test's request was that one
    finally:
        llm.close()
        pool.close()


def test_map_keeps_requests_in_flight_and_returns_input_order(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = InFlight(server, monkeypatch)
    server.default = stream(["x"], first_token_delay_s=0.1)
    pool = ProviderPool(base_urls={"vllm": server.base_url}, timeout_s=10.0)
    spec = parse_spec("vllm:tiny")
    llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), concurrency=3)
    try:
        prompts = [f"p{i}" for i in range(7)]
        generations = llm.map(prompts, max_tokens=4)
        assert [g.request.messages[-1].content for g in generations] == prompts
        assert counter.most == 3
        samples = llm.sample("again", n=4, seed=10)
        assert [samples[i].request.seed for i in range(4)] == [10, 11, 12, 13]
        assert len(llm.generations) == 11
    finally:
        pool.close()


def test_map_raises_the_first_error_in_input_order(server: LoopbackServer) -> None:
    from loopback import http_error

    server.play(stream(["ok"]), http_error(500, "second broke"), stream(["ok"]))
    pool = ProviderPool(base_urls={"vllm": server.base_url}, timeout_s=10.0)
    spec = parse_spec("vllm:tiny")
    llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), concurrency=2)
    try:
        with pytest.raises(Exception, match="second broke"):
            llm.map(["a", "b", "c", "d"])
        assert [g.finish_reason for g in llm.generations].count("error") == 1
    finally:
        pool.close()


def test_a_marker_turns_logprobs_off_without_top_logprobs(lab: SuiteLab) -> None:
    lab.write(
        "test_a.py",
        """
        import pytest

        @pytest.mark.llm(logprobs=False)
        def test_x(llm):
            assert llm.generate("hi").tokens == []

        def test_call_wins(llm):
            assert llm.generate("hi", logprobs=True).tokens
        """,
    )
    lab.always("fine")
    lab.run().assert_outcomes(passed=2)
    marked, called = lab.bodies()
    assert "logprobs" not in marked and "top_logprobs" not in marked
    assert called["logprobs"] is True and called["top_logprobs"] == 1


def test_suite_cases_ask_for_alternatives_only_when_a_check_reads_them(lab: SuiteLab) -> None:
    """The logprobs policy on a suite: token logprobs always, top alternatives (5) for
    ``answer_prob`` and an entropy bound, and the case's own ``top_logprobs`` wins."""
    lab.write(
        "policy.suite.yaml",
        """
        cases:
          - id: plain
            prompt: p1
            checks: [{contains: fine}, {confidence: 0.01}]
          - id: answer
            prompt: p2
            checks: [{answer_prob: {answer: fine, min: 0.01}}]
          - id: entropy
            prompt: p3
            checks: [{confidence: {max_entropy: 9}}]
          - id: own
            prompt: p4
            params: {top_logprobs: 2}
            checks: [{answer_prob: {answer: fine, min: 0.01}}]
        """,
    )
    lab.always("fine")
    lab.run().assert_outcomes(passed=4)
    asked = {body["messages"][-1]["content"]: body["top_logprobs"] for body in lab.bodies()}
    assert asked == {"p1": 1, "p2": 5, "p3": 5, "p4": 2}


def test_workers_generate_ahead_only_what_they_run(lab: SuiteLab) -> None:
    lab.write("eight.suite.yaml", EIGHT_CASES)
    lab.server.default = stream(["wrong"], first_token_delay_s=0.05)
    lab.run("--llm-concurrency=3", "-n", "2", "eight.suite.yaml", xdist=True).assert_outcomes(
        failed=8
    )
    assert len(lab.server.posts) == 8  # no case generated twice, none by two workers
    assert sorted(r["case_id"] for r in lab.records()) == [f"c{i}" for i in range(8)]


def test_cassettes_record_what_was_generated_ahead(lab: SuiteLab) -> None:
    lab.write("eight.suite.yaml", EIGHT_CASES)
    lab.server.default = stream(["answer"], first_token_delay_s=0.05)
    lab.run("--llm-concurrency=4", "--llm-record=new", "eight.suite.yaml").assert_outcomes(failed=8)
    sent = len(lab.server.posts)
    assert sent == 8
    lab.run("--llm-record=none", "eight.suite.yaml").assert_outcomes(failed=8)
    assert len(lab.server.posts) == sent
