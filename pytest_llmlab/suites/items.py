"""Suite files as pytest collectors, their cases as pytest items.

``suites/capitals.suite.yaml::france[local:smollm2-135m-T0]`` is one case on one model
at one temperature. It runs like a Python LLM test: the same bound model, records,
spool, repeated-runs plan and budgets (`pytest_llmlab.runner`), so ``-k``, ``-m`` (a
case's ``tags`` are markers), ``--lf``, xdist and the reports work as for any test. A
case or file that cannot be collected becomes an item that reports its one-line message
as an error at setup, so the other cases and suites still run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_llmlab.cases import ItemPlan, LLMCase, plan_of, set_item_plan
from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.expect import expect
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.base import Generation
from pytest_llmlab.models.spec import SpecError
from pytest_llmlab.results import PendingRecords, Record
from pytest_llmlab.runner import RECORDS, RESOURCES, open_llm, run_llm_body
from pytest_llmlab.suites.checks import CustomCheck, run_check
from pytest_llmlab.suites.expand import BrokenCase, SuiteCase, SuiteContext, read_suite, suite_kind
from pytest_llmlab.suites.source import SuiteError
from pytest_llmlab.suites.structured import score_fields

__all__ = ["FORCED_SUITES", "SuiteErrorItem", "SuiteFile", "SuiteItem", "suite_collector"]

#: Files named by ``--llm-suite``, resolved: collected as suites whatever their name.
FORCED_SUITES = pytest.StashKey[frozenset[Path]]()
_CONTEXT = pytest.StashKey[SuiteContext]()
_TAGS = pytest.StashKey[set[str]]()
_DATA_FILES = pytest.StashKey[dict[Path, set[Path]]]()


def suite_collector(file_path: Path, parent: pytest.Collector) -> SuiteFile | None:
    """The collector of ``file_path`` when it is a suite, else None: a data file that a
    YAML suite beside it (or in the folder above) reads is not a suite of its own,
    whatever its name."""
    forced = file_path.resolve() in parent.config.stash.get(FORCED_SUITES, frozenset())
    kind = suite_kind(file_path, forced=forced)
    if kind is None:
        return None
    if (
        not forced
        and kind != "yaml"
        and file_path.resolve() in _data_files(parent.config, file_path)
    ):
        return None
    collector: SuiteFile = SuiteFile.from_parent(parent, path=file_path)
    collector.forced = forced
    return collector


def _data_files(config: pytest.Config, file_path: Path) -> set[Path]:
    """The data files the YAML suites in ``file_path``'s folder and its parent read
    (``data``, ``fewshot.data``, ``structured.data``), resolved; cached per folder."""
    cache = config.stash.setdefault(_DATA_FILES, {})
    found: set[Path] = set()
    for folder in (file_path.parent, file_path.parent.parent):
        if folder not in cache:
            cache[folder] = _referenced(folder)
        found |= cache[folder]
    return found


def _referenced(folder: Path) -> set[Path]:
    paths: set[Path] = set()
    for suite in sorted(folder.glob("*.suite.y*ml")):
        try:
            document = yaml.safe_load(suite.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # its own collection reports what is wrong with it
        entries = [document] if isinstance(document, dict) else []
        entries += (
            [e for e in (entries[0].get("cases") or []) if isinstance(e, dict)] if entries else []
        )
        for entry in entries:
            for holder in (entry, entry.get("fewshot"), entry.get("structured")):
                if isinstance(holder, dict) and isinstance(holder.get("data"), str):
                    paths.add((folder / holder["data"]).resolve())
    return paths


def _context(config: pytest.Config) -> SuiteContext:
    """The session's preset folders and custom checks (asked of the hook once)."""
    context = config.stash.get(_CONTEXT, None)
    if context is None:
        settings = config.stash[RESOURCES].settings
        folder = Path(settings.system_prompts).expanduser()
        if not folder.is_absolute():
            folder = config.rootpath / folder
        custom: dict[str, CustomCheck] = {}
        for mapping in config.hook.pytest_llmlab_checks(config=config):
            custom.update(mapping or {})
        context = config.stash[_CONTEXT] = SuiteContext((folder,), custom)
    return context


class SuiteFile(pytest.File):
    """One suite file: its cases x the session's (or the case's) models and temperatures."""

    forced = False

    def collect(self) -> Iterator[pytest.Item]:
        settings = self.config.stash[RESOURCES].settings
        try:
            cases = read_suite(self.path, _context(self.config), forced=self.forced)
        except SuiteError as exc:
            yield SuiteErrorItem.from_parent(self, name=self.path.name, message=str(exc))
            return
        for case in cases:
            if isinstance(case, BrokenCase):
                yield SuiteErrorItem.from_parent(self, name=case.id, message=case.message)
                continue
            try:
                llm_cases, plan = plan_of(settings, case.plan)
            except (SpecError, ValueError) as exc:
                message = f"{case.position}: case {case.id!r}: {exc}"
                yield SuiteErrorItem.from_parent(self, name=case.id, message=message)
                continue
            for llm_case in llm_cases:
                name = f"{case.id}[{llm_case.id}]"
                yield SuiteItem.from_parent(
                    self,
                    name=name,
                    # Given as a string, pytest (9.2+) parses the `[...]` as the item's
                    # params, as it does for the ids `--lf` reads back from its cache.
                    nodeid=f"{self.nodeid}::{name}",
                    case=case,
                    llm_case=llm_case,
                    plan=plan,
                )


class SuiteErrorItem(pytest.Item):
    """A case (or file) that cannot run: an error at setup with its one-line message."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def setup(self) -> None:
        pytest.fail(self.message, pytrace=False)

    def runtest(self) -> None:  # never reached: setup fails
        pytest.fail(self.message, pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}::{self.name}"


class SuiteItem(pytest.Item):
    """One case on one model at one temperature."""

    #: Tells the plugin this item generates (meters are announced, reports kept).
    needs_llm = True

    def __init__(
        self, *, case: SuiteCase, llm_case: LLMCase, plan: ItemPlan, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.llm_case = llm_case
        self._llm: LLM | None = None
        self.extra_keyword_matches.update(
            word for word in (case.suite, case.category) if word is not None
        )
        registered = self.config.stash.setdefault(_TAGS, set())
        for tag in case.tags:
            if tag not in registered:
                self.config.addinivalue_line("markers", f"{tag}: a prompt-suite tag")
                registered.add(tag)
            self.add_marker(tag)
        set_item_plan(self, plan)

    def _record_fields(self, record: Record) -> None:
        record["suite"] = self.case.suite
        record["category"] = self.case.category
        record["case_id"] = self.case.id
        record["max_points"] = self.case.max_points

    def setup(self) -> None:
        prefetcher = self.config.stash[RESOURCES].prefetcher(self.session)
        if prefetcher is not None:
            prefetcher.before(self)  # this case and the next ones, up to --llm-concurrency
        self._llm = open_llm(self, self.llm_case, record_fields=self._record_fields)

    def runtest(self) -> None:
        run_llm_body(self, self._run_case, {}, self._llm)

    def _run_case(self) -> None:
        """One run: generate, run every check, score the record."""
        assert self._llm is not None
        records = self.stash.setdefault(RECORDS, PendingRecords())
        first = len(records.pending)
        generations = self._generate()
        expectations = [expect(generation) for generation in generations]
        generation = generations[-1]
        case = self.case.as_dict()
        verdicts: list[bool] = []
        entries: list[dict[str, Any]] = []
        extraction: dict[str, Any] | None = None
        turn_of = self.case.turn_of or (0,) * len(self.case.checks)
        for check, turn in zip(self.case.checks, turn_of, strict=True):
            expectation = expectations[turn]
            if check.name == "structured":
                score = score_fields(generation.text, check.args)
                extraction = score.to_dict()
                if not score.valid:
                    expectation.fail("structured", score.error or "no valid JSON object")
                ok = score.valid
            else:
                ok = run_check(expectation, check, case)
            verdicts.append(ok)
            entry: dict[str, Any] = {"check": check.name, "passed": ok, "points": check.points}
            if self.case.turns:
                entry["turn"] = turn
            if check.name == "judge" and expectation.judge_result is not None:
                entry["judge"] = expectation.judge_result.to_dict()
                expectation.judge_result = None
            entries.append(entry)
        failed = any(g.error is not None for g in generations)
        points = 0.0 if failed else self.case.points(verdicts)
        for record in records.pending[first:]:
            if record["judge_for"] is None:  # the judge's own records score nothing
                record["points"] = points
                record["checks"] = entries
                record["structured"] = extraction

    def first_request(self) -> tuple[str | None, dict[str, Any]] | None:
        """The prompt and arguments of the case's first generation, for generating it
        ahead (`pytest_llmlab.prefetch`); None for a scripted conversation."""
        if self.case.turns:
            return None
        messages = [dict(m) for m in self.case.messages] if self.case.messages else None
        return self.case.prompt, {"messages": messages}

    def _generate(self) -> list[Generation]:
        """The case's answers: one, or one per turn of a scripted conversation."""
        assert self._llm is not None
        if self.case.turns:
            chat = self._llm.chat()
            return [chat.say(text) for text in self.case.turns]
        first = self.first_request()
        assert first is not None
        prompt, kwargs = first
        return [self._llm.generate(prompt, **kwargs)]

    def teardown(self) -> None:
        if self._llm is not None:
            self._llm.close()  # first: a generation made ahead and not taken is dropped
        prefetcher = self.config.stash[RESOURCES].prefetcher(self.session)
        if prefetcher is not None:
            prefetcher.after(self)  # a request of its still queued never starts

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if excinfo.errisinstance(LLMLabError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        position = self.case.position
        return position.path, position.line - 1, f"{self.case.suite}::{self.name}"
