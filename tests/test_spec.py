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


#: What a model name may not hold (see the spec module): markup, quotes, whitespace,
#: controls, format characters (bidi overrides), line and paragraph separators.
UNSAFE_MODEL_CHARS = "<>\"'& \t\n\r\x00\x1b\x7f\x85\x9b\u00a0\u200b\u2028\u2029\u202e\u2066\ufeff"
#: Every category a model name may hold: all but controls, format characters,
#: separators (whitespace, line, paragraph) and surrogates.
SAFE_CATEGORIES = ["L", "M", "N", "P", "S", "Co", "Cn"]
safe_model = st.text(
    alphabet=st.characters(
        whitelist_categories=SAFE_CATEGORIES,  # type: ignore[arg-type]
        blacklist_characters=",<>\"'&",
    ),
    min_size=1,
)


@given(provider=st.sampled_from(sorted(PROVIDERS)), model=safe_model)
def test_roundtrip(provider: str, model: str) -> None:
    spec = parse_spec(f"{provider}:{model}")
    assert (spec.provider, spec.model, spec.alias) == (provider, model, None)
    assert parse_spec(spec.spec) == spec
    assert parse_spec(f"a.b-c_1={spec.spec}") == ModelSpec(provider, model, alias="a.b-c_1")


@given(
    provider=st.sampled_from(sorted(PROVIDERS)),
    before=safe_model,
    bad=st.sampled_from(UNSAFE_MODEL_CHARS),
    after=safe_model,
)
def test_unsafe_character_in_model_is_refused(
    provider: str, before: str, bad: str, after: str
) -> None:
    """Test ids carry model names into pytest-html (unescaped) and terminals."""
    text = f"{provider}:{before}{bad}{after}"
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value).startswith(f"invalid character {bad!r} in model spec {text!r}: ")


@pytest.mark.parametrize(
    "text",
    [
        "local:smollm2-135m",
        "local:/abs/path/model.gguf",
        "local:/models/v1.0+build_3/x.gguf",
        "vllm:meta-llama/Llama-3.1-8B-Instruct",
        "lmstudio:qwen2.5:7b",
        "openai:ft:gpt-4o-mini:org@team:abc123",
        "openai:model=with-equals",
        "openai:gpt-4o-mini-2024-07-18",
        "vllm:Qwen/Qwen2.5-7B-Instruct-AWQ~v2(beta)#3",
        "vllm:模型/中文-7b",
        "big=vllm:meta-llama/Llama-3.1-8B-Instruct",
    ],
)
def test_model_names_in_use_stay_valid(text: str) -> None:
    assert str(parse_spec(text)) == text


@pytest.mark.parametrize(
    "alias",
    ["<img src=x onerror=alert(1)>", "a b", "fa\x1bst", "x&y", "m\u202e", 'q"', "é"],
)
def test_unsafe_alias_is_refused(alias: str) -> None:
    text = f"{alias}=vllm:m"
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value).startswith("invalid alias ")
    assert repr(text) in str(info.value)
