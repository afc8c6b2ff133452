"""An `LLM` over `OpenAICompatible` at a loopback double's base URL, for client tests.

`Binder` builds them (one model, ``vllm:test-model`` unless told otherwise) and closes
every one it built; `generate_error` runs a generation that must fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pytest

from pytest_llmlab import LLM, Generation, LLMLabError, ModelSpec
from pytest_llmlab.models.openai import OpenAICompatible

DISPLAY = "vllm:test-model"


@dataclass
class Bound:
    llm: LLM
    provider: OpenAICompatible
    #: Every generation the LLM recorded, in order.
    records: list[Generation]


class Binder:
    """``binder(base_url, **provider_keywords)`` -> `Bound`; all closed on exit."""

    def __init__(self) -> None:
        self._made: list[Bound] = []

    def __call__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        require_key: bool = False,
        api_key_env: str = "VLLM_API_KEY",
        timeout_s: float = 5.0,
        deadline_s: float | None = 0,
        display: str = DISPLAY,
    ) -> Bound:
        provider = OpenAICompatible(
            model="test-model",
            display=display,
            base_url=base_url,
            api_key=api_key,
            api_key_env=api_key_env,
            require_key=require_key,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
        )
        records: list[Generation] = []
        llm = LLM(
            model_spec=ModelSpec("vllm", "test-model"),
            temperature=0.0,
            provider=provider,
            recorder=records.append,
        )
        self._made.append(Bound(llm, provider, records))
        return self._made[-1]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for bound in self._made:
            bound.llm.close()
            bound.provider.close()


def generate_error(bound: Bound, **kwargs: Any) -> LLMLabError:
    """Run one generation that must fail; return the error."""
    with pytest.raises(LLMLabError) as info:
        bound.llm.generate("Say hello.", **kwargs)
    return info.value
