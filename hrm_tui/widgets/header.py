"""One-line run header: is it alive, how far, how long to go, how fast.

Pieces are dropped from the least needed up when the line is too narrow; the state, the step and
the ETA are the last to go (80 columns keep them all).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widget import Widget

from hrm.run.status import STATE_LABELS
from hrm_tui.fmt import UNKNOWN
from hrm_tui.runstate import LIVE_STATES, RunState, human_duration

# Badges (text on a theme colour): the word and glyph carry the meaning; colour only helps.
STATUS_COLOUR = {
    "running": ("#000000", "success"),
    "starting": ("#000000", "accent"),
    "building": ("#000000", "accent"),
    "paused": ("#000000", "warning"),
    "stopping": ("#000000", "warning"),
    "finished": ("#ffffff", "primary"),
    "stopped": ("#ffffff", "primary"),
    "failed": ("#ffffff", "error"),
    "died": ("#ffffff", "error"),
}


def status_label(status: str) -> str:
    return STATE_LABELS.get(status, status)


def status_glyph(status: str) -> str:
    return "●" if status in LIVE_STATES else ("✗" if status in ("failed", "died") else "○")


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

    def pieces(self) -> list[tuple[int, str, str]]:
        """(priority, text, style): lower priority numbers are kept longer."""
        s, st = self._state, self._status
        if s is None:
            return [(0, " hrm-tui ", "bold reverse"), (0, "  no run attached", "dim")]
        fg, bg = STATUS_COLOUR.get(st, ("", ""))
        badge = f"bold {fg} on {self.app.theme_variables[bg]}" if bg else "bold"
        total = s.total_steps
        live = st in LIVE_STATES
        out = [
            (5, " hrm-tui ", "bold reverse"),
            (4, f"  {self._run_name}", "bold"),
            (0, f"  {status_glyph(st)} {status_label(st)} ", badge),
            (0, f"  step {s.step:,}" + (f"/{total:,}" if total else ""), ""),
        ]
        world = s.run.get("world_size")
        if isinstance(world, int) and world > 1:
            out.insert(2, (6, f"  {world} ranks", "dim"))
        if total:
            out.append((3, f" {s.step / total * 100:.1f} %", ""))
        now = self._clock()
        running = s.time_in("running", now, live)
        if s.first_t is not None:
            paused = s.time_in("paused", now, live)
            out.append((2, f"  train {human_duration(running)}", ""))
            if paused >= 1:
                out.append((3, f" · paused {human_duration(paused)}", "dim"))
        eta = s.eta_seconds() if live else None
        out.append((0, f"  ETA {human_duration(eta) if eta is not None else UNKNOWN}", ""))
        ex = s.latest_train.get("examples_per_s")
        ex_text = f"{ex:,.0f}" if st == "running" and isinstance(ex, (int, float)) else UNKNOWN
        out.append((1, f"  {ex_text} ex/s", ""))
        return out

    def render(self) -> Text:
        pieces = self.pieces()
        width = self.size.width or 200
        # Drop whole pieces, least needed first, until the line fits.
        for level in (6, 5, 4, 3, 2, 1):
            if sum(len(p[1]) for p in pieces) <= width:
                break
            pieces = [p for p in pieces if p[0] < level]
        t = Text()
        for _, text, style in pieces:
            t.append(text, style=style)
        return t
