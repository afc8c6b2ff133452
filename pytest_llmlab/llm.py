"""The bound model a test receives as the `llm` fixture.

``LLM`` pairs one provider with one model spec and one temperature. It builds the
Request, streams it, assembles the Generation and hands every finished (or failed)
generation to a recorder, which is how results reach ``results.jsonl``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pytest

from pytest_llmlab.energy.base import TokenSegment
from pytest_llmlab.energy.meters import MeterSet, OpenWindow
from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.errors import LLMLabError, StreamError, hide_own_frames
from pytest_llmlab.generation_stats import Samples
from pytest_llmlab.models.assemble import GenerationAssembler
from pytest_llmlab.models.base import (
    Generation,
    Message,
    Provider,
    Request,
    StreamHandle,
    tool_problem,
)
from pytest_llmlab.models.openai import ChunkStream
from pytest_llmlab.models.replay import Tape
from pytest_llmlab.models.spec import ModelSpec

if TYPE_CHECKING:
    from pytest_llmlab.cassettes import ItemTape, Plan

__all__ = ["LLM", "Chat", "GenerationStream"]

__tracebackhide__ = hide_own_frames

Recorder = Callable[[Generation], None]


def system_text(
    system: str | None,
    context: str | None = None,
    injections: Sequence[Mapping[str, str]] | None = None,
) -> str | None:
    """The system message: ``system``, then the conversation context wrapped in
    ``<conversation_context>...</conversation_context>``, then each injection's
    ``content`` (the behaviour lab's free-form additions), blank-line separated."""
    parts = [system] if system else []
    if context:
        parts.append(f"<conversation_context>\n{context}\n</conversation_context>")
    parts.extend(injection["content"] for injection in injections or () if injection["content"])
    return "\n\n".join(parts) if parts else None


def _tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The tools as the Request holds them; a ValueError naming the first bad one."""
    if tools is None:
        return None
    if isinstance(tools, Mapping | str):
        raise ValueError("tools= takes a list of OpenAI function schemas, not one")  # noqa: TRY004  # a bad argument
    offered = [dict(tool) if isinstance(tool, Mapping) else tool for tool in tools]
    for index, tool in enumerate(offered):
        problem = tool_problem(tool, f"tools[{index}]")
        if problem is not None:
            raise ValueError(
                f"{problem} (an OpenAI function schema: {{'type': 'function', "
                "'function': {'name': ..., 'parameters': {...}}})"
            )
    return offered or None


class GenerationStream:
    """Answer text chunks as they arrive; `generation` once finished or stopped.

    ``break`` out of the loop, or call `close`, to stop: the connection is dropped, the
    server stops generating, and `generation` holds what arrived with
    ``finish_reason == "cancelled"``. Also usable as a context manager. A stream that
    fails (any exception, not only ours) is recorded with ``finish_reason == "error"``
    and the message before the exception propagates. ``where`` (``<endpoint> for
    <model>``) names the stream in errors raised here.
    """

    def __init__(
        self,
        handle: StreamHandle,
        assembler: GenerationAssembler,
        on_finish: Callable[[Generation], None],
        window: OpenWindow | None = None,
        energy_note: str | None = None,
        estimator: Callable[[Generation], EnergyReading] | None = None,
        *,
        where: str = "the provider",
        injection_tokens: int | None = None,
        turn: int | None = None,
        backend: Callable[[], dict[str, Any]] | None = None,
        finish: Finisher | None = None,
    ) -> None:
        self._where = where
        #: What records the answer's frames, when the handle has one (cassettes).
        self.tape: Tape | None = getattr(handle, "tape", None)
        #: Makes the assembled Generation final (a playback's recorded timings, energy):
        #: it is given this run's fields (turn, attempts...) and brings the energy.
        self._final = finish
        self._injection_tokens = injection_tokens
        self._turn = turn
        #: Read when the generation ends: a provider may learn facts from the answer.
        self._backend = backend
        self._handle = handle
        self._assembler = assembler
        self._on_finish = on_finish
        self._window = window
        self._energy_note = energy_note
        self._estimator = estimator
        self._generation: Generation | None = None
        self._iterator: Generator[str, None, None] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    def _iterate(self) -> Generator[str, None, None]:
        __tracebackhide__ = hide_own_frames
        if self._generation is not None:
            return
        handle = self._handle
        # An OpenAI-format stream leaves its chunks' checks to the assembler, which
        # makes them as it reads each chunk, once; the stream words a bad one's error,
        # quoting the chunk as it came.
        quoting = handle if isinstance(handle, ChunkStream) and handle.chunks_checked else None
        if quoting is not None:
            quoting.check_chunks = False
        unmarked = self._window  # marked at the first token, then None
        try:
            for index, chunk in enumerate(handle):
                try:
                    text = self._assembler.add(chunk)
                except ValueError as exc:  # a chunk of the wrong shape
                    problem = self._assembler.problem
                    if quoting is not None and problem is not None:
                        raise quoting.malformed_chunk(problem) from None
                    raise StreamError(
                        f"malformed chunk in stream from {self._where} after {index} chunks: {exc}"
                    ) from None
                if unmarked is not None and self._assembler.first_token_ns is not None:
                    unmarked.mark_first_token()
                    unmarked = None
                if text:
                    yield text
        except LLMLabError as exc:  # a refused connection too: record, then raise
            self._finish(finish_reason="error", error=str(exc))
            raise
        except Exception as exc:  # a bug is a failed generation too, never "cancelled"
            self._finish(finish_reason="error", error=f"{type(exc).__name__}: {exc}")
            raise
        tail = self._assembler.flush()
        if tail:
            yield tail
        self._finish()

    @property
    def text(self) -> str:
        """The answer received so far."""
        return self._assembler.text

    @property
    def finished(self) -> bool:
        return self._generation is not None

    @property
    def generation(self) -> Generation:
        """The finished Generation; stops the stream first if it is still open."""
        if self._generation is None:
            self.close()
        assert self._generation is not None
        return self._generation

    def close(self) -> None:
        """Stop the request now (idempotent)."""
        if self._generation is not None:
            return
        if self._iterator is not None:
            self._iterator.close()
        self._handle.close()
        if self._generation is None:
            self._finish(finish_reason="cancelled")

    def _finish(self, *, finish_reason: str | None = None, error: str | None = None) -> None:
        generation = self._assembler.finish(finish_reason=finish_reason)
        update: dict[str, Any] = {
            "injection_tokens": self._injection_tokens,
            "attempts": getattr(self._handle, "attempts", 1),
            "turn": self._turn,
            "backend": self._backend() if self._backend is not None else {},
        }
        if self._final is not None and error is None and finish_reason is None:
            generation = self._final(generation, update)  # with the recorded energy
        else:
            update["energy"] = self._reading(generation)
            if error is not None:
                update["error"] = error
            generation = generation.model_copy(update=update)
        self._generation = generation
        self._on_finish(generation)

    def _reading(self, generation: Generation) -> EnergyReading:
        """Close the energy window; prefill and decode are the token segments in it."""
        if self._estimator is not None:
            return self._estimator(generation)
        if self._window is None:
            return EnergyReading.unavailable(self._energy_note or "not metered")
        timings, usage = generation.timings, generation.usage
        segments: list[TokenSegment] = []
        if timings.first_token_ns is not None:
            # Prefill is the prompt tokens the server processed: cached ones cost nothing.
            segments.append(
                TokenSegment(
                    timings.started_ns, timings.first_token_ns, usage.processed_prompt_tokens
                )
            )
            segments.append(
                TokenSegment(timings.first_token_ns, timings.finished_ns, usage.completion_tokens)
            )
        return self._window.close(segments=segments, completion_tokens=usage.completion_tokens)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: What makes an assembled Generation final (`GenerationStream`'s ``finish``): given it
#: and this run's fields for it (turn, attempts, ...), the Generation to keep.
Finisher = Callable[[Generation, dict[str, Any]], Generation]


def _nothing() -> None:
    pass


@dataclass(eq=False)
class Prefetched:
    """One request generated ahead of its test (`pytest_llmlab.prefetch`): queued, then
    streamed in a thread, then finished. ``future`` ends with the Generation, or None
    when it was not generated ahead after all (its test then sends it itself)."""

    key: str
    future: Future[Generation | None]
    stop: threading.Event
    #: The stream, once a thread has started it.
    stream: GenerationStream | None = None
    #: Starts it at once if it is still waiting for a slot (its test wants it now).
    urge: Callable[[], None] = _nothing

    def discard(self) -> None:
        """Stop it (at its next chunk) and forget it: never recorded."""
        self.stop.set()
        self.future.cancel()

    def wait(self) -> Generation | None:
        """The finished Generation (raising what its stream raised), or None."""
        self.urge()
        return self.future.result()


#: An item's `Prefetched`, until its `LLM` takes it.
PREFETCHED = pytest.StashKey[Prefetched]()


def drain(stream: GenerationStream, stop: threading.Event) -> Generation:
    """Read ``stream`` to its end (in a thread of `LLM.map` or of the prefetcher);
    stop early once ``stop`` is set."""
    for _ in stream:
        if stop.is_set():
            stream.close()
            break
    return stream.generation


class _OneChunk:
    """A stream handle of at most one ready chunk (a generation made ahead)."""

    def __init__(self, chunk: dict[str, Any] | None) -> None:
        self._chunks = [chunk] if chunk is not None else []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._chunks)

    def close(self) -> None:
        pass


class Chat:
    """A conversation with one model (`LLM.chat`): the history, and one Generation per turn.

    `say` sends the system message, the history and the new user message; the answer
    (its text, and its tool calls in OpenAI's form) joins the history. When the model
    called tools, answer each call with `tool_result`, then `say()` without text for
    the model's reply. Every turn is recorded like any generation, with its index in
    ``Generation.turn`` (0 first). A turn that fails leaves the history as it was.
    """

    def __init__(self, llm: LLM, *, system: str | None = None, **defaults: Any) -> None:
        if "messages" in defaults:
            raise ValueError("llm.chat() keeps its own messages: say() them instead")
        self.llm = llm
        self.system = system
        self.defaults = defaults
        #: The conversation so far (without the system message), as sent next turn.
        self.messages: list[Message] = []
        #: Each turn's Generation, in order.
        self.turns: list[Generation] = []

    def __repr__(self) -> str:
        return f"<Chat {self.llm.name} T={self.llm.temperature:g}, {len(self.turns)} turns>"

    @property
    def unanswered(self) -> list[str]:
        """Ids of the last turn's tool calls that no `tool_result` answered yet."""
        answered = set()
        for message in reversed(self.messages):
            if message.role == "tool" and message.tool_call_id is not None:
                answered.add(message.tool_call_id)
            elif message.role == "assistant":
                calls = message.tool_calls or []
                return [c["id"] for c in calls if c.get("id") and c["id"] not in answered]
        return []

    def say(self, text: str | None = None, **kwargs: Any) -> Generation:
        """Send ``text`` as the next user message (None: send the history as it is,
        after tool results) and return the model's answer. ``kwargs`` are arguments of
        `generate` for this turn only. A ValueError when the model's tool calls are not
        all answered yet: servers refuse such a history."""
        __tracebackhide__ = hide_own_frames
        if self.unanswered:
            raise ValueError(
                f"answer the tool calls {', '.join(map(repr, self.unanswered))} with "
                "chat.tool_result(call_id, content) before the next say()"
            )
        sent = [*self.messages]
        if text is not None:
            sent.append(Message(role="user", content=text))
        if not sent:
            raise ValueError("chat.say() needs text for the first turn")
        arguments = {"system": self.system, **self.defaults, **kwargs, "messages": sent}
        stream = self.llm._start(None, len(self.turns), arguments)
        for _ in stream:
            pass
        generation = stream.generation  # a failed turn raised above, history untouched
        self.messages = [*sent, generation.as_message()]
        self.turns.append(generation)
        return generation

    def tool_result(self, call_id: str, content: str) -> None:
        """Answer the tool call ``call_id`` (`ToolCall.id`) with the tool's result."""
        self.messages.append(Message(role="tool", tool_call_id=call_id, content=content))


class LLM:
    """One model at one temperature, ready to generate.

    ``defaults`` are request parameters applied to every call unless the call sets
    them (the ``@pytest.mark.llm(max_tokens=..., system=..., ...)`` values).
    ``before_generation`` runs before each generation starts, and may stop the test
    (the cost budget skips it).
    """

    def __init__(
        self,
        *,
        model_spec: ModelSpec,
        temperature: float,
        provider: Provider,
        defaults: Mapping[str, Any] | None = None,
        recorder: Recorder | None = None,
        meters: MeterSet | None = None,
        before_generation: Callable[[], None] | None = None,
        tape: ItemTape | None = None,
        before_live: Callable[[], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        """``tape`` plays back or records each request (cassettes, ``--llm-resume``);
        ``before_live`` runs before a generation that is not played back (the model's
        availability check, deferred while a cassette might answer); ``concurrency``
        is how many generations `map` and `sample` keep in flight."""
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        #: Keep every live answer's frames (a generation made ahead, for its item's
        #: cassette), whatever the tape says.
        self.record_frames = False
        #: A request of this test generated ahead of it (`pytest_llmlab.prefetch`).
        self.prefetched: Prefetched | None = None
        self.model_spec = model_spec
        self._before_generation = before_generation
        self._tape = tape
        self._before_live = before_live
        self.temperature = temperature
        self.provider = provider
        self.defaults = dict(defaults or {})
        self._recorder = recorder
        self.meters = meters
        #: Set by the repeated-sampling runner: the current run, and the amount added
        #: to a fixed seed so every run is a fresh (still reproducible) sample.
        self.run_index: int | None = None
        self.seed_offset = 0
        #: Every generation this model made (finished, stopped or failed), in order.
        self.generations: list[Generation] = []
        self._open: list[GenerationStream] = []

    @property
    def spec(self) -> str:
        """``provider:model``, without the alias."""
        return self.model_spec.spec

    @property
    def alias(self) -> str | None:
        return self.model_spec.alias

    @property
    def name(self) -> str:
        """What ids and reports show: the alias, or the spec."""
        return self.model_spec.display

    @property
    def endpoint(self) -> str:
        return self.provider.endpoint

    def __repr__(self) -> str:
        return f"<LLM {self.name} T={self.temperature:g}>"

    def build_request(
        self,
        prompt: str | None = None,
        *,
        system: str | None = None,
        messages: Sequence[Mapping[str, Any] | Message] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logprobs: bool | None = None,
        context: str | None = None,
        injections: Sequence[Mapping[str, str]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> Request:
        """The Request `generate` would send (defaults applied)."""
        system = system_text(
            system if system is not None else self.defaults.get("system"),
            context if context is not None else self.defaults.get("context"),
            injections if injections is not None else self.defaults.get("injections"),
        )
        chat: list[Message] = []
        if system:
            chat.append(Message(role="system", content=system))
        for message in messages or ():
            chat.append(
                message if isinstance(message, Message) else Message.model_validate(dict(message))
            )
        if prompt is not None:
            chat.append(Message(role="user", content=prompt))
        if not chat or all(m.role == "system" for m in chat):
            raise ValueError("llm.generate needs a prompt or messages")
        stop = stop if stop is not None else self.defaults.get("stop")
        merged_params = {**self.defaults.get("params", {}), **params}
        top_logprobs = merged_params.pop("top_logprobs", None)
        # A marker's or a suite's ``logprobs`` arrives as a param: it must switch the
        # request's logprobs (and their alternatives) off, not ride along as an extra
        # body field beside ``top_logprobs`` (HTTP 400 "top_logprobs requires logprobs").
        marker_logprobs = merged_params.pop("logprobs", None)
        if logprobs is None:
            logprobs = True if marker_logprobs is None else bool(marker_logprobs)
        # A marker's or a suite's tools arrive as params; the call's own win.
        marker_tools = merged_params.pop("tools", None)
        marker_choice = merged_params.pop("tool_choice", None)
        offered = marker_tools if tools is None else tools
        choice = marker_choice if tool_choice is None else tool_choice
        return Request(
            messages=chat,
            temperature=self.temperature if temperature is None else temperature,
            max_tokens=max_tokens if max_tokens is not None else self.defaults.get("max_tokens"),
            seed=self._seed(seed if seed is not None else self.defaults.get("seed")),
            stop=[stop] if isinstance(stop, str) else (list(stop) if stop else None),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            tools=_tools(offered),
            tool_choice=dict(choice) if isinstance(choice, Mapping) else choice,
            params=merged_params,
        )

    def _seed(self, seed: int | None) -> int | None:
        return None if seed is None else seed + self.seed_offset

    def stream(self, prompt: str | None = None, **kwargs: Any) -> GenerationStream:
        """Start a generation; iterate the result for answer text as it arrives.

        Takes the same arguments as `generate`.
        """
        __tracebackhide__ = hide_own_frames
        return self._start(prompt, None, kwargs)

    def _start(
        self, prompt: str | None, turn: int | None, kwargs: dict[str, Any]
    ) -> GenerationStream:
        """`stream`, for turn ``turn`` of a `Chat` (None: not in a chat)."""
        __tracebackhide__ = hide_own_frames
        request = self.build_request(prompt, **kwargs)
        plan = self._tape.plan(self.model_spec, request) if self._tape is not None else None
        assembler = self._assembler(request)
        ahead = self._take_prefetched(request, plan)
        if ahead is not None:
            adopted = self._adopt(ahead, assembler, plan, turn)
            if adopted is not None:
                return adopted
            assembler = self._assembler(request)  # its clock starts now: sent from here
        if plan is not None and plan.stored is not None:
            assert self._tape is not None
            played, final = self._tape.playback(
                self.model_spec, request, plan, assembler.started_ns
            )
            stream = GenerationStream(
                played,
                assembler,
                functools.partial(self._finished, plan, None),
                where=f"{plan.stored.shown} for {self.name}",
                turn=turn,
                finish=final,
            )
            with self._lock:
                self._open.append(stream)
            return stream
        if self._before_generation is not None:
            self._before_generation()
        if self._before_live is not None:
            self._before_live()
        injection_tokens = self._injection_tokens(request, kwargs)
        window, note = self._open_window()
        handle = self.provider.stream_chunks(request)
        tape: Tape | None = None
        keep = self.record_frames or (plan is not None and plan.record_to is not None)
        if keep and isinstance(handle, ChunkStream):
            tape = handle.tape = Tape(assembler.started_ns)
        stream = GenerationStream(
            handle,
            assembler,
            functools.partial(self._finished, plan, tape),
            window,
            note,
            self._cloud_estimator(),
            where=f"{self.endpoint} for {self.name}",
            injection_tokens=injection_tokens,
            turn=turn,
            backend=self._backend_facts,
        )
        with self._lock:
            self._open.append(stream)
        return stream

    def _assembler(self, request: Request) -> GenerationAssembler:
        return GenerationAssembler(
            request=request, model=self.name, spec=self.spec, provider=self.model_spec.provider
        )

    def _take_prefetched(self, request: Request, plan: Plan | None) -> Prefetched | None:
        """The generation made ahead for ``request``, if this is it (taken once)."""
        ahead = self.prefetched
        if ahead is None or (plan is not None and plan.stored is not None):
            return None
        from pytest_llmlab.cassettes import request_fields, request_key

        key = (
            plan.key if plan is not None else request_key(request_fields(self.model_spec, request))
        )
        if key != ahead.key:
            return None
        self.prefetched = None
        return ahead

    def _adopt(
        self, ahead: Prefetched, assembler: GenerationAssembler, plan: Plan | None, turn: int | None
    ) -> GenerationStream | None:
        """A stream of the generation made ahead: waits for it, and records it as this
        test's own (a failed one too, then raises its error); None when it was not
        made ahead after all."""
        __tracebackhide__ = hide_own_frames
        try:
            generation = ahead.wait()
        except BaseException:
            if ahead.stream is not None:  # recorded as failed where it ran: here too
                self._finished(plan, ahead.stream.tape, ahead.stream.generation)
            raise
        if generation is None or ahead.stream is None:
            return None
        chunk = {"choices": [{"index": 0, "delta": {"content": generation.text}}]}
        stream = GenerationStream(
            _OneChunk(chunk if generation.text else None),
            assembler,
            functools.partial(self._finished, plan, ahead.stream.tape),
            where=f"{self.endpoint} for {self.name}",
            turn=turn,
            finish=lambda _assembled, _fields: generation.model_copy(update={"turn": turn}),
        )
        with self._lock:
            self._open.append(stream)
        return stream

    def _backend_facts(self) -> dict[str, Any]:
        """The provider's facts about its model (``model_facts()``, which providers
        that have any cache), or none."""
        facts = getattr(self.provider, "model_facts", None)
        result = facts() if callable(facts) else None
        return dict(result) if isinstance(result, Mapping) else {}

    def _injection_tokens(self, request: Request, kwargs: Mapping[str, Any]) -> int | None:
        """The tokens ``context`` and ``injections`` add to the system message, by the
        server's tokenizer (llama.cpp's); None without them or without a tokenizer."""
        context = kwargs.get("context", self.defaults.get("context"))
        injections = kwargs.get("injections", self.defaults.get("injections"))
        count = getattr(self.provider, "count_tokens", None)
        if not (context or injections) or count is None or not request.messages:
            return None
        system = kwargs.get("system", self.defaults.get("system"))
        full = (request.messages[0].content or "") if request.messages[0].role == "system" else ""
        with_extras, bare = count(full), count(system) if system else 0
        if not isinstance(with_extras, int) or not isinstance(bare, int):
            return None
        return max(0, with_extras - bare)

    def _open_window(self) -> tuple[OpenWindow | None, str | None]:
        """Meter the generation where this machine's meters can see it."""
        if self.meters is None:
            return None, "not metered (no meter set)"
        if not getattr(self.provider, "runs_locally", True):
            return None, (
                f"{self.endpoint} is not on this machine: local meters cannot see its energy"
            )
        return self.meters.open(self.name), None

    def _cloud_estimator(self) -> Callable[[Generation], EnergyReading] | None:
        """EcoLogits for the OpenAI cloud, whose hardware no local meter sees."""
        meters = self.meters
        cloud = getattr(self.provider, "cloud_provider", None)
        if meters is None or cloud is None:
            return None
        model = self.model_spec.model

        def estimate(generation: Generation) -> EnergyReading:
            return meters.cloud_reading(
                provider=cloud,
                model=model,
                completion_tokens=generation.usage.completion_tokens,
                latency_s=generation.timings.total_s,
            )

        return estimate

    def generate(
        self,
        prompt: str | None = None,
        *,
        system: str | None = None,
        messages: Sequence[Mapping[str, Any] | Message] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logprobs: bool | None = None,
        context: str | None = None,
        injections: Sequence[Mapping[str, str]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> Generation:
        """Generate a full answer and return it as a `Generation`.

        ``messages`` (OpenAI-style dicts) come before ``prompt``, which is sent as the
        last user message; ``system`` is prepended, followed in the same system message
        by ``context`` (wrapped in ``<conversation_context>`` tags) and the ``content``
        of each of ``injections``. ``tools`` (OpenAI function schemas) are offered to
        the model, ``tool_choice`` (``"auto"``, ``"none"``, ``"required"`` or a named
        function) says whether it must call one; the calls it makes are
        ``gen.tool_calls``. Other keyword arguments go into the request body verbatim
        (``top_p``, ``response_format``, ``top_logprobs``...).
        """
        __tracebackhide__ = hide_own_frames
        stream = self.stream(
            prompt,
            system=system,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
            logprobs=logprobs,
            context=context,
            injections=injections,
            tools=tools,
            tool_choice=tool_choice,
            **params,
        )
        for _ in stream:
            pass
        return stream.generation

    def sample(self, prompt: str | None = None, *, n: int, **kwargs: Any) -> Samples:
        """Generate `n` answers to the same request and return them as `Samples`.

        Takes the arguments of `generate`. A fixed ``seed`` is advanced by one per
        sample (seed, seed+1, ...) so the samples are reproducible yet not identical.
        """
        __tracebackhide__ = hide_own_frames
        if n < 1:
            raise ValueError(f"llm.sample needs n >= 1, got {n}")
        seed = kwargs.pop("seed", None)
        if seed is None:
            seed = self.defaults.get("seed")
        calls = [(prompt, {**kwargs, "seed": None if seed is None else seed + i}) for i in range(n)]
        return Samples(self._run_many(calls, self.concurrency))

    def map(
        self,
        prompts: Iterable[str | None],
        *,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> list[Generation]:
        """Generate an answer to each of ``prompts`` (same arguments as `generate`),
        up to ``concurrency`` at once (default: the model's ``--llm-concurrency``),
        and return the Generations in input order.

        Requests are built and started in input order (so a cassette's samples and
        seeds line up), each in flight in its own thread. When one fails, no further
        one starts; the first error in input order is raised once the started ones
        ended (every one is recorded, as always).
        """
        __tracebackhide__ = hide_own_frames
        calls = [(prompt, dict(kwargs)) for prompt in prompts]
        return self._run_many(calls, max(1, concurrency or self.concurrency))

    def _run_many(
        self, calls: Sequence[tuple[str | None, dict[str, Any]]], limit: int
    ) -> list[Generation]:
        """`generate` for each call, ``limit`` in flight at once, in input order."""
        __tracebackhide__ = hide_own_frames
        if limit <= 1 or len(calls) <= 1:
            return [self.generate(prompt, **kwargs) for prompt, kwargs in calls]
        results: list[Generation | None] = [None] * len(calls)
        errors: dict[int, BaseException] = {}
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="llmlab-map") as pool:
            running: dict[Future[Generation], int] = {}
            started = 0
            try:
                while (started < len(calls) and not errors) or running:
                    while started < len(calls) and len(running) < limit and not errors:
                        prompt, kwargs = calls[started]
                        # Built here, in order: plans, budgets and windows as for one call.
                        stream = self.stream(prompt, **kwargs)
                        running[pool.submit(drain, stream, stop)] = started
                        started += 1
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        error = future.exception()
                        if error is None:
                            results[index] = future.result()
                        else:
                            errors[index] = error
            except BaseException:
                stop.set()  # a stop (Ctrl-C, a budget skip): the others end at their next chunk
                raise
        if errors:
            raise errors[min(errors)]
        return [result for result in results if result is not None]

    def chat(self, system: str | None = None, **defaults: Any) -> Chat:
        """Start a conversation: each `Chat.say` sends the history and returns that
        turn's Generation. ``defaults`` (any argument of `generate` but ``messages``:
        ``tools``, ``max_tokens``...) apply to every turn unless the turn sets them."""
        return Chat(self, system=system, **defaults)

    def samples(self) -> Samples:
        """Every generation made through this fixture so far, with statistics."""
        return Samples(self.generations)

    def _finished(self, plan: Plan | None, tape: Tape | None, generation: Generation) -> None:
        with self._lock:  # `map` finishes generations in its threads
            self._open = [s for s in self._open if not s.finished]
            self.generations.append(generation)
        if self._tape is not None and plan is not None:
            live = plan.stored is None
            redactor = getattr(self.provider, "redactor", None) if live else None
            self._tape.finished(
                plan,
                generation,
                tape,
                spec=self.model_spec,
                redactor=redactor() if callable(redactor) else None,
                variant=getattr(self.provider, "variant", None) if tape is not None else None,
            )
        if self._recorder is not None:
            self._recorder(generation)

    def close(self) -> None:
        """Stop streams the test left open (called at fixture teardown) and let go of
        the recorder: it refers back to this object, and the cycle would keep every
        generation of the test alive until a full garbage collection."""
        for stream in list(self._open):
            stream.close()
        self._open.clear()
        self._recorder = None
        if self.prefetched is not None:  # made ahead for a request this test never sent
            self.prefetched.discard()
            self.prefetched = None
