"""Model spec parsing: providers, aliases, colons in names, errors naming the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.spec import ModelSpec, SpecError, parse_spec, parse_spec_list


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:smollm2-135m", ModelSpec("local", "smollm2-135m")),
        ("local:/models/x.gguf", ModelSpec("local", "/models/x.gguf")),
        ("openai:gpt-4o-mini", ModelSpec("openai", "gpt-4o-mini")),
        ("lmstudio:qwen2.5:7b", ModelSpec("lmstudio", "qwen2.5:7b")),
        ("fast=local:smollm2-135m", ModelSpec("local", "smollm2-135m", alias="fast")),
        (" vllm : meta/llama ", ModelSpec("vllm", "meta/llama")),
        ("openai:model=with-equals", ModelSpec("openai", "model=with-equals")),
    ],
)
def test_parse_spec(text: str, expected: ModelSpec) -> None:
    assert parse_spec(text) == expected


def test_display_is_alias_when_given() -> None:
    assert parse_spec("fast=local:smollm2-135m").display == "fast"
    assert parse_spec("local:smollm2-135m").display == "local:smollm2-135m"
    assert str(parse_spec("fast=local:smollm2-135m")) == "fast=local:smollm2-135m"


@pytest.mark.parametrize("text", ["smollm2", "local:", ":model", "nope:model", "bad alias=local:x"])
def test_bad_spec_names_spec_and_lists_providers(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert repr(text.strip()) in message
    if "alias" not in message:
        assert ", ".join(sorted(PROVIDERS)) in message


def test_list_dedupes_by_display_keeping_order() -> None:
    specs = parse_spec_list("local:a, openai:b\nlocal:a,fast=local:a")
    assert [s.display for s in specs] == ["local:a", "openai:b", "fast"]


def test_alias_naming_two_models_is_an_error() -> None:
    with pytest.raises(SpecError, match="alias 'm' names two models"):
        parse_spec_list("m=local:a,m=local:b")


@given(
    provider=st.sampled_from(sorted(PROVIDERS)),
    model=st.text(
        alphabet=st.characters(blacklist_characters=",\n\r", blacklist_categories=["Cs"]),
        min_size=1,
    ).filter(lambda m: m.strip() == m and m != ""),
)
def test_roundtrip(provider: str, model: str) -> None:
    spec = parse_spec(f"{provider}:{model}")
    assert (spec.provider, spec.model, spec.alias) == (provider, model, None)
    assert parse_spec(spec.spec) == spec
