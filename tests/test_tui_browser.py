"""The runs browser and the app around it: row states against what the trainer recorded, checkpoints
of an abandoned branch, keys that do not apply say why, re-attaching on restart, the app's interface.
Run directories are written with the trainer's own writers (EventWriter, StateFile), so the app reads
the bytes a real run produces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import T0, FakeNvml, fixed_sampler, run_events, write_run

from hrm.run import layout
from hrm.run.events import EventWriter
from hrm.run.lock import write_pidfile
from hrm.run.status import StateFile
from hrm_tui import checkpoints, runs
from hrm_tui.app import HrmApp
from hrm_tui.screens import DashboardScreen, PickerScreen, RunsScreen
from hrm_tui.screens.confirm import ConfirmScreen

NO_CUDA = "no NVIDIA GPU on this machine (test)"


def make_app(root: Path, **kw) -> HrmApp:
    kw.setdefault("sampler", fixed_sampler(FakeNvml()))
    kw.setdefault("clock", lambda: T0 + 500)
    kw.setdefault("cuda_probe", lambda: NO_CUDA)
    return HrmApp(root, **kw)


def footer_actions(app: HrmApp) -> set[str]:
    return {ab.binding.action for ab in app.screen.active_bindings.values() if ab.binding.show}


def notes(app: HrmApp) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def sleeper():
    """A living process to hold a run's lock as a trainer would (the control socket is not needed)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def trainer_run(root: Path, name: str, states: list[tuple[str, int]], *, padding: int = 0, state_file: bool = True):
    """A run as the trainer records it: run event, train steps, status changes (state, at step), then
    `padding` system events (a paused run keeps sampling the machine) — and state.json unless the run
    predates it."""
    run = root / name
    run.mkdir(parents=True)
    sf = StateFile(run, total_steps=1000) if state_file else None
    with EventWriter(layout.events_path(run)) as w:
        w.write("run", 0, total_steps=1000, task="sudoku", grid=[9, 9], resumed_from=None)
        step = 0
        for state, at in states:
            while step < at:
                step += 1
                w.write("train", step, loss=1.0, accuracy=0.5, exact_accuracy=0.1)
                if sf:
                    sf.at_step(step)
            reason = "CUDA out of memory" if state == "failed" else None
            w.write("status", step, state=state, total_steps=1000, **({"reason": reason} if reason else {}))
            if sf:
                sf.set(state, step, reason)
        for _ in range(padding):
            w.write("system", step, gpus=[], nvml="NVML not available", cpu_percent=50.0, host_mem_used=1e9)
    return run


async def test_runs_list_states_and_steps_as_recorded(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    root = tmp_path / "runs"
    # Paused at 204 and then 3,000 system events (~300 KiB past the last status and train events):
    # the case that read `starting 0` when the list looked at the last 64 KiB only. Once with the
    # trainer's state.json, once without it (a run from before state.json: the events are scanned).
    paused = trainer_run(root, "paused", [("starting", 0), ("running", 0), ("paused", 204)], padding=3000)
    old_paused = trainer_run(
        root, "old-paused", [("starting", 0), ("running", 0), ("paused", 57)], padding=3000, state_file=False
    )
    write_pidfile(paused, pid=sleeper.pid)
    write_pidfile(old_paused, pid=sleeper.pid)
    trainer_run(root, "stopped", [("running", 0), ("stopping", 30), ("stopped", 30)])
    trainer_run(root, "finished", [("running", 0), ("finished", 40)])
    trainer_run(root, "failed", [("running", 0), ("failed", 12)])
    died = trainer_run(root, "died", [("running", 0)], padding=0)
    with EventWriter(layout.events_path(died)) as w:  # killed at step 122: no final status
        for s in range(1, 123):
            w.write("train", s, loss=1.0)
    building = trainer_run(root, "building", [("starting", 0), ("building", 0)])
    write_pidfile(building, pid=sleeper.pid)
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.infos) == 7)
        rows = {i.name: (i.label, i.step, i.alive) for i in app.screen.infos}
        assert rows == {
            "paused": ("paused", 204, True),
            "old-paused": ("paused", 57, True),
            "building": ("building data", 0, True),
            "stopped": ("stopped", 30, False),
            "finished": ("finished", 40, False),
            "failed": ("failed", 12, False),
            "died": ("died", 122, False),
        }
        assert {i.name for i in app.screen.infos[:3]} == {"paused", "old-paused", "building"}  # live first
        from textual.widgets import DataTable

        table = app.screen.query_one("#runs", DataTable)
        shown = {table.get_row_at(i)[1]: table.get_row_at(i) for i in range(table.row_count)}
        assert shown["paused"][2:] == ["paused", "204 / 1,000"] and shown["died"][0] == "✗"
        assert shown["building"][2] == "building data"
        failed = next(i for i, info in enumerate(app.screen.infos) if info.name == "failed")
        table.move_cursor(row=failed)  # the reason the trainer recorded, under the list
        await wait_ui(pilot, lambda: table.border_subtitle == "failed: CUDA out of memory")


def abandoned_branch_run(root: Path) -> Path:
    """Segment 1 checkpoints steps 86, 166 and 246 (246 scores best); the user resumes from 86;
    segment 2 checkpoints 126. index.json as the trainer's writer leaves it: best = 246."""
    run = write_run(root, "branched", [])
    t1, t2 = T0, T0 + 1000
    ckpt_dir = layout.checkpoints_dir(run)
    entries = []
    for step, t, score in ((86, t1 + 86, 0.20), (166, t1 + 166, 0.30), (246, t1 + 246, 0.50), (126, t2 + 40, 0.25)):
        path = ckpt_dir / layout.checkpoint_name(step)
        path.write_bytes(b"x" * 100)
        os.utime(path, (t, t))
        entries.append({"file": path.name, "step": step, "score": score, "size": 100, "time": t})
    (ckpt_dir / layout.CKPT_INDEX_FILE).write_text(json.dumps({"checkpoints": entries, "best": "step-00000246.pt"}))
    lines = run_events(250, t0=t1, dt=1.0, status="stopped", eval_every=1000)
    lines.append(json.dumps({"v": 1, "t": t2, "kind": "run", "step": 86, "resumed_from": "step-00000086.pt"}))
    lines += [json.dumps({"v": 1, "t": t2 + s - 86, "kind": "train", "step": s, "loss": 1.0}) for s in range(87, 130)]
    layout.events_path(run).write_text("\n".join(lines) + "\n")
    return run


def test_abandoned_branch_is_marked_and_never_best(tmp_path: Path) -> None:
    run = abandoned_branch_run(tmp_path)
    assert checkpoints.segments(layout.events_path(run)) == [(0, T0), (86, T0 + 1000)]
    listed = [(c.step, c.abandoned, c.best) for c in checkpoints.browse(run)]
    # The live branch (126, then 86) first; 246 is the index's best but abandoned: the best live one wins.
    assert listed == [(126, False, True), (86, False, False), (246, True, False), (166, True, False)]
    # Just after the resume, before the resumed run writes a checkpoint: the write order alone still
    # reads 86 → 166 → 246 as one branch; the resume's `run` event already says which is abandoned.
    index_file = layout.checkpoints_dir(run) / layout.CKPT_INDEX_FILE
    index = json.loads(index_file.read_text())
    index["checkpoints"] = [e for e in index["checkpoints"] if e["step"] != 126]
    index_file.write_text(json.dumps(index))
    (layout.checkpoints_dir(run) / layout.checkpoint_name(126)).unlink()
    listed = [(c.step, c.abandoned, c.best) for c in checkpoints.browse(run)]
    assert listed == [(86, False, True), (246, True, False), (166, True, False)]


async def test_browser_checkpoints_of_a_resumed_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    abandoned_branch_run(root)
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.checkpoints)
        from textual.widgets import DataTable

        pane = app.screen.query_one("#ckpts", DataTable)
        await wait_ui(pilot, lambda: pane.row_count == 4)
        marks = [(pane.get_row_at(i)[0], pane.get_row_at(i)[-1]) for i in range(4)]
        assert marks == [("126", "best"), ("86", ""), ("246", "abandoned branch"), ("166", "abandoned branch")]
        assert pane.cursor_row == 0  # the newest checkpoint of the live branch
        assert "2 from an abandoned branch" in str(pane.border_subtitle)


async def test_checkpoint_pane_says_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "runs"
    write_run(root, "r", run_events(10, status="finished"))
    release = threading.Event()
    real = checkpoints.browse

    def slow_browse(run_dir: Path):
        release.wait(10)  # a slow disk: the pane must say it is loading meanwhile
        return real(run_dir)

    monkeypatch.setattr("hrm_tui.screens.runs.browse", slow_browse)
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.infos)
        pane = app.screen.query_one("#ckpts")
        assert pane.border_subtitle == "loading…"
        release.set()
        await wait_ui(pilot, lambda: pane.border_subtitle == "no checkpoints")


async def test_keys_that_do_not_apply_say_why(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    root = tmp_path / "runs"
    live = write_run(root, "live", run_events(30, status="running", t0=T0 + 100))
    (layout.checkpoints_dir(live) / layout.checkpoint_name(20)).write_bytes(b"x")
    write_pidfile(live, pid=sleeper.pid)
    write_run(root, "no-ckpt", run_events(10, status="finished"))
    app = make_app(root)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.checkpoints)
        assert app.screen.selected_run == live and app.screen.selected_alive
        assert not {"resume", "delete"} & footer_actions(app)  # not offered on a live run ...
        await pilot.press("R")  # ... and the key says why instead of nothing
        await wait_ui(pilot, lambda: any("live is running: stop it first" in m for m in notes(app)))
        await pilot.press("d")
        await wait_ui(pilot, lambda: any("then delete it" in m for m in notes(app)))
        assert live.is_dir() and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("down")  # a finished run without checkpoints: delete yes, resume says why
        await wait_ui(pilot, lambda: app.screen.selected_run == root / "no-ckpt" and not app.screen.selected_alive)
        await wait_ui(pilot, lambda: "delete" in footer_actions(app) and "resume" not in footer_actions(app))
        await pilot.press("R")
        await wait_ui(pilot, lambda: any("no-ckpt has no checkpoint to resume from" in m for m in notes(app)))


async def test_r_from_the_dashboard_selects_the_attached_run_and_delete_forgets_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "newer", run_events(10, status="finished", t0=T0 + 100))
    older = write_run(root, "older", run_events(10, status="finished", t0=T0))
    app = make_app(root, attach=older)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.step == 10)
        await pilot.press("r")
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.infos)
        await wait_ui(pilot, lambda: app.screen.selected_run == older)  # not the first row
        assert [i.name for i in app.screen.infos] == ["newer", "older"]
        await pilot.press("d")
        await wait_ui(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_ui(pilot, lambda: not older.exists() and app.attached_run is None)
        await pilot.press("escape")  # nothing attached any more: back goes to the picker
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen))


async def test_restart_reattaches_to_the_last_live_run(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    root = tmp_path / "runs"
    state = tmp_path / "cache" / "last-run.json"
    live = write_run(root, "live", run_events(30, status="running"))
    write_pidfile(live, pid=sleeper.pid)
    write_run(root, "other", run_events(10, status="finished", t0=T0 + 100))
    app = make_app(root, attach=live, last_run_file=state)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.alive)
        await pilot.press("q")
    app = make_app(root, last_run_file=state)  # started again, no run named: back on the live run
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.step == 30)
        assert app.attached_run == live.resolve()
    sleeper.kill()
    sleeper.wait()
    app = make_app(root, last_run_file=state)  # its trainer is gone: the runs list instead
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.infos)
        assert app.attached_run is None


def test_screens_use_the_app_only_through_its_interface() -> None:
    """No private Textual API; no screen imports the app class or assigns app state."""
    import re

    pkg = Path(__file__).resolve().parents[1] / "hrm_tui"
    for path in [pkg / "app.py", *sorted((pkg / "screens").glob("*.py"))]:
        text = path.read_text()
        assert "_screen_stacks" not in text, path
        if path.parent.name == "screens":
            assert "hrm_tui.app" not in text, path
            assert not re.search(r"self\.(app|hrm)\.\w+\s*=[^=]", text), path


def test_an_ended_run_read_again_once_a_trainer_takes_it_up(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    """Ended runs are not re-read while their files stay the same (the list rescans every 2 s);
    a resume (a new trainer, new events) shows at once."""
    run = trainer_run(tmp_path, "r", [("running", 0), ("stopping", 30), ("stopped", 30)])
    assert (runs.run_info(run).status, runs.run_info(run).step) == ("stopped", 30)
    write_pidfile(run, pid=sleeper.pid)
    sf = StateFile(run, total_steps=1000, step=30)
    with EventWriter(layout.events_path(run)) as w:
        w.write("run", 30, total_steps=1000, resumed_from="step-00000030.pt")
        w.write("status", 30, state="running")
        sf.set("running", 31)
    info = runs.run_info(run)
    assert (info.status, info.step, info.alive) == ("running", 31, True)
