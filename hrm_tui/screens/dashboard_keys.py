"""The dashboard's view keys: what the plots show, which sample and segment, which side panel."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import ContentSwitcher

from hrm_tui.widgets import PuzzleView
from hrm_tui.widgets.plot import SMOOTHING, WINDOWS, View


class ViewKeysMixin(Screen):
    """Keys that change only the picture (w, m, l, ←/→, [ ], PgUp/PgDn, 1-5, a); the run is untouched."""

    view: View
    sample_index: int
    panel: str
    desktop_alerts: bool

    if TYPE_CHECKING:  # the screen's own (DashboardScreen)

        def _redraw(self, what: set[str]) -> None: ...
        def _set_titles(self) -> None: ...

    def action_window(self) -> None:
        self.view = replace(self.view, window=(self.view.window + 1) % len(WINDOWS))
        self._redraw({"plots"})

    def action_smoothing(self) -> None:
        k = SMOOTHING.index(self.view.smoothing) if self.view.smoothing in SMOOTHING else -1
        self.view = replace(self.view, smoothing=SMOOTHING[(k + 1) % len(SMOOTHING)])
        self._redraw({"plots"})

    def action_log_y(self) -> None:
        self.view = replace(self.view, log_y=not self.view.log_y)
        self._redraw({"plots"})

    def action_sample(self, delta: int) -> None:
        self.sample_index += delta
        self.query_one(PuzzleView).segment = None  # a new sample starts at its final answer
        self._redraw({"puzzle"})

    def action_segment(self, delta: int) -> None:
        self.query_one(PuzzleView).step_segment(delta)

    def action_scroll_sample(self, pages: int) -> None:
        box = self.query_one("#puzzle-box", VerticalScroll)
        box.scroll_to(y=box.scroll_y + pages * max(1, box.size.height - 2), animate=False)

    def action_panel(self, panel: str) -> None:
        self.panel = panel
        self.query_one("#panel", ContentSwitcher).current = panel
        self._set_titles()
        self._redraw({"puzzle"} if panel == "puzzle-box" else set())
        if panel != "puzzle-box":
            self.query_one("#panel").styles.width = max(38, self.app.size.width * 2 // 5) if panel == "log" else 42

    def action_desktop_alerts(self) -> None:
        self.desktop_alerts = not self.desktop_alerts
        state = "on: OSC 9/777 notifications go to the terminal" if self.desktop_alerts else "off"
        self.notify(f"desktop notifications {state}", title="alerts")
