"""The one table of providers: every fact about a ``provider:`` prefix lives here.

Spec parsing (which prefixes exist), settings (each provider's base-URL option, its ini
key and environment variables), the provider registry (which wire-protocol module
streams it, which variable holds its API key, whether the key is mandatory), the
``llmlab`` command and the README's provider table all read `PROVIDERS`; the key
variables are registered with `pytest_llmlab.redact`, which masks their values. Adding a
provider is one entry here plus its protocol module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pytest_llmlab.redact import register_key_variables

__all__ = ["PROVIDERS", "ProviderInfo", "ollama_base_url"]

#: Ollama's port when ``OLLAMA_HOST`` names none.
_OLLAMA_PORT = 11434


def ollama_base_url(host: str | None) -> str:
    """Ollama's root URL from an ``OLLAMA_HOST``-style value, as Ollama's own clients
    read it (ollama-python's ``_parse_host``): no scheme means ``http``, no port means
    11434 (80 / 443 with an explicit ``http://`` / ``https://``), no host means
    127.0.0.1, a path is kept (a proxy's prefix). A bind-all address (``0.0.0.0``,
    ``::``) is reached on loopback, as Ollama's CLI does, and a trailing ``/v1`` or
    ``/api`` (its OpenAI-compatible URL, or the API's prefix) is dropped: the routes
    are under the root.

    >>> ollama_base_url(None), ollama_base_url("0.0.0.0"), ollama_base_url("h:1/v1")
    ('http://127.0.0.1:11434', 'http://127.0.0.1:11434', 'http://h:1')
    """
    value = (host or "").strip()
    port = _OLLAMA_PORT
    scheme, sep, hostport = value.partition("://")
    if not sep:
        scheme, hostport = "http", value
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    parts = urlsplit(f"{scheme}://{hostport}")
    name = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or port
    except ValueError:
        pass  # a port that does not parse: the default, as Ollama does
    if name in {"0.0.0.0", "::"}:  # a bind address: reached on loopback
        name = "127.0.0.1" if name == "0.0.0.0" else "::1"
    if ":" in name:
        name = f"[{name}]"
    path = parts.path.strip("/")
    for suffix in ("v1", "api"):
        if path == suffix or path.endswith(f"/{suffix}"):
            path = path.removesuffix(suffix).rstrip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


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
    #: The environment variable holding the API key (sent as the protocol module
    #: sends it: a Bearer token, ``x-api-key``, ``x-goog-api-key``).
    api_key_env: str | None = None
    #: More variables read for the key when `api_key_env` is unset, in order.
    extra_key_envs: tuple[str, ...] = ()
    #: True when a key is mandatory at the default base URL (a cloud); compatible
    #: servers elsewhere may run without one.
    key_required: bool = False
    #: The server is llama.cpp's, whose ``POST /tokenize`` (beside ``/v1``) counts the
    #: tokens of a text (for ``injection_tokens``).
    llama_tokenizer: bool = False
    #: Turns a base-URL setting written the provider's own way into an http(s) URL
    #: (``OLLAMA_HOST=gpu-box`` -> ``http://gpu-box:11434``); None: taken as written.
    parse_base_url: Callable[[str], str] | None = None

    @property
    def key_envs(self) -> tuple[str, ...]:
        """Every variable that may hold the key, the first set one wins."""
        return ((self.api_key_env,) if self.api_key_env else ()) + self.extra_key_envs

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
            "LM Studio server (its /api/v0 REST API, else /v1), default http://127.0.0.1:1234/v1",
            protocol="lmstudio",
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
        ProviderInfo(
            "ollama",
            "Ollama's native API (/api/chat), default http://127.0.0.1:11434 (OLLAMA_HOST)",
            protocol="ollama",
            default_base_url="http://127.0.0.1:11434",
            base_url_env=("OLLAMA_HOST",),
            api_key_env="OLLAMA_API_KEY",
            parse_base_url=ollama_base_url,
        ),
        ProviderInfo(
            "anthropic",
            "Anthropic Messages API (ANTHROPIC_API_KEY), default https://api.anthropic.com/v1",
            protocol="anthropic",
            default_base_url="https://api.anthropic.com/v1",
            api_key_env="ANTHROPIC_API_KEY",
            key_required=True,
        ),
        ProviderInfo(
            "gemini",
            "Google Gemini API (GEMINI_API_KEY or GOOGLE_API_KEY), default "
            "https://generativelanguage.googleapis.com/v1beta",
            protocol="gemini",
            default_base_url="https://generativelanguage.googleapis.com/v1beta",
            api_key_env="GEMINI_API_KEY",
            extra_key_envs=("GOOGLE_API_KEY",),
            key_required=True,
        ),
    )
}

# Every key variable is a secret the redaction step masks wherever text leaves the process.
register_key_variables(name for info in PROVIDERS.values() for name in info.key_envs)
