"""A line plot of train metrics (and eval points) over steps, within a changeable time window."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from hrm_tui.plotting import Series, braille_plot, sample_indices
from hrm_tui.runstate import RunState

WINDOWS: list[tuple[str, float | None]] = [
    ("all", None),
    ("last 10m", 600.0),
    ("last 1h", 3600.0),
    ("last 6h", 6 * 3600.0),
    ("last 24h", 86400.0),
]


class MetricPlot(Widget):
    """`lines`: (train field, label, style); `eval_lines`: (eval field, label, style)."""

    DEFAULT_CSS = """
    MetricPlot { height: 1fr; width: 1fr; min-height: 4; }
    """

    def __init__(
        self,
        title: str,
        lines: list[tuple[str, str, str]],
        eval_lines: list[tuple[str, str, str]],
        *,
        log_y: bool = False,
        y_range: tuple[float, float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.lines = lines
        self.eval_lines = eval_lines
        self.log_y = log_y
        self.y_range = y_range
        self.window = 0
        self._state: RunState | None = None

    def show(self, state: RunState | None, window: int) -> None:
        self._state, self.window = state, window
        self.refresh()

    def _style(self, style: str) -> str:
        """Theme variables ("$accent") to the colours of the current theme (Rich knows no theme)."""
        if style.startswith("$"):
            return self.app.theme_variables.get(style[1:], "")
        return style

    def _legend(self) -> Text:
        t = Text()  # (a style given to Text() would cover everything appended)
        t.append(f"{self.title} ", style="bold")
        for _, label, style in self.lines:
            t.append(f" {label} ─", style=self._style(style))
        for _, label, style in self.eval_lines:
            t.append(f" {label} ●", style=self._style(style))
        if self.log_y:
            t.append("  (log y)", style="dim")
        t.append(f"   window: {WINDOWS[self.window][0]} [w]", style="dim")
        if self._state is not None and self._state.partial:
            t.append("   loading history…", style="italic")
        return t

    def render(self) -> Text:
        w, h = self.size.width, self.size.height
        legend = self._legend()
        legend.truncate(w)
        s = self._state
        series: list[Series] = []
        x_span = ""
        if s is not None and h > 1:
            lo, hi = s.window_slice(WINDOWS[self.window][1])
            idx = sample_indices(lo, hi, max(8, (w - 8) * 2))
            xs = [s.steps[i] for i in idx]
            for field, _, style in self.lines:
                col = s.series.get(field)
                if col is not None:
                    series.append(Series(xs, [col[i] for i in idx], self._style(style)))
            t0 = s.times[lo] if lo < hi else None
            evals = s.evals_since(t0)
            for field, _, style in self.eval_lines:
                pts = [(e.get("step", 0), e.get(field)) for e in evals if isinstance(e.get(field), (int, float))]
                series.append(Series([p[0] for p in pts], [p[1] for p in pts], self._style(style), dots=True))
            if xs:
                x_span = f"step {xs[0]:,} … {xs[-1]:,}"
        body = braille_plot(series, w, max(1, h - 2), log_y=self.log_y, y_range=self.y_range)
        out = Text("\n").join([legend, *body, Text(" " * 8 + x_span, style="dim")])
        return out
