"""The latest values beside the plots: what the last train, eval and system events said, as numbers.

Every figure is read from one event (the latest of its kind) and printed as it is, so what the
readout says can be checked against events.jsonl; the only derived figures are the smoothed loss
(the plots' EMA), the change since the previous eval, and the recent step time.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from hrm_tui.fmt import UNKNOWN, human_bytes, num, pct, signed_points
from hrm_tui.plotting import ema_last
from hrm_tui.runstate import RunState

README_SMOOTHING = 0.9  # the smoothed loss when the plots show raw curves


def rows(state: RunState, *, running: bool, smoothing: float, live: bool = True) -> list[tuple[str, str]]:
    """(label, value) pairs, in the order shown; pure so tests can read them without a screen.
    `running`: throughput is shown; `live`: the trainer process exists (its CPU and RSS mean something)."""
    tr, ev, prev = state.latest_train, state.latest_eval, state.previous_eval()
    head = state.headline
    weight = smoothing or README_SMOOTHING
    smoothed = ema_last(state.series["loss"], weight)
    total = state.total_steps
    out = [
        ("step", f"{state.step:,}" + (f" / {total:,}" if total else "")),
        ("loss", num(tr.get("loss"), ".4f")),
        (f"  ema {weight:g}", num(smoothed, ".4f")),
    ]
    # Accuracies are over the sequences that halted in a step; with ACT a step may halt none (0/0):
    # show the last step that measured them, and which step that was.
    act = state.latest_act or tr
    at = f" @{act.get('step', 0):,}" if act and act is not tr else ""
    out += [
        (head, pct(act.get("changed_accuracy")) + at),
        ("exact", pct(act.get("exact_accuracy")) + at),
        ("all cells", pct(act.get("accuracy")) + at),
    ]
    if ev:
        out.append((f"eval @{ev.get('step', 0):,}", ""))
        for field, label in (("changed_accuracy", f"  {head}"), ("exact_accuracy", "  exact")):
            value, before = ev.get(field), prev.get(field)
            change = ""
            if isinstance(value, (int, float)) and isinstance(before, (int, float)):
                change = f" ({signed_points(value - before)})"
            out.append((label, pct(value) + change))
    else:
        out.append(("eval", "none yet"))
    sample = state.run_system if live else {}
    out += [
        ("lr", num(tr.get("lr"), ".2e")),
        ("grad norm", num(tr.get("grad_norm"), ".3g")),
        ("param norm", num(tr.get("param_norm"), ".4g")),
        ("ex/s", num(tr.get("examples_per_s"), ",.0f") if running else UNKNOWN),
        ("step time", _seconds(tr.get("step_time_s"))),
        ("trainer CPU", pct(_fraction(sample.get("proc_cpu_percent")), 0)),
        ("trainer RSS", human_bytes(sample.get("proc_rss")) if sample.get("proc_rss") is not None else UNKNOWN),
    ]
    return out


def _seconds(v: object) -> str:
    if not isinstance(v, (int, float)):
        return UNKNOWN
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _fraction(percent: object) -> float | None:
    return percent / 100 if isinstance(percent, (int, float)) else None


class Readout(Widget):
    DEFAULT_CSS = """
    Readout { height: auto; width: 34; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rows: list[tuple[str, str]] = []

    def show(self, state: RunState | None, *, running: bool, smoothing: float, live: bool) -> None:
        self._rows = rows(state, running=running, smoothing=smoothing, live=live) if state is not None else []
        self.refresh(layout=True)

    def render(self) -> Text:
        if not self._rows:
            return Text("no run", style="dim")
        t = Text()
        for i, (label, value) in enumerate(self._rows):
            if i:
                t.append("\n")
            t.append(f"{label:<12}", style="dim" if label.startswith(" ") or label == "all cells" else "")
            t.append(value, style="bold")
        return t
