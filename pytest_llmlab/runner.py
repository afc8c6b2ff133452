"""One LLM test item, from its bound model to its verdict: shared by Python tests (the
`llm` fixture and ``pytest_pyfunc_call``) and by prompt-suite cases (`suites.items`).

`open_llm` checks the item's model (skip or error when unavailable, skip once the cost
budget is spent), measures the idle baseline once, and binds the model to the item's
records, spool and spend (`pytest_llmlab.spend`); `run_llm_body`
runs the body under the item's repeated-runs plan and holds its generations to the
session's budgets. Both read the process's `SessionResources` from the config stash.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pytest_llmlab.budgets import budget_failure
from pytest_llmlab.cases import LLMCase, item_plan
from pytest_llmlab.errors import ModelUnavailable
from pytest_llmlab.judge import JudgeRequest, JudgeRunner, judging, response_format
from pytest_llmlab.keys import RECORDS, RESOURCES
from pytest_llmlab.llm import LLM, PREFETCHED
from pytest_llmlab.models.base import Generation, Provider
from pytest_llmlab.models.spec import parse_spec
from pytest_llmlab.repeat import repeat_failure, run_test_body
from pytest_llmlab.resources import SessionResources
from pytest_llmlab.results import PendingRecords, Record, record_from_generation

__all__ = ["RECORDS", "RESOURCES", "open_llm", "run_llm_body"]


def open_llm(
    item: pytest.Item,
    case: LLMCase,
    *,
    record_fields: Callable[[Record], None] | None = None,
) -> LLM:
    """The model of ``case`` bound to ``item``: every generation becomes a record of
    the item (spooled at once). ``record_fields(record)`` may fill in fields of the
    item's own (a suite's name, category and case id) before a record is spooled.

    An unavailable model skips the item under ``--llm-skip-unavailable``, else fails
    its setup (an error) with one line naming the model and endpoint. A priced model
    skips the item once the session's ``--llm-cost-budget`` is spent, here and before
    each generation.
    """
    resources = item.config.stash[RESOURCES]
    budget = resources.cost_budget
    provider = resources.pool.get(case.model)
    tape = resources.item_tape(item)
    live: Callable[[], None] = functools.partial(_prepare_live, resources, provider, case)
    if tape is None or not tape.may_play:
        budget.check(case.model)
        live()
    else:
        # A cassette or an earlier run may answer every request: the model is checked
        # (and the cost budget) before the first generation that is not played back.
        live = _once(live)
    meters = resources.meters()
    records = item.stash.setdefault(RECORDS, PendingRecords())
    worker = resources.worker
    spool, run_id = resources.spool, resources.run_id
    model = case.model
    if spool is not None:
        own: dict[str, Any] = {}  # the item's fields, for the record of a crashed test
        if record_fields is not None:
            record_fields(own)  # type: ignore[arg-type]  # fills only its own keys
        spool.started(
            test_id=item.nodeid, model=model.display, spec=model.spec, alias=model.alias,
            provider=model.provider, temperature=case.temperature, worker=worker,
            run_id=run_id, **own,
        )  # fmt: skip

    def record(generation: Generation) -> None:
        entry = record_from_generation(
            generation, test_id=item.nodeid, alias=model.alias, worker=worker, run_id=run_id
        )
        entry["run"] = bound.run_index
        if record_fields is not None:
            record_fields(entry)
        budget.charge(entry)  # a replay is priced, never charged
        records.add(entry)
        if spool is not None:
            spool.finished(entry)

    bound = LLM(
        model_spec=case.model,
        temperature=case.temperature,
        provider=provider,
        defaults=item_plan(item, resources.settings).defaults,
        recorder=record,
        meters=meters,
        before_generation=functools.partial(budget.check, case.model),
        tape=tape,
        before_live=live if tape is not None and tape.may_play else None,
        concurrency=resources.pool.concurrency(case.model),
    )
    bound.prefetched = item.stash.get(PREFETCHED, None)
    return bound


def _prepare_live(resources: SessionResources, provider: Provider, case: LLMCase) -> None:
    """Check that the model can be used (skip or fail the test in one line when not),
    and measure the idle baseline once a local model is up."""
    unavailable: str | None = None
    try:
        provider.ensure_available()
    except ModelUnavailable as exc:
        unavailable = str(exc)
    if unavailable is not None:  # outside the except: no chained traceback in the report
        if resources.settings.skip_unavailable:
            pytest.skip(f"model unavailable: {unavailable}")
        pytest.fail(unavailable, pytrace=False)
    if provider.runs_locally:
        resources.measure_baseline_once()


def _once(function: Callable[[], None]) -> Callable[[], None]:
    """``function``, run on the first call only (once it returned normally)."""
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            function()
            done = True

    return run


def run_llm_body(
    item: pytest.Item,
    body: Callable[..., object],
    funcargs: Mapping[str, Any],
    bound: LLM | None,
) -> None:
    """Run an LLM test's body: soft `expect` checks reported at the end of each run,
    the body repeated per the item's plan, then the energy and TTFT budgets."""
    __tracebackhide__ = True
    settings = item.config.stash[RESOURCES].settings
    records = item.stash.setdefault(RECORDS, PendingRecords())
    with judging(_judge_runner(item)):
        result = run_test_body(
            body,
            funcargs,
            plan=item_plan(item, settings).repeat,
            llm=bound,
            strict_capabilities=settings.strict_capabilities,
            on_run_end=records.mark_run,
        )
    if result is not None:
        records.set_repeat_result(result)
        failure = repeat_failure(result)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
    failure = budget_failure(settings, records.pending)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def _judge_runner(item: pytest.Item) -> JudgeRunner:
    """The judge of ``item``'s `expect(...).judge` checks: each sample a generation of
    the judge model, recorded as a record of the item with ``judge_for`` set."""
    resources = item.config.stash[RESOURCES]

    def run(request: JudgeRequest) -> list[Generation]:
        spec = parse_spec(request.model)
        provider = resources.pool.get(spec)
        tape = resources.item_tape(item)
        if tape is None or not tape.may_play:
            provider.ensure_available()
        records = item.stash.setdefault(RECORDS, PendingRecords())
        spool, worker, run_id = resources.spool, resources.worker, resources.run_id

        def record(generation: Generation) -> None:
            entry = record_from_generation(
                generation, test_id=item.nodeid, alias=spec.alias, worker=worker, run_id=run_id
            )
            entry["judge_for"] = request.judged
            resources.cost_budget.charge(entry)
            records.add(entry)
            if spool is not None:
                spool.finished(entry)

        judge = LLM(
            model_spec=spec,
            temperature=request.temperature,
            provider=provider,
            recorder=record,
            meters=resources.meters(),
            before_generation=functools.partial(resources.cost_budget.check, spec),
            tape=tape,
            before_live=provider.ensure_available if tape is not None and tape.may_play else None,
        )
        try:
            return [
                judge.generate(
                    messages=request.messages,
                    seed=sample,
                    max_tokens=request.max_tokens,
                    logprobs=False,
                    response_format=response_format(),
                )
                for sample in range(request.samples)
            ]
        finally:
            judge.close()

    return run
