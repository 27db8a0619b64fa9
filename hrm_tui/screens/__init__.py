"""The app's screens, one per module."""

from __future__ import annotations

from hrm_tui.screens.confirm import ConfirmScreen
from hrm_tui.screens.dashboard import DashboardScreen
from hrm_tui.screens.help import HelpScreen
from hrm_tui.screens.picker import PickerScreen
from hrm_tui.screens.runs import RunsScreen

__all__ = ["ConfirmScreen", "DashboardScreen", "HelpScreen", "PickerScreen", "RunsScreen"]
