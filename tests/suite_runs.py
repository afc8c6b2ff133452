"""Running prompt suites through pytester against the loopback protocol double.

`SuiteLab` writes suite files into a pytester folder and runs pytest there with the
model ``vllm:tiny`` pointed at a `LoopbackServer` (tests/loopback.py: a scripted double
of the OpenAI chat-completions stream, not a model), so a suite's answers are whatever
the test queued, and every request body the plugin sent can be read back.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackServer, point_vllm_at, stream

__all__ = ["MODEL", "SuiteLab", "error_lines", "has_lines", "user_prompts"]

MODEL = "vllm:tiny"
#: Plugins the inner runs do not need (hypothesis alone costs ~1.5 s of import per run).
_QUIET = ("-p", "no:hypothesispytest", "-p", "no:anyio")


class SuiteLab:
    """A pytester folder, the loopback double, and a clean ``LLMLAB_*`` environment."""

    def __init__(
        self, pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.pytester = pytester
        self.server = server
        point_vllm_at(monkeypatch, server)

    @property
    def path(self) -> Path:
        return self.pytester.path

    def write(self, name: str, text: str) -> Path:
        """``name`` (folders created) holding ``text`` dedented."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def answer(self, *texts: str) -> None:
        """The double answers ``texts`` to the next requests, in order."""
        self.server.play(*(stream([text]) for text in texts))

    def always(self, text: str) -> None:
        """The double answers ``text`` to every request not queued otherwise."""
        self.server.default = stream([text])

    def run(
        self, *args: str, xdist: bool = False, cache: bool = False, model: str = MODEL
    ) -> pytest.RunResult:
        plugins = [*_QUIET]
        if not xdist:
            plugins += ["-p", "no:xdist"]
        if not cache:
            plugins += ["-p", "no:cacheprovider"]
        return self.pytester.runpytest(f"--llm-models={model}", *plugins, *args)

    def collected(self, *args: str) -> list[str]:
        """The node ids ``--collect-only -q`` lists, in order."""
        result = self.run("--collect-only", "-q", *args)
        return [line for line in result.outlines if "::" in line and " " not in line]

    def records(self) -> list[dict[str, Any]]:
        path = self.path / "reports" / "results.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat request the double received, in order."""
        return [post.body for post in self.server.posts]


def user_prompts(lab: SuiteLab) -> list[str]:
    """The last user message of every request the double received, in order."""
    return [
        [m["content"] for m in body["messages"] if m["role"] == "user"][-1] for body in lab.bodies()
    ]


def error_lines(result: pytest.RunResult) -> list[str]:
    """The one-line messages of the ``ERROR at setup`` sections, in order."""
    lines = result.outlines
    found = []
    for number, line in enumerate(lines):
        if re.match(r"^_+ ERROR at setup of .* _+$", line):
            found.append(lines[number + 1])
    return found


def has_lines(result: pytest.RunResult, *parts: str) -> None:
    """Each of ``parts`` ends a line of the output, in this order (plain text, no
    wildcards: node ids and messages hold ``[...]``)."""
    lines = iter(result.outlines)
    for part in parts:
        assert any(line.endswith(part) for line in lines), f"no line ends with {part!r}"
