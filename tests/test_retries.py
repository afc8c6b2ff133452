"""Retries of "try again later" answers: counted, bounded, within the deadline, never
after the answer began; and the backoff itself."""

from __future__ import annotations

import random
import time

import pytest
from loopback import LoopbackServer, http_error, stall, stream
from suite_runs import MODEL, SuiteLab

from pytest_llmlab.errors import HTTPStatusError
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.retry import MAX_DELAY_S, RetryPolicy, retry_after_s
from pytest_llmlab.models.spec import parse_spec
from pytest_llmlab.results import record_from_generation


def model(server: LoopbackServer, retries: int, **kwargs: float) -> LLM:
    provider = OpenAICompatible(
        model="tiny",
        display="vllm:tiny",
        base_url=server.base_url,
        retry=RetryPolicy(retries, base_delay_s=0.01),
        timeout_s=kwargs.get("timeout_s", 5.0),
        deadline_s=kwargs.get("deadline_s"),
    )
    return LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)


@pytest.mark.parametrize("status", [429, 503, 529])
def test_try_later_answers_are_retried_and_counted(server: LoopbackServer, status: int) -> None:
    server.play(http_error(status, "busy"), http_error(status, "busy"), stream(["ok"]))
    llm = model(server, retries=3)
    gen = llm.generate("hi")
    assert (gen.text, gen.attempts) == ("ok", 3)
    assert len(server.posts) == 3
    assert record_from_generation(gen, test_id="t", alias=None, worker="main")["attempts"] == 3


def test_retries_are_bounded_and_the_error_says_how_many(server: LoopbackServer) -> None:
    server.play(*(http_error(429, "slow down") for _ in range(5)))
    llm = model(server, retries=2)
    with pytest.raises(HTTPStatusError, match=r"HTTP 429 .*slow down \(after 3 attempts\)$"):
        llm.generate("hi")
    assert len(server.posts) == 3
    (failed,) = llm.generations
    assert failed.attempts == 3 and failed.finish_reason == "error"


def test_other_statuses_are_not_retried(server: LoopbackServer) -> None:
    server.play(http_error(500, "boom"), stream(["never"]))
    with pytest.raises(HTTPStatusError, match="HTTP 500"):
        model(server, retries=3).generate("hi")
    assert len(server.posts) == 1


def test_zero_retries_retry_nothing(server: LoopbackServer) -> None:
    server.play(http_error(429, "busy"), stream(["never"]))
    with pytest.raises(HTTPStatusError, match=r"HTTP 429 .*busy$"):
        model(server, retries=0).generate("again")
    assert len(server.posts) == 1


def test_retry_after_is_honoured(server: LoopbackServer) -> None:
    server.play(http_error(503, "busy", retry_after="0.3"), stream(["ok"]))
    start = time.monotonic()
    gen = model(server, retries=1).generate("hi")
    assert gen.attempts == 2 and time.monotonic() - start >= 0.3


def test_a_wait_past_the_deadline_is_not_taken(server: LoopbackServer) -> None:
    server.play(http_error(429, "busy", retry_after="60"), stream(["never"]))
    start = time.monotonic()
    with pytest.raises(HTTPStatusError, match=r"not retried: waiting 60 s would pass the 2 s"):
        model(server, retries=3, deadline_s=2.0).generate("hi")
    assert time.monotonic() - start < 2.0 and len(server.posts) == 1


def test_never_retried_after_the_answer_began(server: LoopbackServer) -> None:
    """A stream that stops after its first token times out; it is not sent again."""
    server.play(stall(after_chunks=1), stream(["never"]))
    llm = model(server, retries=3, timeout_s=0.5)
    with pytest.raises(Exception, match="no data from"):
        llm.generate("hi")
    assert len(server.posts) == 1 and llm.generations[0].attempts == 1


def test_auto_retries_by_provider() -> None:
    pool = ProviderPool(base_urls={"openai": "https://api.openai.com/v1"}, timeout_s=1.0)
    cloud = pool.get(parse_spec("openai:gpt-4o-mini"))
    local = pool.get(parse_spec("vllm:tiny"))
    assert isinstance(cloud, OpenAICompatible) and isinstance(local, OpenAICompatible)
    assert (cloud.retry.retries, local.retry.retries) == (3, 0)
    forced = ProviderPool(base_urls={}, timeout_s=1.0, retries=5).get(parse_spec("vllm:tiny"))
    assert isinstance(forced, OpenAICompatible) and forced.retry.retries == 5
    pool.close()


def test_retry_after_forms() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7.0
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({"retry-after": "Wed, 02 Dec 2026 05:00:10 GMT"}, now=1796187600.0) == 10
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_backoff_is_full_jitter_doubling_and_capped() -> None:
    policy = RetryPolicy(10, base_delay_s=1.0)
    rng = random.Random(0)
    for retry in range(1, 9):
        cap = min(MAX_DELAY_S, 2.0 ** (retry - 1))
        waits = [policy.delay_s(retry, None, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= cap
        assert max(waits) > 0.8 * cap  # the whole range is used, not a fixed step
    assert policy.delay_s(3, 12.5, rng) == 12.5  # the server's Retry-After wins


def test_a_reset_before_the_first_byte_is_retried() -> None:
    """A server that drops the first connection unanswered (httpx: "Server
    disconnected without sending a response"), then answers a minimal stream."""
    import socket
    import threading

    body = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": null}]}\n\n'
        b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[int] = []

    def serve() -> None:
        for attempt in range(2):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                seen.append(attempt)
                if attempt == 1:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    provider = OpenAICompatible(
        model="tiny", display="vllm:tiny", base_url=f"http://127.0.0.1:{port}/v1",
        retry=RetryPolicy(1, base_delay_s=0.01), timeout_s=5.0,
    )  # fmt: skip
    llm = LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)
    gen = llm.generate("hi")
    thread.join(5)
    listener.close()
    provider.close()
    assert (gen.text, gen.attempts, seen) == ("ok", 2, [0, 1])


def test_the_terminal_says_once_per_model_when_retries_happened(lab: SuiteLab) -> None:
    lab.write(
        "two.suite.yaml",
        "cases:\n  - {id: a, prompt: hi, checks: [{contains: ok}]}\n"
        "  - {id: b, prompt: ho, checks: [{contains: ok}]}\n",
    )
    lab.server.play(
        http_error(429, "busy", retry_after="0"), stream(["ok"]),
        http_error(503, "busy", retry_after="0"), http_error(503, "busy", retry_after="0"),
        stream(["ok"]),
    )  # fmt: skip
    result = lab.run("--llm-retries=2")
    result.assert_outcomes(passed=2)
    lines = [line for line in result.outlines if "retries over" in line or "retry over" in line]
    expected = f"llmlab: {MODEL}: 3 retries over 2 generation(s) after 429/503/529 or a reset"
    assert lines == [f"{expected} (--llm-retries)"]
    assert [r["attempts"] for r in lab.records()] == [2, 3]
