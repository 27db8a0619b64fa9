"""Pilot tests against a REAL trainer process on the `tiny` preset: launch from the picker, watch the
step advance, pause/resume, checkpoint, evaluate, stop (confirmed), and resume from a checkpoint in
the runs browser as a continuation in the same run directory. The app talks to the trainer only
through the run directory, exactly as in use."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import FakeNvml, fixed_sampler

from hrm.run.events import read_events
from hrm.run.layout import EVENTS_FILE, checkpoint_name
from hrm_tui import runs
from hrm_tui.app import HrmApp
from hrm_tui.screens import DashboardScreen, PickerScreen, RunsScreen
from hrm_tui.screens.confirm import ConfirmScreen
from hrm_tui.widgets import LogPanel

pytestmark = pytest.mark.slow
STARTUP_S = 180  # torch import + dataset build + first step, on a busy 2-core machine
STEP_S = 60  # any one command: the trainer acts between steps


def log_text(dash: DashboardScreen) -> str:
    return "\n".join(strip.text for strip in dash.query_one(LogPanel).lines)


async def test_live_run_every_control_key(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    app = HrmApp(root, sampler=fixed_sampler(FakeNvml()))
    run_dir: Path | None = None
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            # New run: pick `tiny`, long enough to outlive the test, launch with enter.
            await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows, 30, "presets")
            picker = app.screen
            row = next(i for i, r in enumerate(picker.rows) if r["preset"] == "tiny")
            picker.query_one("#presets").move_cursor(row=row)
            picker.query_one("#steps").value = "100000"
            picker.query_one("#run-name").value = "live"
            await pilot.press("enter")
            await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen), 30, "dashboard")
            dash = app.screen
            run_dir = root / "live"
            assert app.attached_run == run_dir and (run_dir / "trainer.log").exists()
            await wait_ui(pilot, lambda: dash.state.step >= 2 and dash.alive, STARTUP_S, "the step to advance")
            assert dash.status == "running"
            assert {"pause", "checkpoint", "evaluate", "stop"} <= _footer(app)

            # p: pause — the step stops and the footer offers resume instead.
            await pilot.press("p")
            await wait_ui(pilot, lambda: dash.status == "paused", STEP_S, "paused")
            paused_at = dash.state.step
            await wait_ui(pilot, lambda: "resume" in _footer(app) and "pause" not in _footer(app), 30, "resume offered")
            # the reply is shown (it comes back on the command's worker, independently of the status event)
            await wait_ui(pilot, lambda: "[pause]" in log_text(dash), 30, "the pause reply")

            # c: checkpoint now (while paused) — a file appears. Its reply comes from the trainer's pause
            # loop after the file is written: proof that the paused trainer went round its loop, and no
            # step ran meanwhile (no fixed sleep to "give it time to step").
            await pilot.press("c")
            await wait_ui(pilot, lambda: "[checkpoint]" in log_text(dash), STEP_S, "the checkpoint reply")
            assert (run_dir / "checkpoints" / checkpoint_name(paused_at)).is_file()
            trained = [e["step"] for e in read_events(run_dir / EVENTS_FILE) if e["kind"] == "train"]
            assert max(trained) == paused_at == dash.state.step, "a step ran while paused"
            await pilot.press("p")
            await wait_ui(pilot, lambda: dash.status == "running", STEP_S, "running again")
            await wait_ui(pilot, lambda: dash.state.step > paused_at, STEP_S, "the step to move again")

            # e: evaluate now — an eval with samples arrives and the puzzle view draws one.
            await pilot.press("e")
            await wait_ui(pilot, lambda: bool(dash.state.latest_eval.get("samples")), STEP_S, "an eval")
            await wait_ui(
                pilot,
                lambda: "Eval sample 1/" in dash.query_one("#puzzle").render().plain,
                30,
                "the puzzle view to draw the sample",
            )

            # s: stop asks first; y confirms; the trainer checkpoints and exits.
            await pilot.press("s")
            await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the confirm dialog")
            await pilot.press("y")
            await wait_ui(pilot, lambda: not runs.trainer_alive(run_dir), STEP_S, "the trainer to exit")
            await wait_ui(pilot, lambda: dash.status in ("finished", "stopped"), 30, "a final status")
            stopped_at = dash.state.step

            # r, then R: resume from the newest checkpoint, in the same run directory.
            await pilot.press("r")
            await wait_ui(
                pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.checkpoints, 10, "the checkpoints list"
            )
            assert "resume" in _footer(app)
            await pilot.press("R")
            await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the confirm dialog")
            await pilot.press("y")
            await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen), 30, "back on the dashboard")
            await wait_ui(
                pilot, lambda: bool(dash.state.run.get("resumed_from")) and dash.alive, STARTUP_S, "the resumed trainer"
            )
            resumed_at = dash.state.run["step"]
            assert resumed_at <= stopped_at and str(resumed_at) in Path(dash.state.run["resumed_from"]).name
            await wait_ui(pilot, lambda: dash.state.step > resumed_at, STEP_S, "steps after the resume")
            steps = list(dash.state.steps)
            assert steps == sorted(set(steps))  # superseded steps were dropped: one history, in order
            await pilot.press("s")
            await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the confirm dialog")
            await pilot.press("y")
            await wait_ui(pilot, lambda: not runs.trainer_alive(run_dir), STEP_S, "the trainer to exit")
    finally:
        if run_dir is not None and runs.trainer_alive(run_dir):  # never leave a trainer behind
            from hrm.run.control import send_command

            send_command(run_dir, "stop", timeout=60)


async def test_live_two_process_run_from_the_picker(tmp_path: Path) -> None:
    """gpus=2 in the picker starts torchrun with two processes (gloo on this CPU machine); the
    dashboard watches it like any other run."""
    root = tmp_path / "runs"
    app = HrmApp(root, sampler=fixed_sampler(FakeNvml()))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows, 30, "presets")
        picker = app.screen
        picker.query_one("#presets").move_cursor(
            row=next(i for i, r in enumerate(picker.rows) if r["preset"] == "tiny")
        )
        picker.query_one("#run-name").value = "two"
        picker.query_one("#steps").value = "4"
        picker.query_one("#gpus").value = "2"
        picker.query_one("#extra").value = "train.eval_interval=100"
        await pilot.press("enter")
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen), 30, "dashboard")
        dash = app.screen
        await wait_ui(pilot, lambda: dash.status == "finished", STARTUP_S, "the 2-process run to finish")
        assert dash.state.run["world_size"] == 2 and dash.state.step == 4
        assert "2 ranks" in dash.query_one("#header").render().plain
        assert "torch.distributed.run" in (root / "two" / "trainer.log").read_text().splitlines()[0]


def _footer(app: HrmApp) -> set[str]:
    return {ab.binding.action for ab in app.screen.active_bindings.values() if ab.binding.show}
