"""Two aliases of one model: each one's errors name that alias."""

from __future__ import annotations

import socket

import pytest


def test_two_aliases_of_one_unreachable_model_each_name_their_own(
    pytester: pytest.Pytester,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pytester.makeini(f"[pytest]\nllm_vllm_base_url = http://127.0.0.1:{port}/v1\n")
    pytester.makepyfile("def test_x(llm):\n    pass\n")
    result = pytester.runpytest_subprocess("--llm-models=a=vllm:x,b=vllm:x", "--llm-baseline-s=0")
    result.assert_outcomes(errors=2)
    text = result.stdout.str()
    assert f"cannot reach http://127.0.0.1:{port}/v1 for a:" in text
    assert f"cannot reach http://127.0.0.1:{port}/v1 for b:" in text
