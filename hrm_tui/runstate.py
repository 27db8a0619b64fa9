"""What the dashboard knows about one run, folded from its events (pure logic, no UI, no I/O).

Every panel renders from a `RunState`; re-attaching replays the whole events file into a fresh one,
so the picture after a restart of the app is the picture before it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Train fields kept as full-history columns (plots); everything else only as "latest".
TRAIN_SERIES = ("loss", "accuracy", "exact_accuracy", "lr")
EVAL_SERIES = ("loss", "accuracy", "exact_accuracy")
SYSTEM_HISTORY = 120  # samples of GPU/host history kept for the sparklines (~2-4 min)
LOG_LINES = 400

LIVE_STATES = frozenset({"starting", "running", "paused", "stopping"})
_PER_HALTED = frozenset({"accuracy", "exact_accuracy"})


@dataclass
class LogLine:
    t: float
    level: str
    text: str


@dataclass
class GpuHistory:
    util: deque[float] = field(default_factory=lambda: deque(maxlen=SYSTEM_HISTORY))
    mem: deque[float] = field(default_factory=lambda: deque(maxlen=SYSTEM_HISTORY))


class RunState:
    """Folds events in order. `changed` names the panels touched since the last `take_changes()`."""

    def __init__(self) -> None:
        self.run: dict[str, Any] = {}
        self.status = "unknown"
        self.status_reason: str | None = None
        self.status_error: str | None = None
        self.step = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.steps = array("q")
        self.times = array("d")
        self.series: dict[str, array] = {name: array("d") for name in TRAIN_SERIES}
        self.latest_train: dict[str, Any] = {}
        self.latest_act: dict[str, Any] = {}  # the last train event where some sequences halted
        self.evals: list[dict[str, Any]] = []  # eval events without their samples
        self.latest_eval: dict[str, Any] = {}
        self.system: dict[str, Any] = {}
        self.gpu_history: dict[int, GpuHistory] = {}
        self.cpu_history: deque[float] = deque(maxlen=SYSTEM_HISTORY)
        self.checkpoints: list[dict[str, Any]] = []
        self.log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self.log_total = 0  # lines ever logged (the deque keeps the last LOG_LINES)
        self.changed: set[str] = set()
        self.events_seen = 0
        self.partial = False  # only the end of a long history so far (the full replay follows)

    # ---- folding -------------------------------------------------------------------------
    def apply(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self._apply_one(ev)

    def _apply_one(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        handler = _HANDLERS.get(kind)  # type: ignore[arg-type]
        self.events_seen += 1
        t = ev.get("t")
        if isinstance(t, (int, float)):
            if self.first_t is None:
                self.first_t = float(t)
            self.last_t = float(t)
        if handler is not None:
            handler(self, ev)
        self.changed.add("header")

    def _on_train(self, ev: dict[str, Any]) -> None:
        step = int(ev.get("step", 0))
        if self.steps and step <= self.steps[-1]:
            # Out of order (should not happen); keep columns sorted by dropping what it supersedes.
            self._truncate_after(step - 1)
        self.steps.append(step)
        self.times.append(float(ev.get("t", self.last_t or 0.0)))
        # Accuracies and ACT statistics are over the sequences that halted in the step; with none
        # (count == 0) they are 0/0, not zero: leave them out rather than plot a false drop.
        count = ev.get("count")
        none_halted = isinstance(count, (int, float)) and count <= 0
        for name in TRAIN_SERIES:
            value = ev.get(name)
            ok = isinstance(value, (int, float)) and not (none_halted and name in _PER_HALTED)
            self.series[name].append(float(value) if ok else float("nan"))
        self.latest_train = ev
        if not none_halted:
            self.latest_act = ev
        self.step = step
        self.changed.update({"plots", "act"})

    def _on_eval(self, ev: dict[str, Any]) -> None:
        self.evals.append({k: v for k, v in ev.items() if k != "samples"})
        self.latest_eval = ev
        acc = ev.get("exact_accuracy")
        cell = ev.get("accuracy")
        text = f"eval step {_n(ev.get('step'))}"
        if isinstance(acc, (int, float)):
            text += f" · exact {acc * 100:.1f} %"
        if isinstance(cell, (int, float)):
            text += f" · cell {cell * 100:.1f} %"
        self._log(ev, "info", text)
        self.changed.update({"plots", "act", "puzzle"})

    def _on_run(self, ev: dict[str, Any]) -> None:
        self.run = ev
        resumed = ev.get("resumed_from")
        step = int(ev.get("step", 0))
        if resumed:
            self._truncate_after(step)
            self.step = step
            self._log(ev, "info", f"resumed at step {_n(step)} from {resumed}")
        else:
            self._log(
                ev,
                "info",
                f"run started · {ev.get('num_params', '?'):,} parameters"
                if isinstance(ev.get("num_params"), int)
                else "run started",
            )
        self.changed.update({"plots", "act", "puzzle", "system"})

    def _on_system(self, ev: dict[str, Any]) -> None:
        self.push_system(ev)

    def _on_checkpoint(self, ev: dict[str, Any]) -> None:
        self.checkpoints.append(ev)
        size = ev.get("size")
        secs = ev.get("seconds")
        text = f"checkpoint step {_n(ev.get('step'))}"
        if isinstance(size, (int, float)):
            text += f" · {human_bytes(size)}"
        if isinstance(secs, (int, float)):
            text += f" · {secs:.1f} s"
        self._log(ev, "info", text)

    def _on_status(self, ev: dict[str, Any]) -> None:
        self.status = str(ev.get("state", "unknown"))
        self.status_reason = ev.get("reason")
        self.status_error = ev.get("error")
        detail = self.status_error or self.status_reason
        level = "error" if self.status == "failed" else "info"
        self._log(ev, level, f"status {self.status}" + (f" · {detail}" if detail else ""))
        self.changed.add("status")

    def _on_log(self, ev: dict[str, Any]) -> None:
        self._log(ev, str(ev.get("level", "info")), str(ev.get("message", "")))

    # ---- helpers -------------------------------------------------------------------------
    def push_system(self, sample: dict[str, Any]) -> None:
        """A system sample, from the run's events or from the app's own sampler."""
        self.system = sample
        for gpu in sample.get("gpus") or []:
            hist = self.gpu_history.setdefault(int(gpu.get("index", 0)), GpuHistory())
            util = gpu.get("gpu_util")
            used, total = gpu.get("mem_used"), gpu.get("mem_total")
            hist.util.append(float(util) if isinstance(util, (int, float)) else float("nan"))
            hist.mem.append(used / total * 100 if isinstance(used, (int, float)) and total else float("nan"))
        cpu = sample.get("cpu_percent")
        self.cpu_history.append(float(cpu) if isinstance(cpu, (int, float)) else float("nan"))
        self.changed.add("system")

    def add_log(self, t: float, level: str, text: str) -> None:
        self.log.append(LogLine(t, level, text))
        self.log_total += 1
        self.changed.add("log")

    def _log(self, ev: dict[str, Any], level: str, text: str) -> None:
        self.add_log(float(ev.get("t", self.last_t or 0.0)), level, text)

    def _truncate_after(self, step: int) -> None:
        """Drop train/eval/checkpoint history past `step` (superseded by a resume)."""
        cut = bisect_right(self.steps, step)
        if cut < len(self.steps):
            del self.steps[cut:]
            del self.times[cut:]
            for col in self.series.values():
                del col[cut:]
        self.evals = [e for e in self.evals if int(e.get("step", 0)) <= step]
        if self.latest_eval and int(self.latest_eval.get("step", 0)) > step:
            self.latest_eval = {}
        self.checkpoints = [c for c in self.checkpoints if int(c.get("step", 0)) <= step]
        if self.latest_train and int(self.latest_train.get("step", 0)) > step:
            self.latest_train = {}
        if self.latest_act and int(self.latest_act.get("step", 0)) > step:
            self.latest_act = {}

    def take_changes(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    # ---- derived values ------------------------------------------------------------------
    @property
    def total_steps(self) -> int | None:
        total = self.run.get("total_steps")
        return int(total) if isinstance(total, (int, float)) and total > 0 else None

    @property
    def halt_max_steps(self) -> int:
        cfg = self.run.get("config") or {}
        model = cfg.get("model") if isinstance(cfg, dict) else None
        value = (model or {}).get("halt_max_steps") if isinstance(model, dict) else None
        if isinstance(value, int):
            return value
        hist = self.latest_eval.get("act_steps_hist")
        return len(hist) if isinstance(hist, list) and hist else 16

    def rate(self, span: int = 50) -> float | None:
        """Steps per second over the last `span` train events (None when unknown)."""
        n = len(self.steps)
        if n < 2:
            return None
        k = max(0, n - 1 - span)
        dt = self.times[-1] - self.times[k]
        ds = self.steps[-1] - self.steps[k]
        return ds / dt if dt > 0 and ds > 0 else None

    def eta_seconds(self) -> float | None:
        total, rate = self.total_steps, self.rate()
        if total is None or rate is None:
            return None
        return max(0.0, (total - self.step) / rate)

    def window_slice(self, seconds: float | None) -> tuple[int, int]:
        """Index range of train points within the last `seconds` of event time (None: all)."""
        if seconds is None or not self.times:
            return 0, len(self.times)
        return bisect_left(self.times, self.times[-1] - seconds), len(self.times)

    def evals_since(self, t0: float | None) -> list[dict[str, Any]]:
        if t0 is None:
            return self.evals
        return [e for e in self.evals if float(e.get("t", 0.0)) >= t0]


_HANDLERS = {
    "train": RunState._on_train,
    "eval": RunState._on_eval,
    "run": RunState._on_run,
    "system": RunState._on_system,
    "checkpoint": RunState._on_checkpoint,
    "status": RunState._on_status,
    "log": RunState._on_log,
}


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def human_bytes(n: float | None) -> str:
    if not isinstance(n, (int, float)):
        return "N/A"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_gib(n: float | None) -> str:
    return f"{n / 2**30:.1f}" if isinstance(n, (int, float)) else "N/A"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
