"""The dashboard's two layouts.

Wide (≥ 110×34): plots with the latest-values readout beside them, ACT and system panels under
them, the log at the bottom, and the sample in a full-height column on the right (a 30×30 maze
drawn two columns a cell fits at 200×50). Compact (80×24): the two plots stacked on the left and
ONE side panel on the right, chosen by the keys 1–5 (no focus needed); the puzzle panel scrolls.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import ContentSwitcher, Footer

from hrm_tui.widgets import ActPanel, DeathNote, GpuPanel, LogPanel, MetricPlot, PuzzleView, Readout, RunHeader
from hrm_tui.widgets.plot import Line

# (key, container id, title) of the side panels; in the compact layout the key shows one of them.
PANELS: list[tuple[str, str, str]] = [
    ("1", "readout-box", "Values"),
    ("2", "act-box", "ACT"),
    ("3", "gpu-box", "Sys"),
    ("4", "puzzle-box", "Sample"),
    ("5", "log", "Log"),
]
COMPACT_BELOW = (110, 34)  # narrower or lower than this: the compact layout


def plots() -> list[MetricPlot]:
    loss = MetricPlot(
        "Loss",
        [Line("loss", "train", "$accent"), Line("loss", "eval", "$primary-lighten-2", eval=True)],
        can_log=True,
        id="loss",
    )
    acc = MetricPlot(
        "Accuracy",
        [
            Line("changed_accuracy", "{headline}", "$accent"),
            Line("exact_accuracy", "exact", "$success"),
            # eval points in their metric's colour, told apart from the curves by their markers
            Line("changed_accuracy", "eval {headline}", "$accent", eval=True),
            Line("exact_accuracy", "eval exact", "$success", eval=True, marker="◆"),
        ],
        y_range=(0.0, 1.0),
        id="acc",
    )
    return [loss, acc]


def compose_wide(clock: Callable[[], float]) -> ComposeResult:
    yield RunHeader(clock, id="header")
    with Horizontal(id="main"):
        with Vertical(id="left"):
            with Horizontal(id="plots"):
                yield from plots()
                yield VerticalScroll(Readout(id="readout"), id="readout-box", classes="box")
            yield DeathNote(id="death")
            with Horizontal(id="side"):
                yield VerticalScroll(ActPanel(id="act"), id="act-box", classes="box")
                yield VerticalScroll(GpuPanel(id="gpu"), id="gpu-box", classes="box")
            yield LogPanel(id="log", classes="box")
        yield VerticalScroll(PuzzleView(id="puzzle"), id="puzzle-box", classes="box")
    yield Footer()


def compose_compact(clock: Callable[[], float], panel: str) -> ComposeResult:
    yield RunHeader(clock, id="header")
    with Horizontal(id="main"):
        with Vertical(id="plots"):
            yield from plots()
        with ContentSwitcher(id="panel", initial=panel, classes="box"):
            yield VerticalScroll(Readout(id="readout"), id="readout-box")
            yield VerticalScroll(ActPanel(id="act"), id="act-box")
            yield VerticalScroll(GpuPanel(id="gpu"), id="gpu-box")
            yield VerticalScroll(PuzzleView(id="puzzle"), id="puzzle-box")
            yield LogPanel(id="log")
    yield DeathNote(id="death")
    yield Footer(compact=True)  # at 80 columns every group up to `? Help` still fits


def panel_title(current: str) -> str:
    """The compact panel's border title: every panel with its key, the shown one highlighted."""
    return " ".join(f"[reverse]{key} {title}[/]" if pid == current else f"{key} {title}" for key, pid, title in PANELS)
