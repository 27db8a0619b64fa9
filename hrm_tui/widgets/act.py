"""ACT halting: mean steps, halted fraction, Q-halt accuracy, and the eval halting histogram."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from hrm_tui.plotting import sparkline
from hrm_tui.runstate import RunState


def _pct(v: object) -> str:
    return f"{v * 100:.0f} %" if isinstance(v, (int, float)) else "N/A"


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
        if s is None:
            return Text("no run", style="dim")
        tr, ev = s.latest_act, s.latest_eval
        hmax = s.halt_max_steps
        mean = tr.get("act_steps_mean")
        t = Text()
        t.append("mean steps   ")
        t.append(f"{mean:.1f} / {hmax}\n" if isinstance(mean, (int, float)) else f"N/A / {hmax}\n", style="bold")
        t.append("halted       ")
        t.append(_pct(tr.get("halted_frac")) + "\n", style="bold")
        t.append("q-halt acc   ")
        t.append(_pct(tr.get("q_halt_accuracy")) + "\n", style="bold")
        if tr and tr is not s.latest_train:
            t.append(f"(as of step {tr.get('step', 0):,}: none halted since)\n", style="dim")
        hist = ev.get("act_steps_hist")
        t.append("eval halting histogram\n", style="dim")
        if isinstance(hist, list) and hist:
            counts = [float(c) if isinstance(c, (int, float)) else 0.0 for c in hist]
            t.append(sparkline(counts, len(counts), lo=0.0) + f" (1…{len(counts)})\n")
            total = sum(counts)
            if total:
                mean_eval = sum((i + 1) * c for i, c in enumerate(counts)) / total
                t.append(f"eval mean {mean_eval:.1f} steps · step {ev.get('step', 0):,}", style="dim")
        else:
            t.append("no eval yet", style="dim")
        return t
