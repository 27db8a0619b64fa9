"""ACT halting: `ACT off` when every step runs one segment; otherwise the mean-steps trend, Q-halt
accuracy and loss, and the halting distributions of recent train steps and of the last eval.

Late Q-learning instability shows as a falling mean-steps trend and q_halt_loss spikes, so both
are drawn as trends, not only as the latest value. Nothing is shown before the run event says
what halt_max_steps is (never a default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from hrm_tui.fmt import num, pct
from hrm_tui.plotting import sample_indices, sparkline
from hrm_tui.runstate import RunState

TREND = 16  # sparkline width


def _hist_line(t: Text, label: str, hist: Sequence[float], note: str) -> None:
    counts = [float(c) for c in hist]
    total = sum(counts)
    t.append(f"{label:<15}")
    if not total:
        t.append("none yet\n", style="dim")
        return
    t.append(sparkline(counts, len(counts), lo=0.0), style="bold")
    mean = sum((i + 1) * c for i, c in enumerate(counts)) / total
    t.append(f" (1…{len(counts)}) mean {mean:.1f}{note}\n", style="dim")


def _trend(values: Sequence[float], n: int = TREND) -> list[float]:
    """`n` points spread over the whole run (the trend, not the last few steps); steps where no
    sequence halted measured nothing and are left out, not drawn as gaps."""
    known = [v for v in values if math.isfinite(v)]
    return [known[i] for i in sample_indices(0, len(known), n)]


class ActPanel(Widget):
    DEFAULT_CSS = """
    ActPanel { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state: RunState | None = None

    def show(self, state: RunState | None) -> None:
        self._state = state
        self.refresh(layout=True)

    def render(self) -> Text:
        s = self._state
        hmax = s.halt_max_steps if s is not None else None
        if s is None or hmax is None:
            return Text("")  # before the run event: nothing rather than a made-up default
        if hmax <= 1:
            return Text.assemble(("ACT off", "bold"), ("\nhalt_max_steps 1: every step runs one segment", "dim"))
        tr, ev = s.latest_act, s.latest_eval
        t = Text()
        t.append("mean steps     ")
        mean = tr.get("act_steps_mean")
        t.append(f"{mean:.1f} / {hmax} " if isinstance(mean, (int, float)) else f"— / {hmax} ", style="bold")
        t.append(sparkline(_trend(s.series["act_steps_mean"]), TREND) + "\n", style="dim")
        t.append("q-halt acc     ")
        t.append(pct(tr.get("q_halt_accuracy"), 0), style="bold")
        t.append(f"   halted {pct(tr.get('halted_frac'), 0)}\n")
        t.append("q_halt loss    ")
        t.append(num(tr.get("q_halt_loss"), ".3f") + " ", style="bold")
        t.append(sparkline(_trend(s.series["q_halt_loss"]), TREND) + "\n", style="dim")
        if tr and tr is not s.latest_train:
            t.append(f"(as of step {tr.get('step', 0):,}: none halted since)\n", style="dim")
        _hist_line(t, "train halting", s.train_act_hist(), f" · last {len(s.act_hists)} logs")
        hist = ev.get("act_steps_hist")
        counts = [c if isinstance(c, (int, float)) else 0.0 for c in hist] if isinstance(hist, list) else []
        _hist_line(t, "eval halting", counts, f" · step {ev.get('step', 0):,}" if ev else "")
        t.rstrip()
        return t
