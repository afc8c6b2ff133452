"""Suite cases generated ahead of their items: ``--llm-concurrency`` inside one process.

A prompt suite's requests are known at collection. When a suite item is set up, the
`Prefetcher` queues the first request of it and of the suite items after it (in the
order this process will run them: the session's items, or under xdist this worker's
queue; a bounded look ahead), and streams them, each in a thread, while every model has
a free slot: up to its ``--llm-concurrency`` in flight. A slot is taken when a request
starts and given back when its stream ends, which starts the next request waiting, at
once, from that thread: the pipeline stays full while the items take their answers,
rather than refilling in bursts when the next item is set up. The item still runs as
always: when its own request is the one generated ahead, `LLM` takes the
finished (or still streaming) Generation instead of sending it again, and records it
as the item's own; its checks, outcome, timings and record are the item's, in order.

The request is built (and its cassette key computed) when it is queued, in the main
thread; its stream is opened, and its energy window and clock started, in the thread
that sends it, when a slot is free.

Only what an item will ask first is generated ahead (one prompt, no scripted turns, a
single run): anything else runs as without concurrency. A request played back from a
cassette or an earlier run is not generated ahead (a replay is instant). When the
session stops (``-x``, ``--maxfail``, Ctrl-C), nothing new starts and what is in flight
(at most N per model, started before the stop) is stopped at its next chunk; a
generation no item took is never recorded.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmlab.cases import item_plan
from pytest_llmlab.cassettes import request_fields, request_key
from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.llm import LLM, PREFETCHED, Prefetched, drain
from pytest_llmlab.models.registry import CLOUD_CONCURRENCY

if TYPE_CHECKING:
    from pytest_llmlab.resources import SessionResources
    from pytest_llmlab.suites.items import SuiteItem

__all__ = ["Prefetcher"]

#: Items looked at past the current one, per unit of concurrency.
_LOOKAHEAD_PER_SLOT = 4


class _Slots:
    """One model's requests made ahead: its slots, its queue, its threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiting: deque[_Waiting] = deque()
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="llmlab-prefetch")


@dataclass(eq=False)
class _Waiting:
    """A queued request: what streams it, and the `Prefetched` its item will take."""

    llm: LLM
    prompt: str | None
    kwargs: dict[str, Any]
    ahead: Prefetched
    slots: _Slots
    #: Holds a slot (from its start until its stream ends).
    holding: bool = False


class Prefetcher:
    """The process's generations in flight ahead of their suite items."""

    def __init__(self, resources: SessionResources, session: pytest.Session) -> None:
        self._resources = resources
        self._session = session
        self._lock = threading.Lock()
        self._models: dict[str, _Slots] = {}
        self._queued: dict[str, _Waiting] = {}  # by nodeid
        self._tried: set[str] = set()
        self._positions: dict[str, int] | None = None
        self._closed = False

    def before(self, item: SuiteItem) -> None:
        """``item`` is about to run: queue it and the ones after it, start what fits."""
        if self._stopping():
            return
        for candidate in self._upcoming(item):
            # A suite item (duck-typed: the suites package imports this one).
            if hasattr(candidate, "first_request") and candidate.nodeid not in self._tried:
                self._tried.add(candidate.nodeid)
                self._queue(candidate)  # type: ignore[arg-type]

    def after(self, item: pytest.Item) -> None:
        """``item`` ended: forget its request (still queued: it never starts)."""
        with self._lock:
            waiting = self._queued.pop(item.nodeid, None)
            if waiting is not None and waiting in waiting.slots.waiting:
                waiting.slots.waiting.remove(waiting)

    def _stopping(self) -> bool:
        return self._closed or bool(self._session.shouldstop or self._session.shouldfail)

    def _upcoming(self, item: pytest.Item) -> list[pytest.Item]:
        """``item`` and the ones this process runs after it (a bounded look ahead)."""
        items = self._session.items
        slots = self._resources.settings.concurrency or CLOUD_CONCURRENCY
        most = 1 + _LOOKAHEAD_PER_SLOT * slots
        queued = _worker_queue(self._session.config)
        if queued is not None:
            return [item, *(items[i] for i in queued[: most - 1] if 0 <= i < len(items))]
        if self._positions is None:
            self._positions = {entry.nodeid: index for index, entry in enumerate(items)}
        start = self._positions.get(item.nodeid)
        return [item] if start is None else list(items[start : start + most])

    def _queue(self, item: SuiteItem) -> None:
        """Build ``item``'s first request and queue it (None of it when the item's
        own setup would refuse it, or a replay answers it)."""
        spec = item.llm_case.model
        resources = self._resources
        limit = resources.pool.concurrency(spec)
        if limit <= 1:
            return
        first = item.first_request()
        plan = item_plan(item, resources.settings)
        if first is None or plan.repeat.runs != 1:
            return
        tape = resources.item_tape(item)
        if tape is not None and tape.may_play:
            return  # a replay is instant: nothing to gain
        provider = resources.pool.get(spec)
        try:
            resources.cost_budget.check(spec)
            provider.ensure_available()
        except (LLMLabError, pytest.skip.Exception, pytest.fail.Exception):
            return  # the item's own setup says why
        if provider.runs_locally:
            resources.measure_baseline_once()
        detached = LLM(
            model_spec=spec,
            temperature=item.llm_case.temperature,
            provider=provider,
            defaults=plan.defaults,
            meters=resources.meters(),
        )
        detached.record_frames = tape is not None and tape.records
        prompt, kwargs = first
        try:
            request = detached.build_request(prompt, **kwargs)
        except (LLMLabError, ValueError):
            return
        slots = self._models.get(spec.display)
        if slots is None:
            slots = self._models[spec.display] = _Slots(limit)
        ahead = Prefetched(
            key=request_key(request_fields(spec, request)), future=Future(), stop=threading.Event()
        )
        waiting = _Waiting(detached, prompt, kwargs, ahead, slots)
        ahead.urge = functools.partial(self._urge, waiting)
        with self._lock:
            self._queued[item.nodeid] = waiting
            slots.waiting.append(waiting)
        item.stash[PREFETCHED] = ahead
        self._fill(slots)

    def _fill(self, slots: _Slots) -> None:
        """Start waiting requests while ``slots`` has a free one."""
        with self._lock:
            while slots.waiting and slots.busy < slots.limit and not self._stopping():
                self._submit(slots.waiting.popleft())

    def _urge(self, waiting: _Waiting) -> None:
        """Its item wants it now: start it even without a free slot (order kept for
        the rest; only a look ahead that ran past the items can leave it waiting)."""
        with self._lock:
            if waiting.holding or self._closed:
                return
            try:
                waiting.slots.waiting.remove(waiting)
            except ValueError:
                return
            self._submit(waiting)

    def _submit(self, waiting: _Waiting) -> None:
        """Start ``waiting`` in a thread, holding a slot (under the lock)."""
        waiting.holding = True
        waiting.slots.busy += 1
        waiting.slots.pool.submit(self._stream, waiting)

    def _stream(self, waiting: _Waiting) -> None:
        """In a thread: open the stream (its clock and energy window start now), read
        it to its end, and settle the future its item waits on."""
        ahead = waiting.ahead
        try:
            if not ahead.future.set_running_or_notify_cancel():
                return  # discarded before it started
            try:
                stream = waiting.llm.stream(waiting.prompt, **waiting.kwargs)
            except Exception:  # noqa: BLE001  # the item sends it itself and reports why
                ahead.future.set_result(None)
                return
            ahead.stream = stream
            try:
                ahead.future.set_result(drain(stream, ahead.stop))
            except BaseException as exc:  # noqa: BLE001  # raised in its item
                ahead.future.set_exception(exc)
        finally:
            self._release(waiting)

    def _release(self, waiting: _Waiting) -> None:
        """``waiting`` ended: its slot starts the next request waiting for one."""
        with self._lock:
            waiting.holding = False
            waiting.slots.busy -= 1
        self._fill(waiting.slots)

    def close(self) -> None:
        """Stop everything in flight and start nothing more."""
        with self._lock:
            self._closed = True
            everything = list(self._queued.values())
            self._queued.clear()
        for waiting in everything:
            waiting.ahead.discard()
        for slots in self._models.values():
            slots.pool.shutdown(wait=True, cancel_futures=True)
        self._models.clear()


def _worker_queue(config: pytest.Config) -> list[int] | None:
    """Under xdist, the indices of the items this worker was sent and has not begun
    (the next one first); None outside a worker, or when xdist keeps them elsewhere."""
    if not hasattr(config, "workerinput"):
        return None
    for plugin in config.pluginmanager.get_plugins():
        queue = getattr(plugin, "torun", None)
        if queue is None or not hasattr(plugin, "nextitem_index"):
            continue
        following = getattr(plugin, "nextitem_index", None)
        try:
            with queue.lock() as items:
                pending = list(items)
        except (AttributeError, TypeError):
            return None
        indices = [following, *pending]
        return [index for index in indices if isinstance(index, int)]
    return None
