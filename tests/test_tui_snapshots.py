"""Layout snapshots at 80×24 and 200×60, fed from fixed event files. No wall clock (injected), no
local time zone (UTC), no host sampling (the GPU panel shows the run's own last recorded sample).
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_tui_support import T0, run_events, write_run

from hrm_tui.app import HrmApp
from hrm_tui.screens import DashboardScreen, RunsScreen

SIZES = [(80, 24), (200, 60)]


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = Path("runs")
    write_run(
        root,
        "sudoku-cpu-20251125-0800",
        run_events(400, status="failed"),
        log="step 400 ...\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
    )
    write_run(root, "maze-cpu-20251125-0700", run_events(300, task="maze", status="finished", t0=T0 - 3600))
    yield root
    monkeypatch.undo()  # the original TZ back, then make the time module read it again
    time.tzset()


def _app(root: Path, attach: str | None = None) -> HrmApp:
    return HrmApp(root, attach=root / attach if attach else None, sample_system=False, clock=lambda: T0 + 500)


async def _loaded(pilot) -> None:
    app = pilot.app
    for _ in range(200):
        screen = app.screen
        if isinstance(screen, DashboardScreen) and screen.state is not None and screen.state.events_seen:
            if screen._log_tail or screen.status != "failed":
                break
        if isinstance(screen, RunsScreen) and screen.infos and screen.checkpoints is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.5)  # one redraw tick after the last message


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_failed_sudoku(snap_compare, runs_root: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(runs_root, "sudoku-cpu-20251125-0800"), terminal_size=size, run_before=_loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_finished_maze(snap_compare, runs_root: Path, size: tuple[int, int]) -> None:
    async def show_sample(pilot) -> None:
        await _loaded(pilot)
        if pilot.app.screen.compact:
            await pilot.press("4")  # the sample panel, by its key
            await pilot.pause(0.3)

    assert snap_compare(_app(runs_root, "maze-cpu-20251125-0700"), terminal_size=size, run_before=show_sample)


def test_runs_screen(snap_compare, runs_root: Path) -> None:
    assert snap_compare(_app(runs_root), terminal_size=(80, 24), run_before=_loaded)


def test_help_screen(snap_compare, runs_root: Path) -> None:
    async def open_help(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.3)

    assert snap_compare(_app(runs_root, "sudoku-cpu-20251125-0800"), terminal_size=(80, 24), run_before=open_help)


def test_no_color_sudoku_sample(snap_compare, runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: greys only; wrong answers stay marked (bold, underlined), status keeps its word and glyph."""
    monkeypatch.setenv("NO_COLOR", "1")

    async def show_sample(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("4")
        await pilot.pause(0.3)

    app = _app(runs_root, "sudoku-cpu-20251125-0800")
    assert app.no_color
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_sample)
