"""The embedded provider: llama.cpp in this process through xllamacpp.

xllamacpp starts llama.cpp's own HTTP server on a loopback port of this process; we then
talk to it with the same OpenAI-compatible client as every other endpoint, so there is
one stream parser and one set of timings for all backends. One server per model per
process, started on first use and stopped when the session ends.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_llmlab.errors import ModelNotFound, ModelUnavailable, hide_own_frames
from pytest_llmlab.models.base import Request
from pytest_llmlab.models.gguf import gguf_problem
from pytest_llmlab.models.openai import ChunkStream, OpenAICompatible
from pytest_llmlab.models.store import resolve_local_model

__all__ = ["EmbeddedLlamaCpp", "default_threads"]

__tracebackhide__ = hide_own_frames


def default_threads(cpu_count: int | None = None, workers: str | None = None) -> int:
    """CPU threads per embedded server: the CPUs shared among xdist workers."""
    cpus = cpu_count or os.cpu_count() or 1
    count = workers if workers is not None else os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    try:
        share = max(1, int(count or 1))
    except ValueError:
        share = 1
    return max(1, cpus // share)


class EmbeddedLlamaCpp:
    """A GGUF served by an in-process llama.cpp server on 127.0.0.1 (random port)."""

    def __init__(
        self,
        *,
        model: str,
        display: str,
        threads: int,
        ctx: int,
        timeout_s: float,
        deadline_s: float | None = None,
        announce: Callable[[str], None] | None = None,
        slots: int = 1,
    ) -> None:
        """``slots``: requests llama.cpp serves at once (``n_parallel``); each gets a
        context of ``ctx`` tokens (the server's is ``ctx x slots``, split evenly)."""
        self.model = model
        self.slots = max(1, slots)
        self.display = display
        self.threads = threads
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s  # None: auto per request; 0: none
        self.endpoint = "embedded llama.cpp (not started)"
        self.path: Path | None = None
        self._announce = announce
        self._server: Any = None
        self._client: OpenAICompatible | None = None
        self._failure: ModelUnavailable | None = None

    #: llama.cpp runs in this process: local meters see all of its work.
    runs_locally = True

    @property
    def base_url(self) -> str:
        """The loopback ``.../v1`` URL of the running server (starts it if needed)."""
        return self._ensure_client().base_url

    def ensure_available(self) -> None:
        __tracebackhide__ = hide_own_frames
        self._ensure_client()

    def _ensure_client(self) -> OpenAICompatible:
        __tracebackhide__ = hide_own_frames
        if self._failure is not None:
            raise self._failure
        if self._client is None:
            try:
                self._client = self._start()
            except ModelUnavailable as exc:
                self._failure = exc  # do not retry a broken model for every test
                raise
        return self._client

    def _start(self) -> OpenAICompatible:
        try:
            import xllamacpp
        except ImportError:
            raise ModelUnavailable(
                f"{self.display} needs the embedded runtime: pip install 'pytest-llmlab[local]'"
            ) from None
        self.path = resolve_local_model(self.model, announce=self._announce)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port: many processes, no clashes
        # llama.cpp splits n_ctx among its slots: each request keeps --llm-ctx tokens.
        params.n_ctx = self.ctx * self.slots
        params.n_parallel = self.slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = -1  # llama.cpp logs to the C stderr, past pytest's capture
        params.warmup = True
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as exc:
            # llama.cpp's own words say little ("Failed to init server"): read the
            # file's header for the reason.
            reason = gguf_problem(self.path) or f"{exc} (its GGUF header reads fine)"
            raise ModelNotFound(
                f"llama.cpp could not load {self.path} for {self.display}: {reason}"
            ) from None
        address = str(self._server.listening_address).rstrip("/")
        self.endpoint = address + "/v1"
        return OpenAICompatible(
            model=self.path.name,
            display=self.display,
            base_url=self.endpoint,
            timeout_s=self.timeout_s,
            deadline_s=self.deadline_s,
            llama_tokenizer=True,
        )

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` for this model (llama.cpp's ``/tokenize``)."""
        return self._ensure_client().count_tokens(text)

    def stream_chunks(self, request: Request) -> ChunkStream:
        __tracebackhide__ = hide_own_frames
        return self._ensure_client().stream_chunks(request)

    def request_body(self, request: Request) -> dict[str, Any]:
        return self._ensure_client().request_body(request)

    def close(self) -> None:
        """Stop the server: xllamacpp stops its loop when the object is destroyed."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None:
            self._server = None
            gc.collect()
