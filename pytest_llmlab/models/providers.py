"""The one table of providers: every fact about a ``provider:`` prefix lives here.

Spec parsing (which prefixes exist), settings (each provider's base-URL option, its ini
key and environment variables), the provider registry (which wire-protocol module
streams it, which variable holds its API key, whether the key is mandatory), the
``llmlab`` command and the README's provider table all read `PROVIDERS`; the key
variables are registered with `pytest_llmlab.redact`, which masks their values. Adding a
provider is one entry here plus its protocol module.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_llmlab.redact import register_key_variables

__all__ = ["PROVIDERS", "ProviderInfo"]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What one ``provider:`` prefix talks to and how it is configured."""

    name: str
    #: One line for error messages and ``--help``.
    description: str
    #: The wire-protocol module under ``pytest_llmlab.models`` that streams it.
    protocol: str
    #: The base URL used when neither ini nor environment sets one; None for a
    #: provider that picks its own (the embedded server's random loopback port).
    default_base_url: str | None = None
    #: Environment variables read for the base URL after ``LLMLAB_<NAME>_BASE_URL``.
    base_url_env: tuple[str, ...] = ()
    #: The environment variable holding the API key, sent as a Bearer token.
    api_key_env: str | None = None
    #: True when a key is mandatory at the default base URL (a cloud); compatible
    #: servers elsewhere may run without one.
    key_required: bool = False
    #: The server is llama.cpp's, whose ``POST /tokenize`` (beside ``/v1``) counts the
    #: tokens of a text (for ``injection_tokens``).
    llama_tokenizer: bool = False

    @property
    def base_url_setting(self) -> str:
        """The settings name of the base URL: ini ``llm_<it>``, env ``LLMLAB_<IT>``."""
        return f"{self.name}_base_url"

    def requires_key(self, base_url: str) -> bool:
        """Whether a request to ``base_url`` needs the API key to be set."""
        return self.key_required and base_url.rstrip("/") == self.default_base_url


PROVIDERS: dict[str, ProviderInfo] = {
    info.name: info
    for info in (
        ProviderInfo(
            "local",
            "embedded llama.cpp (xllamacpp) running a GGUF from the model store or a path",
            protocol="local",
        ),
        ProviderInfo(
            "openai",
            "OpenAI or any OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)",
            protocol="openai",
            default_base_url="https://api.openai.com/v1",
            base_url_env=("OPENAI_BASE_URL",),
            api_key_env="OPENAI_API_KEY",
            key_required=True,
        ),
        ProviderInfo(
            "lmstudio",
            "LM Studio server, default http://127.0.0.1:1234/v1",
            protocol="openai",
            default_base_url="http://127.0.0.1:1234/v1",
            api_key_env="LMSTUDIO_API_KEY",
        ),
        ProviderInfo(
            "vllm",
            "vLLM OpenAI-compatible server, default http://127.0.0.1:8000/v1",
            protocol="openai",
            default_base_url="http://127.0.0.1:8000/v1",
            api_key_env="VLLM_API_KEY",
        ),
        ProviderInfo(
            "llamacpp",
            "llama.cpp llama-server, default http://127.0.0.1:8080/v1",
            protocol="openai",
            default_base_url="http://127.0.0.1:8080/v1",
            api_key_env="LLAMA_API_KEY",
            llama_tokenizer=True,
        ),
    )
}

# Every key variable is a secret the redaction step masks wherever text leaves the process.
register_key_variables(info.api_key_env for info in PROVIDERS.values() if info.api_key_env)
