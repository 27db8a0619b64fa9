"""Progress for people watching a terminal or a log file: the one helper for dataset builds (bars with ETA)
and training (a line every few seconds and one at every eval, checkpoint, pause, stop and the end).

On a terminal (stderr is a tty) a rich live display; otherwise plain log lines (the trainer's stderr is
trainer.log when the app launched it). Build progress also reaches listeners (the trainer turns it into
events, so the app shows a build as more than `starting`). Torch-free.

The Ctrl-C guard lives here too: every progress tick re-raises a Ctrl-C that a finalizer swallowed."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hrm.progress")

# Plain lines at most this often (a build's or training's); HRM_PROGRESS_S overrides (0: every tick).
PLAIN_INTERVAL_S = 5.0
LISTENER_INTERVAL_S = 1.0
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


def plain_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("HRM_PROGRESS_S", PLAIN_INTERVAL_S)))
    except ValueError:
        return PLAIN_INTERVAL_S


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --- dataset builds --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildProgress:
    what: str  # e.g. "train: easy sudoku"
    done: int
    total: int | None


_listeners: list[Callable[[BuildProgress], None]] = []


@contextlib.contextmanager
def listening(callback: Callable[[BuildProgress], None]) -> Iterator[None]:
    """Call `callback` with build progress (at most every LISTENER_INTERVAL_S per task, and at completion)."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


class _Task:
    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.t_plain = self.t_listen = time.monotonic()
        self.t0 = self.t_plain


class Bars:
    """add_task / advance / update, as rich's Progress; each tick checks for Ctrl-C, then reports."""

    def __init__(self, enabled: bool, rich_bar: Any = None) -> None:
        self._enabled, self._rich = enabled, rich_bar
        self._tasks: list[_Task] = []

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        self._tasks.append(_Task(description, int(total) if total is not None else None))
        if self._rich is not None:
            self._rich.add_task(description, total=total)
        task = len(self._tasks) - 1
        self._report(self._tasks[task], time.monotonic(), force=True)  # a slow first item (a compile) shows as 0/n
        return task

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, completed=self._tasks[task].done + int(advance))

    def update(self, task: int, completed: float | None = None, total: float | None = None, **_: Any) -> None:
        raise_if_interrupted()
        t = self._tasks[task]
        if total is not None:
            t.total = int(total)
        if completed is not None:
            t.done = int(completed)
        if self._rich is not None:
            self._rich.update(task, completed=t.done, total=t.total)
        self._report(t, time.monotonic(), force=t.total is not None and t.done >= t.total)

    def _report(self, t: _Task, now: float, force: bool) -> None:
        if self._enabled and self._rich is None and (force or now - t.t_plain >= plain_interval()):
            t.t_plain = now
            total = t.total if t.total is not None else "?"
            log.info("%s %d/%s  elapsed %s  ETA %s", t.what, t.done, total, format_duration(now - t.t0), _eta(t, now))
        if _listeners and (force or now - t.t_listen >= LISTENER_INTERVAL_S):
            t.t_listen = now
            for cb in list(_listeners):
                cb(BuildProgress(t.what, t.done, t.total))


def _eta(t: _Task, now: float) -> str:
    if t.total is not None and t.done >= t.total:
        return format_duration(0)
    if not t.total or not t.done:
        return "—"
    return format_duration((now - t.t0) / t.done * (t.total - t.done))


@contextlib.contextmanager
def task_progress(enabled: bool = True) -> Iterator[Bars]:
    """Build progress: a rich bar (description, bar, done/total, elapsed, ETA) on a terminal's stderr, plain
    log lines otherwise, nothing when disabled; listeners hear of it in every case."""
    if not (enabled and stderr_is_terminal()):
        yield Bars(enabled)
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

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=Console(file=sys.stderr)) as bar:
        yield Bars(enabled, bar)


def format_duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --- training ----------------------------------------------------------------------------------------------
_RECENT = 50  # steps whose step time makes the ETA: recent running steps only (pauses are not step time)
_QUIET = frozenset({"starting", "building", "running"})
_LINE_MARK = "hrm_progress_line"  # log records of the periodic line


class TrainProgress:
    """An event sink (like the TensorBoard one): reads the events the trainer writes and reports them."""

    def __init__(self, terminal: bool | None = None, interval_s: float | None = None) -> None:
        self.interval = plain_interval() if interval_s is None else interval_s
        self.total: int | None = None
        self.label = "changed"
        self.last_eval: dict[str, Any] | None = None
        self._times: list[float] = []
        self._ex_s: float | None = None
        self._t_line = 0.0
        self._live = _Live() if (stderr_is_terminal() if terminal is None else terminal) else None

    def log_event(self, ev: dict[str, Any]) -> None:
        kind, step = ev.get("kind"), int(ev.get("step", 0))
        if kind == "run":
            self.total = ev.get("total_steps")
            self.label = {"sudoku": "blanks", "maze": "path"}.get(str(ev.get("task")), "changed")
        elif kind == "train":
            self._train(step, ev)
        elif kind == "eval":
            self.last_eval = ev
            self._note(f"eval at step {step}: {self._eval_text(ev)}, loss {_num(ev.get('loss'))}")
        elif kind == "checkpoint":
            self._note(f"checkpoint at step {step}: {ev.get('path')}")
        elif kind == "status" and ev.get("state") not in _QUIET:
            why = ev.get("reason") or ev.get("error") or ""
            self._note(f"{ev.get('state')} at step {step}" + (f": {why}" if why else ""))
        elif kind == "status" and ev.get("state") == "running" and ev.get("reason"):
            self._note(f"running at step {step}: {ev['reason']}")

    def line(self, step: int, ev: dict[str, Any]) -> str:
        total = f"/{self.total}" if self.total else ""
        parts = [
            f"step {step}{total}",
            f"loss {_num(ev.get('loss'))}",
            f"{self.label} {_pct(ev.get('changed_accuracy'))}",
        ]
        if self.last_eval is not None:
            parts.append(f"eval@{self.last_eval['step']} {self._eval_text(self.last_eval)}")
        parts.append(f"{self._ex_s:.1f} ex/s" if self._ex_s else "— ex/s")
        parts.append(f"ETA {self.eta(step)}")
        return "  ".join(parts)

    def eta(self, step: int) -> str:
        if not self.total or not self._times:
            return "—"
        return format_duration(sorted(self._times)[len(self._times) // 2] * max(0, self.total - step))

    def _eval_text(self, ev: dict[str, Any]) -> str:
        return f"{self.label} {_pct(ev.get('changed_accuracy'))} exact {_pct(ev.get('exact_accuracy'))}"

    def _train(self, step: int, ev: dict[str, Any]) -> None:
        dt, n = ev.get("step_time_s"), int(ev.get("steps_aggregated") or 1)
        if isinstance(dt, (int, float)) and dt > 0:
            self._times = (self._times + [float(dt)] * min(n, _RECENT))[-_RECENT:]
        ex = ev.get("examples_per_s")
        if isinstance(ex, (int, float)):
            self._ex_s = ex if self._ex_s is None else 0.8 * self._ex_s + 0.2 * ex
        now = time.monotonic()
        if self._live is not None:
            self._live.show(step, self.total, self.line(step, ev))
        if now - self._t_line >= self.interval or (self.total and step >= self.total):
            self._t_line = now
            # with a live display the terminal's handlers skip this line; trainer.log still gets it
            log.info(self.line(step, ev), extra={_LINE_MARK: True})

    def _note(self, text: str) -> None:
        log.info(text)  # above the live display on a terminal (its handler writes through it), and in the log

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None


class _Live:
    """rich's live progress on stderr; while it runs, the terminal's log handlers write through it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        # "step n/total" leads the description: on a narrow terminal rich cuts the text, not the count
        self._bar = Progress(
            BarColumn(bar_width=12), TextColumn("{task.description}"), console=Console(file=sys.stderr)
        )
        self._task: Any = None  # rich's TaskID
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    def show(self, step: int, total: int | None, text: str) -> None:
        if self._task is None:
            self._bar.start()  # sys.stderr is now rich's proxy, which prints above the bar
            self._task = self._bar.add_task(text, total=total)
            for h in logging.getLogger().handlers:
                if type(h) is logging.StreamHandler and getattr(h.stream, "isatty", lambda: False)():
                    self._handlers.append((h, h.setStream(sys.stderr)))
                    h.addFilter(_not_a_line)
        self._bar.update(self._task, completed=step, total=total, description=text)

    def close(self) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
            h.removeFilter(_not_a_line)
        if self._task is not None:
            self._bar.stop()


def _not_a_line(record: logging.LogRecord) -> bool:
    return not getattr(record, _LINE_MARK, False)


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) else "—"


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "—"
