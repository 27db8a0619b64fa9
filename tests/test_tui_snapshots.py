"""Layout snapshots at 80×24 and 200×60, fed from fixed event files. No wall clock (injected), no
local time zone (UTC), no host sampling (the GPU panel shows the run's own last recorded sample).
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import T0, run_events, write_run
from textual.widgets import ContentSwitcher, DataTable

from hrm_tui.app import HrmApp
from hrm_tui.screens import DashboardScreen, HelpScreen, RunsScreen
from hrm_tui.widgets import DeathNote, MetricPlot, PuzzleView, RunHeader

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


def _drawn(screen) -> bool:
    """The dashboard shows everything its run's events say: loaded, the liveness check done (the status
    depends on it), no redraw pending, and the header, plots, sample and death note drawn from it."""
    s = screen.state
    if s is None or not s.events_seen or not screen.liveness_checks or screen._pending or screen._plots_due:
        return False
    if screen.status == "failed" and not screen._log_tail:
        return False
    header = screen.query_one(RunHeader).render().plain
    if f"step {s.step:,}" not in header or screen.status not in header:
        return False
    if any(plot._state is not s for plot in screen.query(MetricPlot)):
        return False
    if s.latest_eval.get("samples") and "Eval sample" not in screen.query_one(PuzzleView).render().plain:
        return False
    death = screen.query_one(DeathNote).render().plain
    return screen.status != "failed" or screen._log_tail[-1].strip() in death


def _listed(screen) -> bool:
    """The runs screen shows every run and the selected run's checkpoints (listed in a worker)."""
    table = screen.query_one("#runs", DataTable)
    return bool(screen.infos) and table.row_count == len(screen.infos) and screen._ckpt_rows is not None


async def _loaded(pilot) -> None:
    # snap_compare takes the screenshot after the app is idle; this waits until what it will paint is final.
    await wait_ui(
        pilot,
        lambda: (
            (isinstance(pilot.app.screen, DashboardScreen) and _drawn(pilot.app.screen))
            or (isinstance(pilot.app.screen, RunsScreen) and _listed(pilot.app.screen))
        ),
        what="the screen to show its run(s)",
    )


async def _show_sample(pilot) -> None:
    await _loaded(pilot)
    screen = pilot.app.screen
    if screen.compact:
        await pilot.press("4")  # the sample panel, by its key
        await wait_ui(pilot, lambda: screen.query_one("#panel", ContentSwitcher).current == "puzzle-box")
        await wait_ui(pilot, lambda: _drawn(screen), what="the sample panel drawn")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_failed_sudoku(snap_compare, runs_root: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(runs_root, "sudoku-cpu-20251125-0800"), terminal_size=size, run_before=_loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_finished_maze(snap_compare, runs_root: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(runs_root, "maze-cpu-20251125-0700"), terminal_size=size, run_before=_show_sample)


def test_runs_screen(snap_compare, runs_root: Path) -> None:
    assert snap_compare(_app(runs_root), terminal_size=(80, 24), run_before=_loaded)


def test_help_screen(snap_compare, runs_root: Path) -> None:
    async def open_help(pilot) -> None:
        await _loaded(pilot)
        await pilot.press("question_mark")
        await wait_ui(pilot, lambda: isinstance(pilot.app.screen, HelpScreen) and pilot.app.screen.query("#help-table"))

    assert snap_compare(_app(runs_root, "sudoku-cpu-20251125-0800"), terminal_size=(80, 24), run_before=open_help)


def test_no_color_sudoku_sample(snap_compare, runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: greys only; wrong answers stay marked (bold, underlined), status keeps its word and glyph."""
    monkeypatch.setenv("NO_COLOR", "1")

    app = _app(runs_root, "sudoku-cpu-20251125-0800")
    assert app.no_color
    assert snap_compare(app, terminal_size=(80, 24), run_before=_show_sample)
