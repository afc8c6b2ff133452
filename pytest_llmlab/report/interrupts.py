"""SIGTERM handled like Ctrl-C, and neither signal landing inside a record write.

A cancelled CI job gets SIGTERM; pytest only knows Ctrl-C (KeyboardInterrupt). While a
session runs, SIGTERM raises KeyboardInterrupt too, so pytest stops the same way: the
session finishes, every report is written, the exit status is non-zero. Both signals
wait while the controller writes a record (`critical`): an interrupt between writing a
line and noting it as written would make a record go missing or appear twice.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Interrupts"]

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Interrupts:
    """The session's SIGTERM/SIGINT handlers (installed from the main thread only)."""

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, _Handler] = {}
        self._depth = 0
        self._pending: signal.Signals | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            if signum is signal.SIGINT and current is not signal.default_int_handler:
                continue  # someone else handles Ctrl-C: leave it to them
            self._previous[signum] = signal.signal(signum, self._interrupt)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = signal.Signals(signum)
            return
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Hold both signals until the block is done, then raise for the first one."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                name, self._pending = self._pending.name, None
                raise KeyboardInterrupt(f"signal {name}")

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
