"""The run's log: status changes, checkpoints, evals, warnings, and the replies to our commands."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from hrm_tui.runstate import LogLine

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "warn": "yellow", "command": "cyan"}


def format_line(line: LogLine) -> Text:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.t))
    t = Text()
    t.append(f"{stamp}  ", style="dim")
    t.append(line.text, style=LEVEL_STYLE.get(line.level, ""))
    return t


class LogPanel(RichLog):
    DEFAULT_CSS = """
    LogPanel { height: 1fr; min-height: 3; scrollbar-size-vertical: 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=False, max_lines=400, auto_scroll=True, **kwargs)
        self._shown_total = 0  # RunState.log_total when we last wrote

    def show(self, lines: list[LogLine], total: int, rebuild: bool = False) -> None:
        """Write the lines logged since the last call (all of them when `rebuild`)."""
        if rebuild or total < self._shown_total:
            self.clear()
            self._shown_total = total - len(lines)
        new = min(total - self._shown_total, len(lines))
        for line in lines[len(lines) - new :] if new > 0 else []:
            self.write(format_line(line))
        self._shown_total = total
