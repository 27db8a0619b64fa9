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

from hrm.run.status import LIVE_STATES  # the one list of states
from hrm_tui.fmt import human_bytes, human_duration, human_gib
from hrm_tui.timing import RunClock

__all__ = ["LIVE_STATES", "RunState", "human_bytes", "human_duration", "human_gib"]

# Train fields kept as full-history columns (plots); everything else only as "latest".
TRAIN_SERIES = ("loss", "accuracy", "changed_accuracy", "exact_accuracy", "lr", "act_steps_mean", "q_halt_loss")
EVAL_SERIES = ("loss", "accuracy", "changed_accuracy", "exact_accuracy")
ACT_HIST_EVENTS = 50  # train halting histograms summed over the last this many train events
SYSTEM_HISTORY = 120  # samples of GPU/host history kept for the sparklines (~2-4 min)
LOG_LINES = 400

_NAN = float("nan")
_PER_HALTED = frozenset({"accuracy", "changed_accuracy", "exact_accuracy", "q_halt_accuracy", "act_steps_mean"})


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
        self._columns = [(name, self.series[name], name in _PER_HALTED) for name in TRAIN_SERIES]
        self.latest_train: dict[str, Any] = {}
        self.latest_act: dict[str, Any] = {}  # the last train event where some sequences halted
        self.evals: list[dict[str, Any]] = []  # eval events without their samples
        self.latest_eval: dict[str, Any] = {}
        self.system: dict[str, Any] = {}  # the sample shown: the run's, or the app's own
        self.run_system: dict[str, Any] = {}  # the run's last system event
        self.gpu_history: dict[int, GpuHistory] = {}
        self.cpu_history: deque[float] = deque(maxlen=SYSTEM_HISTORY)
        self.checkpoints: list[dict[str, Any]] = []
        self.log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self.log_total = 0  # lines ever logged (the deque keeps the last LOG_LINES)
        self.clock = RunClock()
        self.act_hists: deque[list[Any]] = deque(maxlen=ACT_HIST_EVENTS)  # train act_steps_hist, recent
        self.changed: set[str] = set()
        self.events_seen = 0
        self._prev_t: float | None = None
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
        self._prev_t = self.last_t
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
        get = ev.get
        count = get("count")
        none_halted = isinstance(count, (int, float)) and count <= 0
        # (the hot loop of a replay: a 200k-line history folds every train event through here)
        for name, col, per_halted in self._columns:
            value = get(name)
            if (type(value) is float or type(value) is int) and not (none_halted and per_halted):
                col.append(value)
            else:
                col.append(_NAN)
        self.latest_train = ev
        if not none_halted:
            self.latest_act = ev
        hist = get("act_steps_hist")
        if hist:
            self.act_hists.append(hist)  # checked when summed (train_act_hist), not per event
        self.clock.on_train(step, self.times[-1])
        self.step = step
        self.changed.update({"plots", "act"})

    def _on_eval(self, ev: dict[str, Any]) -> None:
        self.evals.append({k: v for k, v in ev.items() if k != "samples"})
        self.latest_eval = ev
        acc = ev.get("exact_accuracy")
        cell = ev.get("accuracy")
        changed = ev.get("changed_accuracy")
        text = f"eval step {_n(ev.get('step'))}"
        if isinstance(changed, (int, float)):
            text += f" · {self.headline} {changed * 100:.1f} %"
        if isinstance(acc, (int, float)):
            text += f" · exact {acc * 100:.1f} %"
        if isinstance(cell, (int, float)):
            text += f" · all cells {cell * 100:.1f} %"
        self._log(ev, "info", text)
        self.changed.update({"plots", "act", "puzzle"})

    def _on_run(self, ev: dict[str, Any]) -> None:
        self.run = ev
        resumed = ev.get("resumed_from")
        step = int(ev.get("step", 0))
        self.clock.on_run(float(ev.get("t", self.last_t or 0.0)), self._prev_t)
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
        self.run_system = ev  # the trainer's own figures (proc_*) live only in the run's samples
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
        self.clock.on_status(self.status, float(ev.get("t", self.last_t or 0.0)))
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
    def task(self) -> str | None:
        """ "sudoku" | "maze" from the run event (None before it)."""
        task = self.run.get("task")
        if not task:
            cfg = self.run.get("config")
            data = cfg.get("data") if isinstance(cfg, dict) else None
            task = data.get("task") if isinstance(data, dict) else None
        return str(task) if task else None

    @property
    def headline(self) -> str:
        """The UI name of `changed_accuracy`: the cells that differ from the input."""
        return "path" if self.task == "maze" else "blanks"

    @property
    def halt_max_steps(self) -> int | None:
        """From the run's resolved config; None before the run event says (never a default)."""
        cfg = self.run.get("config")
        model = cfg.get("model") if isinstance(cfg, dict) else None
        value = model.get("halt_max_steps") if isinstance(model, dict) else None
        return value if isinstance(value, int) else None

    def train_act_hist(self) -> list[float]:
        """The halting distribution of the recent train steps (summed counts per ACT step)."""
        hists = [h for h in self.act_hists if isinstance(h, list)]
        out = [0.0] * max((len(h) for h in hists), default=0)
        for hist in hists:
            for i, c in enumerate(hist):
                if isinstance(c, (int, float)):
                    out[i] += c
        return out

    def seconds_per_step(self) -> float | None:
        return self.clock.seconds_per_step()

    def eta_seconds(self) -> float | None:
        """Steps left × the recent wall time of a running step (pauses, stops, resumes excluded)."""
        total, per_step = self.total_steps, self.clock.seconds_per_step()
        if total is None or per_step is None:
            return None
        return max(0.0, (total - self.step) * per_step)

    def time_in(self, state: str, now: float, live: bool) -> float:
        """Seconds spent running/paused/...: up to `now` while the trainer lives, else up to its last event."""
        return self.clock.time_in(state, now if live else self.last_t)

    def previous_eval(self) -> dict[str, Any]:
        """The eval before the latest one (for the change since), or {}."""
        return self.evals[-2] if len(self.evals) >= 2 else {}

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
