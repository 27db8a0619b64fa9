"""Progress bars with ETA for long dataset builds (rich), or a silent stand-in."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator


class _Silent:
    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def update(self, task: int, **_: Any) -> None:
        pass


@contextlib.contextmanager
def task_progress(enabled: bool = True) -> Iterator[Any]:
    """A rich Progress (description, bar, done/total, elapsed, ETA) on stderr, or a no-op when disabled."""
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        yield bar
