"""A line plot of train metrics (and eval points) over steps, within a changeable time window.

Smoothing (an EMA, key `m`) draws the raw curve dim under the smoothed one; the loss plot can
switch to a log y axis (key `l`). The x axis is in steps with the current step marked `▲`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from hrm_tui.plotting import Series, braille_plot, ema, sample_indices, x_axis
from hrm_tui.runstate import RunState

WINDOWS: list[tuple[str, float | None]] = [
    ("all", None),
    ("last 10m", 600.0),
    ("last 1h", 3600.0),
    ("last 6h", 6 * 3600.0),
    ("last 24h", 86400.0),
]
SMOOTHING = [0.9, 0.99, 0.0, 0.6]  # EMA weights the `m` key cycles through; 0 = raw only


@dataclass(frozen=True)
class Line:
    """One curve: a train series (or, with `eval`, eval points), its label and theme style."""

    field: str
    label: str
    style: str
    eval: bool = False
    marker: str = "●"


@dataclass(frozen=True)
class View:
    """What every plot shows now (the dashboard's keys set it)."""

    window: int = 0
    smoothing: float = SMOOTHING[0]
    log_y: bool = True


class MetricPlot(Widget):
    DEFAULT_CSS = """
    MetricPlot { height: 1fr; width: 1fr; min-height: 4; }
    """

    def __init__(
        self, title: str, lines: list[Line], *, can_log: bool = False, y_range: tuple[float, float] | None = None, **kw
    ) -> None:
        super().__init__(**kw)
        self.title = title
        self.lines = lines
        self.can_log = can_log  # log y makes sense for a loss, not for a fraction in [0, 1]
        self.y_range = y_range
        self.view = View()
        self._state: RunState | None = None

    def show(self, state: RunState | None, view: View) -> None:
        self._state, self.view = state, view
        self.refresh()

    @property
    def log_y(self) -> bool:
        return self.can_log and self.view.log_y

    def _style(self, style: str) -> str:
        """Theme variables ("$accent") to the colours of the current theme (Rich knows no theme)."""
        if style.startswith("$"):
            return self.app.theme_variables.get(style[1:], "")
        return style

    def _label(self, line: Line) -> str:
        """`{headline}` in a label becomes the task's name for changed_accuracy (blanks / path)."""
        return line.label.format(headline=self._state.headline if self._state is not None else "blanks")

    def _legend(self) -> Text:
        t = Text()  # (a style given to Text() would cover everything appended)
        t.append(f"{self.title} ", style="bold")
        for line in self.lines:
            if not line.eval:
                t.append(f" {self._label(line)} ─", style=self._style(line.style))
        evals = [line for line in self.lines if line.eval]
        if evals:
            t.append(" eval ")  # one marker per eval series, in its colour; `?` lists them
            for line in evals:
                t.append(line.marker, style=self._style(line.style))
        extras = [f"{WINDOWS[self.view.window][0]} [w]"]
        extras.append(f"ema {self.view.smoothing:g} [m]" if self.view.smoothing else "raw [m]")
        if self.can_log:
            extras.append(("log y" if self.view.log_y else "linear y") + " [l]")
        t.append("  " + " · ".join(extras), style="dim")
        if self._state is not None and self._state.partial:
            t.append("   loading history…", style="italic")
        return t

    def render(self) -> Text:
        w, h = self.size.width, self.size.height
        legend = self._legend()
        legend.truncate(w)
        s = self._state
        series: list[Series] = []
        axis = Text("")
        x_range = None
        if s is not None and h > 2:
            lo, hi = s.window_slice(WINDOWS[self.view.window][1])
            idx = sample_indices(lo, hi, max(8, (w - 8) * 2))
            xs = [s.steps[i] for i in idx]
            for line in (ln for ln in self.lines if not ln.eval):
                col = s.series.get(line.field)
                if col is None:
                    continue
                ys = [col[i] for i in idx]
                style = self._style(line.style)
                if self.view.smoothing:
                    # EMA over the drawn points; with a stride k the weight per point is weight**k
                    stride = max(1.0, (hi - lo) / max(1, len(idx)))
                    series.append(Series(xs, ys, f"dim {style}"))
                    series.append(Series(xs, ema(ys, self.view.smoothing**stride), style))
                else:
                    series.append(Series(xs, ys, style))
            evals = s.evals_since(s.times[lo] if lo < hi else None)
            for line in (ln for ln in self.lines if ln.eval):
                pts = [(float(e.get("step", 0)), e.get(line.field)) for e in evals]
                xe = [x for x, y in pts if isinstance(y, (int, float))]
                ye = [float(y) for _, y in pts if isinstance(y, (int, float))]
                series.append(Series(xe, ye, self._style(line.style), dots=True, marker=line.marker))
            all_x = xs + [x for sr in series if sr.dots for x in sr.xs]
            if all_x:
                x_range = (min(all_x), max(max(all_x), s.step))
                axis = x_axis(x_range[0], x_range[1], w, s.step if s.steps else None)
        body = braille_plot(
            series, w, max(1, h - 2), log_y=self.log_y, y_range=None if self.log_y else self.y_range, x_range=x_range
        )
        return Text("\n").join([legend, *body, axis])
