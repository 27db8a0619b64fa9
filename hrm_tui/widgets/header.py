"""One-line run header: is it alive, how far, how long to go, how fast."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widget import Widget

from hrm_tui.runstate import RunState, human_duration

# Badges (text on a theme colour): the word and glyph carry the meaning; colour only helps.
STATUS_COLOUR = {
    "running": ("#000000", "success"),
    "starting": ("#000000", "accent"),
    "paused": ("#000000", "warning"),
    "stopping": ("#000000", "warning"),
    "finished": ("#ffffff", "primary"),
    "stopped": ("#ffffff", "primary"),
    "failed": ("#ffffff", "error"),
    "died": ("#ffffff", "error"),
}


class RunHeader(Widget):
    DEFAULT_CSS = """
    RunHeader { height: 1; background: $panel; color: $foreground; }
    """

    def __init__(self, clock: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._state: RunState | None = None
        self._run_name = ""
        self._status = "none"

    def show(self, name: str, state: RunState | None, status: str) -> None:
        self._run_name, self._state, self._status = name, state, status
        self.refresh()

    def render(self) -> Text:
        t = Text()
        t.append(" hrm-tui ", style="bold reverse")
        if self._state is None:
            t.append("  no run attached", style="dim")
            return t
        s = self._state
        t.append(f"  {self._run_name}  ", style="bold")
        world = s.run.get("world_size")
        if isinstance(world, int) and world > 1:
            t.append(f"{world} ranks  ", style="dim")
        dot = (
            "●"
            if self._status in ("running", "starting", "paused", "stopping")
            else ("✗" if self._status in ("failed", "died") else "○")
        )
        fg, bg = STATUS_COLOUR.get(self._status, ("", ""))
        badge = f"bold {fg} on {self.app.theme_variables[bg]}" if bg else "bold"
        t.append(f" {dot} {self._status} ", style=badge)
        total = s.total_steps
        t.append(f"   step {s.step:,}" + (f" / {total:,}  {s.step / total * 100:.1f} %" if total else ""))
        if s.first_t is not None:
            live = self._status in ("running", "starting", "paused", "stopping")
            end = self._clock() if live else (s.last_t or s.first_t)
            t.append(f"   elapsed {human_duration(max(0.0, end - s.first_t))}")
        eta = s.eta_seconds() if self._status in ("running", "starting") else None
        if eta is not None:
            t.append(f"   ETA {human_duration(eta)}")
        ex = s.latest_train.get("examples_per_s")
        if isinstance(ex, (int, float)):
            t.append(f"   {ex:,.0f} ex/s")
        return t
