"""Hooks other plugins implement to extend pytest-llmlab.

Implement them in a ``conftest.py`` or a plugin module; pytest finds them by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pytest_llmlab.energy.base import Meter
    from pytest_llmlab.models.base import Generation


@pytest.hookspec
def pytest_llmlab_make_meters(config: pytest.Config) -> list[Meter]:
    """Return extra energy meters to sample at every window edge (a smart plug, a PDU).

    A meter is any object with ``name: str``, ``sample() -> list[CounterSample]``
    (cumulative joules per domain, read now) and ``close()``; see
    `pytest_llmlab.Meter`. Domains are summed into a reading's ``other``
    by their prefix (``plug-0`` -> ``other["plug"]``). Called once per process, on first
    use of a metered fixture; every implementation's list is added.

    Example, in ``conftest.py``::

        import time
        from pytest_llmlab import CounterSample

        class WallPlug:
            name = "plug"

            def __init__(self) -> None:
                self.total_j = 0.0  # read your plug's cumulative energy here

            def sample(self) -> list[CounterSample]:
                return [CounterSample("plug-0", self.total_j, time.monotonic_ns(),
                                      provenance="measured")]

            def close(self) -> None:
                pass

        def pytest_llmlab_make_meters(config):
            return [WallPlug()]

    .. versionadded:: 0.1
    """
    return []


@pytest.hookspec
def pytest_llmlab_checks(
    config: pytest.Config,
) -> Mapping[str, Callable[[Generation, Any], bool | str | None]]:
    """Return extra declarative checks for prompt suites, by name.

    A check is called as ``function(generation, args)`` with the value written after
    its name in the suite (``- no_apology: true`` gives ``args = True``); it returns
    True or None to pass, False to fail, or a string, which fails with that message.
    An exception fails the check and names it. Called once per process, when the
    first suite is collected; every implementation's mapping is added.

    Example, in ``conftest.py``::

        def no_shouting(generation, args):
            limit = args if isinstance(args, int) else 0
            shouted = [w for w in generation.text.split() if len(w) > 1 and w.isupper()]
            return True if len(shouted) <= limit else f"shouted words: {shouted}"

        def pytest_llmlab_checks(config):
            return {"no_shouting": no_shouting}

    .. versionadded:: 0.2
    """
    return {}
