"""Build providers from specs, and keep one per model per process.

Every ``openai``-style provider gets its base URL from the settings (ini or env
override, else the documented default); ``local`` starts the embedded server.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pytest_llmlab.config import Settings, default_threads
from pytest_llmlab.models.base import Provider
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import ModelSpec

__all__ = ["API_KEY_ENV", "ProviderPool", "build_provider"]

#: Where each provider's API key is read from. Only the OpenAI cloud requires one.
API_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "lmstudio": "LMSTUDIO_API_KEY",
    "vllm": "VLLM_API_KEY",
    "llamacpp": "LLAMA_API_KEY",
}

_OPENAI_CLOUD = "https://api.openai.com/v1"


def build_provider(
    spec: ModelSpec,
    settings: Settings,
    *,
    announce: Callable[[str], None] | None = None,
) -> Provider:
    """A provider for one model spec, not yet started or contacted."""
    if spec.provider == "local":
        return EmbeddedLlamaCpp(
            model=spec.model,
            display=spec.display,
            threads=settings.threads or default_threads(),
            ctx=settings.ctx,
            timeout_s=settings.timeout,
            announce=announce,
        )
    base_url = settings.base_url(spec.provider)
    key_env = API_KEY_ENV[spec.provider]
    return OpenAICompatible(
        model_name=spec.model,
        display=spec.display,
        base_url=base_url,
        api_key=os.environ.get(key_env) or None,
        api_key_env=key_env,
        # A key is mandatory for the OpenAI cloud only; compatible servers may run open.
        require_key=base_url.rstrip("/") == _OPENAI_CLOUD,
        timeout_s=settings.timeout,
    )


class ProviderPool:
    """One provider per (provider, model) in this process, closed at session end."""

    def __init__(
        self,
        settings: Settings,
        *,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._announce = announce
        self._providers: dict[str, Provider] = {}

    def get(self, spec: ModelSpec) -> Provider:
        provider = self._providers.get(spec.spec)
        if provider is None:
            provider = build_provider(spec, self.settings, announce=self._announce)
            self._providers[spec.spec] = provider
        return provider

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
