"""Pilot tests of every screen and key, fed from fixed event files (no trainer needed).
Tests against a real trainer process are in test_tui_live.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import T0, FakeNvml, NoNvml, fixed_sampler, run_events, write_run

from hrm_tui.app import HrmApp
from hrm_tui.screens import DashboardScreen, HelpScreen, PickerScreen, RunsScreen
from hrm_tui.screens.confirm import ConfirmScreen
from hrm_tui.widgets import ActPanel, DeathNote, GpuPanel, LogPanel, MetricPlot, PuzzleView, RunHeader


def make_app(root: Path, **kw) -> HrmApp:
    kw.setdefault("sampler", fixed_sampler(FakeNvml()))
    kw.setdefault("clock", lambda: T0 + 500)
    return HrmApp(root, **kw)


def text(widget) -> str:
    return widget.render().plain


def footer_actions(app: HrmApp) -> set[str]:
    return {ab.binding.action for ab in app.screen.active_bindings.values() if ab.binding.show}


@pytest.fixture
def live_run(tmp_path: Path):
    """A run whose pid file names a living process that is not listening (no control socket)."""
    import subprocess
    import sys

    from hrm.run.lock import write_pidfile

    run = write_run(tmp_path / "runs", "looks-live", run_events(30, status="running"))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    write_pidfile(run, pid=proc.pid)
    yield run
    proc.kill()
    proc.wait()


@pytest.fixture
def failed_run(tmp_path: Path) -> Path:
    return write_run(
        tmp_path / "runs",
        "sudoku-failed",
        run_events(400, status="failed"),
        log="step 400 ...\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
    )


async def test_startup_picks_picker_without_runs(tmp_path: Path) -> None:
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        names = [r["preset"] for r in app.screen.rows]
        assert {"tiny", "sudoku-cpu", "maze-cpu"} <= set(names)
        tiny = next(r for r in app.screen.rows if r["preset"] == "tiny")
        from hrm.run.config import load_preset
        from hrm.run.memory import format_bytes

        assert tiny["task_label"].startswith("Sudoku 9×9")
        assert tiny["model"].startswith(f"h{load_preset('tiny').model.hidden_size} · ")
        assert tiny["step_est"].startswith("≈") and tiny["mem"] == f"≈{format_bytes(tiny['mem_per_rank'])}"
        assert "launch" in footer_actions(app)


async def test_startup_opens_runs_list_and_attaches(failed_run: Path) -> None:
    app = make_app(failed_run.parent)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.infos)
        screen = app.screen
        assert screen.infos[0].name == "sudoku-failed" and screen.infos[0].status == "failed"
        assert "attach" in footer_actions(app) and "resume" not in footer_actions(app)  # no checkpoints
        await pilot.press("enter")
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.step == 400)
        assert app.attached_run == failed_run


async def test_dashboard_rebuilds_everything_from_events(failed_run: Path) -> None:
    app = make_app(failed_run.parent, attach=failed_run)
    async with app.run_test(size=(200, 60)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 400 and dash.status == "failed")
        # the next redraw tick (REDRAW_S = 0.5 s) paints it: wait for it rather than guess its phase
        await wait_ui(pilot, lambda: "step 400" in text(dash.query_one(RunHeader)))
        header = text(dash.query_one(RunHeader))
        assert "sudoku-failed" in header and "✗ failed" in header and "step 400/1,000" in header
        # running from the first train event (t0 + 0.5) to the failed status (t0 + 201): the run is over
        assert "train 3m20s" in header and "paused" not in header and "— ex/s" in header
        assert "mean steps     4.9 / 8" in text(dash.query_one(ActPanel))
        assert "eval halting   ▁▂▅█▅▃▂▁ (1…8)" in text(dash.query_one(ActPanel))
        puzzle = text(dash.query_one(PuzzleView))
        assert "Eval sample 1/2" in puzzle and "✗ 2 wrong of 27 blanks" in puzzle
        death = dash.query_one(DeathNote)
        assert death.has_class("-shown") and "CUDA out of memory" in text(death)
        assert "Tried to allocate" in text(death)  # the tail of trainer.log
        log_lines = [strip.text for strip in dash.query_one(LogPanel).lines]
        assert any("status failed" in line for line in log_lines)
        assert any("eval step 400 · blanks 90.0 % · exact 80.0 %" in line for line in log_lines)
        plots = [text(p) for p in dash.query(MetricPlot)]
        axis = plots[0].splitlines()[-1].split()
        assert axis == ["step", "1", "400▲"]  # steps from the first to the current one, which is marked
        assert "all [w]" in plots[0]
        # Nothing to control on a dead run: only what applies is offered (no panel keys: all are shown).
        assert footer_actions(app) == {"switch_mode('runs')", "switch_mode('picker')", "help", "quit"}


async def test_window_and_sample_keys(failed_run: Path) -> None:
    app = make_app(failed_run.parent, attach=failed_run)
    async with app.run_test(size=(200, 60)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 400)
        await pilot.press("w")
        plot = dash.query_one("#loss", MetricPlot)
        assert "last 10m [w]" in text(plot)
        assert text(plot).splitlines()[-1].strip().startswith("step 1 ")  # 200 s of fixture: all inside 10 min
        await pilot.press("right")
        puzzle = text(dash.query_one(PuzzleView))
        assert "Eval sample 2/2" in puzzle and "✓ all 27 blanks right" in puzzle
        await pilot.press("right")
        assert "Eval sample 1/2" in text(dash.query_one(PuzzleView))


async def test_window_cuts_old_points(tmp_path: Path) -> None:
    run = write_run(tmp_path, "long", run_events(400, dt=10.0, status="finished"))  # 4000 s of history
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(200, 60)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 400)
        await pilot.press("w")  # last 10 minutes = the last 60 steps
        assert text(dash.query_one("#loss", MetricPlot)).splitlines()[-1].strip().startswith("step 340 ")


async def test_help_is_generated_from_bindings(failed_run: Path) -> None:
    app = make_app(failed_run.parent, attach=failed_run)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: app.screen.state is not None and app.screen.state.step == 400)
        await pilot.press("question_mark")
        await wait_ui(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = {desc: enabled for _, desc, enabled in app.screen.rows}
        for binding in DashboardScreen.BINDINGS + HrmApp.BINDINGS:
            if binding.action != "quit_detached":  # `q` is "Quit" here: the run is over
                assert binding.description in rows
        assert rows["Quit"] is True and "Quit (the run continues)" not in rows
        assert rows["Pause"] is False and rows["Window"] is True  # a dead run cannot be paused
        await pilot.press("escape")
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen))


async def test_resize_switches_to_tabs_and_back(failed_run: Path) -> None:
    app = make_app(failed_run.parent, attach=failed_run)
    async with app.run_test(size=(200, 60)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 400)
        assert not dash.compact and not dash.query("#panel")
        await pilot.resize_terminal(80, 24)
        await wait_ui(pilot, lambda: dash.compact and bool(dash.query("#panel")))
        await wait_ui(pilot, lambda: "step 400/1,000" in text(dash.query_one(RunHeader)))  # rebuilt, not lost
        assert "mean steps" in text(dash.query_one(ActPanel))
        await pilot.resize_terminal(160, 50)
        await wait_ui(pilot, lambda: not dash.compact and bool(dash.query("#side")))


async def test_gpu_panel_app_sampling_no_nvml_and_na(tmp_path: Path) -> None:
    run = write_run(tmp_path, "finished", run_events(40, status="finished"))
    app = make_app(tmp_path, attach=run, sampler=fixed_sampler(NoNvml()))
    async with app.run_test(size=(200, 60)) as pilot:
        dash = app.screen
        gpu = dash.query_one(GpuPanel)
        await wait_ui(pilot, lambda: "no GPU" in text(gpu))
        assert "NVML not available" in text(gpu) and "host CPU" in text(gpu) and "this machine" in text(gpu)
    app = make_app(tmp_path, attach=run, sampler=fixed_sampler(FakeNvml(missing=("temp_c", "power_w"))))
    async with app.run_test(size=(200, 60)) as pilot:
        gpu = app.screen.query_one(GpuPanel)
        await wait_ui(pilot, lambda: "this machine" in text(gpu))
        assert "temp N/A" in text(gpu) and "power N/A / 700 W" in text(gpu) and "14.1 / 80.0 GiB" in text(gpu)
    app = make_app(tmp_path, attach=run, sampler=fixed_sampler(FakeNvml(gpus=2)))
    async with app.run_test(size=(200, 60)) as pilot:
        gpu = app.screen.query_one(GpuPanel)
        await wait_ui(pilot, lambda: "GPU 1" in text(gpu))  # one block per device
        assert "GPU 0 · NVIDIA H100" in text(gpu) and "15.0 / 80.0 GiB" in text(gpu) and "temp 72 °C" in text(gpu)


async def test_runs_screen_delete_with_confirm(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "old", run_events(10, status="finished", t0=T0))
    keep = write_run(root, "new", run_events(10, status="finished", t0=T0 + 100))
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.infos) == 2)
        assert [i.name for i in app.screen.infos] == ["new", "old"]  # newest first
        await pilot.press("down", "d")
        await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # declined: nothing happens
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen))
        assert (root / "old").is_dir()
        await pilot.press("d")
        await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_ui(pilot, lambda: not (root / "old").exists())
        await wait_ui(pilot, lambda: [i.name for i in app.screen.infos] == ["new"])
        assert keep.is_dir()


async def test_runs_screen_lists_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = write_run(root, "r", run_events(40, status="finished"))
    for step in (20, 40):
        (run / "checkpoints" / f"step-{step:08d}.pt").write_bytes(b"x" * 1000)
    (run / "checkpoints" / ".tmp-step-00000060.pt").write_bytes(b"partial")  # never counts
    (run / "checkpoints" / "index.json").write_text(
        json.dumps(
            {
                "checkpoints": [
                    {"file": "step-00000020.pt", "score": 0.25},
                    {"file": "step-00000040.pt", "score": 0.5},
                ],
                "best": "step-00000040.pt",
            }
        )
    )
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.checkpoints)
        screen = app.screen
        assert [c.step for c in screen.checkpoints] == [40, 20]
        from textual.widgets import DataTable

        table = screen.query_one("#ckpts", DataTable)
        assert table.get_row_at(0)[:2] == ["40", "50.0 %"] and table.get_row_at(0)[-1] == "best"  # index.json's best
        assert table.get_row_at(1)[-1] == ""
        assert "resume" in footer_actions(app) and "delete" in footer_actions(app)


async def test_readonly_hides_every_control(failed_run: Path, tmp_path: Path) -> None:
    app = make_app(failed_run.parent, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.infos)
        assert footer_actions(app) == {"attach", "back", "help", "quit"}  # no resume, delete, new run
        await pilot.press("n")  # no preset picker in read-only mode
        assert isinstance(app.screen, RunsScreen)


async def test_picker_rejects_bad_override_with_one_clear_message(tmp_path: Path) -> None:
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        screen = app.screen
        screen.query_one("#extra").value = "train.lrr=1"
        await pilot.press("enter")
        await wait_ui(pilot, lambda: any("train.lrr" in n.message for n in app._notifications), what="the refusal")
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


async def test_user_presets_listed_and_a_broken_one_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "my-presets"
    mine.mkdir()
    (mine / "my-maze.yaml").write_text(
        "run:\n  description: mine\ndata:\n  task: maze\n  size: 9\nmodel:\n  hidden_size: 64\n  num_heads: 2\n"
    )
    (mine / "broken.yaml").write_text("train:\n  global_batch_sise: 8\n")
    monkeypatch.setenv("HRM_TUI_PRESETS", str(mine))
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        rows = {r["preset"]: r for r in app.screen.rows}
        assert rows["my-maze"]["task_label"].startswith("Maze 9×9") and rows["my-maze"]["model"].startswith("h64")
        assert "global_batch_sise" in rows["broken"]["error"]
        app.screen.query_one("#presets").move_cursor(row=list(rows).index("broken"))
        await pilot.press("enter")  # launching a broken preset explains, starts nothing
        await wait_ui(pilot, lambda: any("global_batch_sise" in n.message for n in app._notifications))
        assert not (tmp_path / "runs").exists()


async def test_new_run_back_and_quit_keys(failed_run: Path) -> None:
    app = make_app(failed_run.parent, attach=failed_run)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.step == 400)
        await pilot.press("n")
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen))
        assert "switch_mode('picker')" not in footer_actions(app)  # already here
        await pilot.press("escape")
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("r")
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("escape")
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("q")
        await wait_ui(pilot, lambda: not app.is_running)
    assert app.return_code == 0


async def test_live_controls_offered_and_errors_shown(live_run: Path) -> None:
    app = make_app(live_run.parent, attach=live_run)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.alive and dash.status == "running")
        assert {"pause", "checkpoint", "evaluate", "stop"} <= footer_actions(app)
        assert "resume" not in footer_actions(app)
        await pilot.press("p")  # nobody listens on control.sock: the error is shown, nothing breaks
        await wait_ui(pilot, lambda: any("no trainer is listening" in n.message for n in app._notifications))
        log = dash.query_one(LogPanel)
        await wait_ui(pilot, lambda: "[pause] pause failed" in "\n".join(strip.text for strip in log.lines))


async def test_readonly_dashboard_of_a_live_run_has_no_controls(live_run: Path) -> None:
    app = make_app(live_run.parent, attach=live_run, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.alive and dash.status == "running")
        # `q` says the run goes on: it is live
        assert footer_actions(app) == {"switch_mode('runs')", "help", "quit_detached"}
        # Not even the confirm dialog. Keys are handled in order: once `?` has opened the help, `s` has
        # been handled too, so no dialog by then means none at all.
        await pilot.press("s", "question_mark")
        await wait_ui(pilot, lambda: any(isinstance(s, (HelpScreen, ConfirmScreen)) for s in app.screen_stack))
        assert not any(isinstance(s, ConfirmScreen) for s in app.screen_stack)
        assert isinstance(app.screen, HelpScreen)
