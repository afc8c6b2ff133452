"""Suite cases generated ahead of their items: ``--llm-concurrency`` inside one process.

A prompt suite's requests are known at collection. When a suite item is set up, the
`Prefetcher` starts the generations of it and of the suite items after it (in the order
this process will run them: the session's items, or under xdist this worker's queue),
each in a thread, until every model has its ``--llm-concurrency`` in flight. The item
still runs as always: when its own request is the one generated ahead, `LLM` takes the
finished (or still streaming) Generation instead of sending it again, and records it as
the item's own; its checks, outcome, timings and record are the item's, in order.

Only what an item will ask first is generated ahead (one prompt, no scripted turns, a
single run): anything else runs as without concurrency. A request played back from a
cassette or an earlier run is not generated ahead (a replay is instant). When the
session stops (``-x``, ``--maxfail``, Ctrl-C), nothing new starts and what is in flight
is stopped at its next chunk; a generation no item took is never recorded.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

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


class Prefetcher:
    """The process's generations in flight ahead of their suite items."""

    def __init__(self, resources: SessionResources, session: pytest.Session) -> None:
        self._resources = resources
        self._session = session
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._flying: dict[str, list[Prefetched]] = {}
        self._tried: set[str] = set()
        self._positions: dict[str, int] | None = None
        self._closed = False

    def before(self, item: SuiteItem) -> None:
        """``item`` is about to run: fill every model's slots from it onward."""
        if self._closed or self._session.shouldstop or self._session.shouldfail:
            return
        for candidate in self._upcoming(item):
            # A suite item (duck-typed: the suites package imports this one).
            if hasattr(candidate, "first_request") and candidate.nodeid not in self._tried:
                self._start(candidate)  # type: ignore[arg-type]

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

    def _start(self, item: SuiteItem) -> None:
        spec = item.llm_case.model
        resources = self._resources
        limit = resources.pool.concurrency(spec)
        flying = [p for p in self._flying.get(spec.display, []) if not p.future.done()]
        self._flying[spec.display] = flying
        if limit <= 1 or len(flying) >= limit:
            return
        self._tried.add(item.nodeid)
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
            stream = detached.stream(prompt, **kwargs)
        except (LLMLabError, ValueError):
            return
        stop = threading.Event()
        pool = self._pools.get(spec.display)
        if pool is None:
            pool = self._pools[spec.display] = ThreadPoolExecutor(
                max_workers=limit, thread_name_prefix="llmlab-prefetch"
            )
        ahead = Prefetched(
            key=request_key(request_fields(spec, request)),
            stream=stream,
            future=pool.submit(drain, stream, stop),
            stop=stop,
        )
        flying.append(ahead)
        item.stash[PREFETCHED] = ahead

    def close(self) -> None:
        """Stop everything in flight and start nothing more."""
        self._closed = True
        for flying in self._flying.values():
            for ahead in flying:
                ahead.discard()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()
        self._flying.clear()


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
