"""Build providers from specs, and keep one per model per process.

`PROVIDERS` says which wire-protocol module streams each ``provider:`` prefix, where its
API key lives and whether the key is mandatory; base URLs come from the settings (ini or
env override, else the provider's default). ``local`` starts the embedded server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from pytest_llmlab.models.anthropic import AnthropicProvider
from pytest_llmlab.models.base import Provider
from pytest_llmlab.models.gemini import GeminiProvider
from pytest_llmlab.models.lmstudio import LMStudioProvider
from pytest_llmlab.models.local import EmbeddedLlamaCpp, default_threads
from pytest_llmlab.models.ollama import OllamaProvider
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.replay import ReplayTransport
from pytest_llmlab.models.retry import CLOUD_RETRIES, RetryPolicy
from pytest_llmlab.models.spec import ModelSpec

__all__ = ["CLOUD_CONCURRENCY", "LOCAL_CONCURRENCY", "SERVER_CONCURRENCY", "ProviderPool"]

#: ``--llm-concurrency=auto`` by backend: the embedded model, clouds, other servers.
LOCAL_CONCURRENCY = 1
CLOUD_CONCURRENCY = 8
SERVER_CONCURRENCY = 4

#: The client class of each wire protocol in `PROVIDERS` (``local`` is built apart).
_PROTOCOLS: dict[str, type[OpenAICompatible]] = {
    "openai": OpenAICompatible,
    "ollama": OllamaProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "lmstudio": LMStudioProvider,
}


class ProviderPool:
    """One provider per model (per alias) in this process, closed at session end.

    Constructed from plain values (not the settings object), so the models package
    does not depend on `pytest_llmlab.config`.
    """

    def __init__(
        self,
        *,
        base_urls: Mapping[str, str],
        timeout_s: float,
        deadline_s: float | None = None,
        threads: int | None = None,
        ctx: int = 4096,
        retries: int | None = None,
        concurrency: int | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        """``retries``: per request, after 429/503/529 or a reset before the answer;
        None: `CLOUD_RETRIES` for providers whose default endpoint needs a key (the
        clouds), none for the others."""
        self._retries = retries
        self._concurrency = concurrency
        self._base_urls = dict(base_urls)
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s  # None: auto per request; 0: none
        self._threads = threads
        self._ctx = ctx
        self._announce = announce
        self._providers: dict[str, Provider] = {}
        self._replayers: dict[str, tuple[OpenAICompatible, ReplayTransport]] = {}

    def get(self, spec: ModelSpec) -> Provider:
        """The provider of ``spec``'s model, built (not started) on first use.

        One per display name: two aliases of one model each get their own, so every
        message names the alias the test used (for ``local:``, two servers).
        """
        provider = self._providers.get(spec.display)
        if provider is None:
            provider = self._build(spec)
            self._providers[spec.display] = provider
        return provider

    def _build(self, spec: ModelSpec) -> Provider:
        info = PROVIDERS[spec.provider]
        if info.protocol == "local":
            return EmbeddedLlamaCpp(
                model=spec.model,
                display=spec.display,
                threads=self._threads or default_threads(),
                ctx=self._ctx,
                timeout_s=self._timeout_s,
                deadline_s=self._deadline_s,
                announce=self._announce,
                slots=self.concurrency(spec),
            )
        base_url = self._base_urls.get(spec.provider) or str(info.default_base_url)
        key_env = next((name for name in info.key_envs if os.environ.get(name)), None)
        return _PROTOCOLS[info.protocol](
            model=spec.model,
            display=spec.display,
            base_url=base_url,
            api_key=os.environ.get(key_env) if key_env else None,
            api_key_env=" or ".join(info.key_envs) or None,
            require_key=info.requires_key(base_url),
            timeout_s=self._timeout_s,
            deadline_s=self._deadline_s,
            retry=RetryPolicy(
                self._retries
                if self._retries is not None
                else (CLOUD_RETRIES if info.key_required else 0)
            ),
            llama_tokenizer=info.llama_tokenizer,
        )

    def concurrency(self, spec: ModelSpec) -> int:
        """Generations of ``spec``'s model in flight at once (``--llm-concurrency``):
        as set, else 1 for the embedded model (one model copy, few cores), 8 for the
        clouds, 4 for other servers."""
        if self._concurrency is not None:
            return self._concurrency
        info = PROVIDERS[spec.provider]
        if info.protocol == "local":
            return LOCAL_CONCURRENCY
        return CLOUD_CONCURRENCY if info.key_required else SERVER_CONCURRENCY

    def replayer(self, spec: ModelSpec) -> tuple[OpenAICompatible, ReplayTransport]:
        """A client of ``spec``'s wire protocol (the embedded model's is OpenAI's, from
        llama.cpp's server) whose transport plays cassettes: the stream classes of live
        traffic, with no network, no key and no model to load. One per display name."""
        found = self._replayers.get(spec.display)
        if found is None:
            info = PROVIDERS[spec.provider]
            transport = ReplayTransport()
            protocol = "openai" if info.protocol == "local" else info.protocol
            base_url = (
                "http://127.0.0.1/v1"
                if info.protocol == "local"
                else self._base_urls.get(spec.provider) or str(info.default_base_url)
            )
            client = _PROTOCOLS[protocol](
                model=spec.model,
                display=spec.display,
                base_url=base_url,
                timeout_s=self._timeout_s,
                deadline_s=self._deadline_s,
                transport=transport,
                llama_tokenizer=info.llama_tokenizer,
            )
            found = self._replayers[spec.display] = (client, transport)
        return found

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
        for client, _ in self._replayers.values():
            client.close()
        self._replayers.clear()
