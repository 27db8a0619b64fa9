"""Dashboard widgets, one per module."""

from __future__ import annotations

from hrm_tui.widgets.act import ActPanel
from hrm_tui.widgets.deathnote import DeathNote
from hrm_tui.widgets.gpu import GpuPanel
from hrm_tui.widgets.header import RunHeader
from hrm_tui.widgets.logpanel import LogPanel
from hrm_tui.widgets.plot import MetricPlot
from hrm_tui.widgets.puzzle import PuzzleView
from hrm_tui.widgets.readout import Readout

__all__ = ["ActPanel", "DeathNote", "GpuPanel", "LogPanel", "MetricPlot", "PuzzleView", "Readout", "RunHeader"]
