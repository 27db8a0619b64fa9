"""Progress bars with ETA for long dataset builds (rich), or a silent stand-in."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_interrupted = threading.Event()


def install_interrupt_guard() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered. CPython drops an exception raised
    inside a finalizer (`__del__`, a closing generator) with only a printed warning, so a SIGINT that lands
    there would be lost and the build would run on; builders call `raise_if_interrupted` at every progress
    tick and before publishing a dataset, so it is not."""

    def on_sigint(signum: int, frame: Any) -> None:
        _interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def raise_if_interrupted() -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt


class _Silent:
    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        raise_if_interrupted()

    def update(self, task: int, **_: Any) -> None:
        pass


@contextlib.contextmanager
def task_progress(enabled: bool = True) -> Iterator[Any]:
    """A rich Progress (description, bar, done/total, elapsed, ETA) on stderr, or a no-op when disabled."""
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        yield _Checked(bar)


class _Checked:
    """A rich Progress whose advance() first re-raises a remembered Ctrl-C."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def advance(self, task: int, advance: float = 1) -> None:
        raise_if_interrupted()
        self._bar.advance(task, advance)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)
