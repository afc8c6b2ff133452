"""Settings: command line over ini over environment over default, errors naming the source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pytest_llmlab.config import (
    OPTIONS,
    Settings,
    SettingsError,
    build_settings,
)
from pytest_llmlab.models.local import default_threads
from pytest_llmlab.models.providers import PROVIDERS


def settings(
    cli: Mapping[str, Any] | None = None,
    ini: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    return build_settings(cli=cli or {}, ini=ini or {}, env=env or {})


def test_defaults() -> None:
    s = settings()
    assert [m.spec for m in s.models] == ["local:smollm2-135m"]
    assert s.temperatures == [0.0]
    assert s.report_dir == "reports"
    assert s.timeout == 120.0
    assert s.skip_unavailable is False
    assert s.threads is None
    assert s.ctx == 4096
    for info in PROVIDERS.values():
        if info.default_base_url is not None:
            assert s.base_url(info.name) == info.default_base_url
    assert set(s.base_urls) == {i.name for i in PROVIDERS.values() if i.default_base_url}
    assert set(s.sources.values()) == {"default"}


def test_precedence_cli_then_ini_then_env() -> None:
    env = {"LLMLAB_MODELS": "openai:env", "LLMLAB_TEMPERATURES": "0.3", "LLMLAB_CTX": "512"}
    ini = {"llm_models": ["openai:ini"], "llm_temperatures": ["0.2"]}
    cli = {"llm_models": "openai:cli"}
    s = settings(cli, ini, env)
    assert [m.spec for m in s.models] == ["openai:cli"]
    assert s.sources["models"] == "command line"
    assert s.temperatures == [0.2]
    assert s.sources["temperatures"] == "ini llm_temperatures"
    assert s.ctx == 512
    assert s.sources["ctx"] == "env LLMLAB_CTX"


def test_openai_base_url_from_openai_env_var() -> None:
    s = settings(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"})
    assert s.base_url("openai") == "http://127.0.0.1:9/v1"
    s = settings(env={"OPENAI_BASE_URL": "http://a/v1", "LLMLAB_OPENAI_BASE_URL": "http://b/v1"})
    assert s.base_url("openai") == "http://b/v1"  # our own name first
    s = settings(ini={"llm_openai_base_url": "http://c/v1"}, env={"OPENAI_BASE_URL": "http://a/v1"})
    assert s.base_url("openai") == "http://c/v1"


def test_ini_linelist_and_commas_combine() -> None:
    s = settings(ini={"llm_models": ["local:a, local:b", "fast=openai:c"]})
    assert [m.display for m in s.models] == ["local:a", "local:b", "fast"]


def test_temperatures_deduped_in_order() -> None:
    assert settings(cli={"llm_temperatures": "0.7,0,0.7"}).temperatures == [0.7, 0.0]


def test_skip_unavailable_flag_and_env() -> None:
    assert settings(cli={"llm_skip_unavailable": True}).skip_unavailable is True
    assert settings(env={"LLMLAB_SKIP_UNAVAILABLE": "yes"}).skip_unavailable is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env": {"LLMLAB_TEMPERATURES": "hot"}}, "env LLMLAB_TEMPERATURES: 'hot' is not a number"),
        (
            {"ini": {"llm_temperatures": ["3"]}},
            "ini llm_temperatures: temperature 3 is outside 0..2",
        ),
        ({"cli": {"llm_models": "nope:x"}}, "--llm-models: unknown provider 'nope'"),
        ({"env": {"LLMLAB_TIMEOUT": "0"}}, "env LLMLAB_TIMEOUT: 0 must be greater than 0"),
        (
            {"ini": {"llm_vllm_base_url": "localhost:8000"}},
            "ini llm_vllm_base_url: 'localhost:8000' is not an http(s) URL",
        ),
        (
            {"env": {"LLMLAB_SKIP_UNAVAILABLE": "maybe"}},
            "env LLMLAB_SKIP_UNAVAILABLE: 'maybe' is not a boolean",
        ),
    ],
)
def test_errors_name_their_source(kwargs: dict[str, dict[str, Any]], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(**kwargs)
    assert message in str(info.value)


def test_threads_default_shares_cpus_among_xdist_workers() -> None:
    assert default_threads(cpu_count=8, workers="2") == 4
    assert default_threads(cpu_count=2, workers="4") == 1
    assert default_threads(cpu_count=4, workers="") == 4


def test_every_option_has_three_spellings() -> None:
    for option in OPTIONS:
        assert option.ini_key == "llm_" + option.name
        assert option.env_names[0] == "LLMLAB_" + option.name.upper()
        assert option.cli_flag == "--llm-" + option.name.replace("_", "-")
