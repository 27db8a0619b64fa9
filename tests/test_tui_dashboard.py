"""The dashboard tells the truth (issue 14): the readout's numbers are the last events' numbers, the
ETA ignores pauses, ACT is honest, the segment stepper walks a sample's ACT segments, the 80×24
panel keys work without focus, and alerts fire on what happens while watching. Events are written
as real events.jsonl files (tests/support/tui.py); one test reads a real tiny trainer's run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import T0, FakeNvml, fixed_sampler, run_events, write_run

from hrm_tui.alerts import AlertWatch, osc_notification
from hrm_tui.app import HrmApp
from hrm_tui.runstate import RunState
from hrm_tui.widgets import ActPanel, Readout, RunHeader

REPO = Path(__file__).resolve().parents[1]


def make_app(root: Path, **kw) -> HrmApp:
    kw.setdefault("sampler", fixed_sampler(FakeNvml()))
    kw.setdefault("clock", lambda: T0 + 500)
    return HrmApp(root, **kw)


def text(widget) -> str:
    return widget.render().plain


def last(events: list[dict], kind: str, n: int = 1) -> dict:
    return [e for e in events if e.get("kind") == kind][-n]


def readout(dash) -> dict[str, str]:
    """The readout's rows by label; the last eval's rows are indented ("  blanks", "  exact")."""
    return dict(dash.query_one(Readout)._rows)


def read_events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


async def test_readout_values_are_the_last_events_values(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", run_events(230, status="finished"))
    events = read_events(run)
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 230 and dash.status == "finished")
        await wait_ui(pilot, lambda: readout(dash).get("step") == "230 / 1,000")
        r = readout(dash)
        tr, ev, prev, sysev = (
            last(events, "train"),
            last(events, "eval"),
            last(events, "eval", 2),
            last(events, "system"),
        )
        assert r["loss"] == f"{tr['loss']:.4f}"
        assert r["blanks"] == f"{tr['changed_accuracy'] * 100:.1f} %"  # Sudoku: changed_accuracy is "blanks"
        assert r["exact"] == f"{tr['exact_accuracy'] * 100:.1f} %"
        assert r["all cells"] == f"{tr['accuracy'] * 100:.1f} %"
        assert "eval @200" in r and ev["step"] == 200
        change = (ev["changed_accuracy"] - prev["changed_accuracy"]) * 100
        assert r["  blanks"] == f"{ev['changed_accuracy'] * 100:.1f} % ({change:+.1f} pp)"
        assert r["  exact"].startswith(f"{ev['exact_accuracy'] * 100:.1f} %")
        assert r["lr"] == f"{tr['lr']:.2e}" and r["grad norm"] == f"{tr['grad_norm']:.3g}"
        assert r["param norm"] == f"{tr['param_norm']:.4g}"
        assert r["step time"] == f"{tr['step_time_s'] * 1000:.0f} ms"
        assert r["ex/s"] == "—"  # the run is over: no throughput
        assert r["trainer CPU"] == r["trainer RSS"] == "—"  # the trainer is gone: no process to measure
        assert sysev["proc_cpu_percent"] > 0  # (though its last sample had figures)
        # The smoothed loss is the plots' EMA (0.9, debiased) of the train losses.
        losses = [e["loss"] for e in events if e["kind"] == "train"]
        acc = 0.0
        for v in losses[-100:]:
            acc = acc * 0.9 + 0.1 * v
        assert float(r["  ema 0.9"]) == pytest.approx(acc / (1 - 0.9**100), abs=1e-4)
        await pilot.press("m")  # smoothing 0.99: the readout follows the plots
        assert "  ema 0.99" in readout(dash)


def _paused_run(pause_s: float = 480.0, dt: float = 0.5) -> list[str]:
    """100 steps of `dt`, a pause of `pause_s`, 10 more steps, then paused again (now)."""
    lines = run_events(100, status=None, dt=dt, eval_every=1000)
    t = T0 + 100 * dt
    extra = [
        {"kind": "status", "state": "paused", "t": t + 0.1},
        {"kind": "status", "state": "running", "t": t + pause_s},
    ]
    for k in range(1, 11):
        extra.append({"kind": "train", "step": 100 + k, "t": t + pause_s + k * dt, "loss": 1.0, "step_time_s": dt})
    extra.append({"kind": "status", "state": "paused", "t": t + pause_s + 10 * dt + 0.1})
    return lines + [json.dumps({"v": 1, **e}) for e in extra]


def test_eta_after_a_pause_is_steps_left_times_step_time() -> None:
    st = RunState()
    st.apply([json.loads(x) for x in _paused_run()])
    assert st.step == 110 and st.total_steps == 1000
    expected = (1000 - 110) * 0.5  # steps left × the running step time
    assert st.eta_seconds() == pytest.approx(expected, rel=0.10)
    assert st.eta_seconds() == pytest.approx(expected, rel=1e-6)  # in fact exact: the pause is not a step
    # Training time leaves the 8-minute pause out and shows it apart.
    end = T0 + 50 + 480 + 5 + 0.1
    # running from the status at t0 + 0.1 to the pause at t0 + 50.1, then 5.1 s after it
    assert st.time_in("running", end, live=False) == pytest.approx(50.0 + 5.1, abs=1e-6)
    assert st.time_in("paused", end, live=True) == pytest.approx(480 - 0.1, abs=0.2)


def test_eta_after_a_stop_and_resume() -> None:
    """A stop, an hour away, and a resumed process: the gap is neither a step nor training time."""
    lines = run_events(100, status="stopped", eval_every=1000)
    run = json.loads(lines[0])
    t = T0 + 3600
    resumed = [
        {**run, "t": t, "step": 100, "resumed_from": "checkpoints/step-00000100.pt"},
        {"v": 1, "kind": "status", "state": "running", "t": t + 5, "step": 100},
    ] + [{"v": 1, "kind": "train", "step": 100 + k, "t": t + 5 + k * 0.5, "loss": 1.0} for k in range(1, 4)]
    st = RunState()
    st.apply([json.loads(x) for x in lines] + resumed)
    assert st.eta_seconds() == pytest.approx((1000 - 103) * 0.5, rel=0.10)
    # t0 + 0.1 .. the stop at t0 + 51, then from the resumed process's `running` (t + 5) to t + 6.5
    assert st.time_in("running", t + 6.5, live=True) == pytest.approx(50.9 + 1.5, abs=1e-6)


@pytest.fixture
def sleeper(tmp_path: Path):
    """A living process that is not a trainer: a run whose pid file names it looks live."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_header_while_paused_and_alert_when_the_trainer_dies(tmp_path: Path, sleeper) -> None:
    from hrm.run.lock import write_pidfile

    run = write_run(tmp_path, "paused", _paused_run())
    write_pidfile(run, pid=sleeper.pid)
    now = T0 + 50 + 480 + 5 + 60.1  # paused for a minute now
    app = make_app(tmp_path, attach=run, clock=lambda: now)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.alive and dash.status == "paused")
        await wait_ui(pilot, lambda: "step 110/1,000" in text(dash.query_one(RunHeader)))
        header = text(dash.query_one(RunHeader))
        assert "● paused" in header and "— ex/s" in header  # no throughput while paused
        assert "ETA 7m25s" in header  # 890 steps × 0.5 s, not stretched by either pause
        assert "train 55s" in header and "paused 8m59s" in header  # 479.9 s, then 60 s more now
        r, sysev = readout(dash), last(read_events(run), "system")
        assert r["ex/s"] == "—"
        assert r["trainer CPU"] == f"{sysev['proc_cpu_percent']:.0f} %"  # the live trainer's own, from its event
        assert r["trainer RSS"] == f"{sysev['proc_rss'] / 1e9:.1f} GB"
        await wait_ui(pilot, lambda: dash.alerts is not None and dash.alerts.armed)
        bells: list[int] = []
        written: list[str] = []
        app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
        app._driver.write = written.append  # type: ignore[method-assign,union-attr]
        await pilot.press("a")  # desktop notifications on (off by default)
        assert dash.desktop_alerts
        sleeper.kill()
        sleeper.wait()
        await wait_ui(pilot, lambda: dash.status == "died")
        await wait_ui(pilot, lambda: any("died" in n.title for n in app._notifications))
        assert bells == [1]  # one alert, one bell
        osc = [w for w in written if w.startswith("\x1b]777;notify;paused died;")]
        assert len(osc) == 1 and "\x1b]9;paused died: " in osc[0]
        await wait_ui(pilot, lambda: "✗ died" in text(dash.query_one(RunHeader)))
        header = text(dash.query_one(RunHeader))
        assert "ETA —" in header and "paused 7m59s" in header  # the dead run's time ends at its last event


def test_alert_watch_ends_nonfinite_and_stalls() -> None:
    w = AlertWatch("r")
    assert w.on_status("finished") == []  # not armed: attaching to an ended run is no news
    w.arm("running", now=100.0)
    assert w.on_status("running") == []
    assert [a.severity for a in w.on_status("failed")] == ["error"]
    w.arm("running", now=100.0)
    nan = [{"kind": "train", "step": 7, "loss": None}, {"kind": "train", "step": 8, "loss": None}]
    alerts = w.on_events(nan, now=101.0)
    assert len(alerts) == 1 and "step 7" in alerts[0].message  # once per bad stretch
    logged = {"kind": "log", "level": "error", "message": "non-finite loss at step 9 (loss=nan)"}
    assert w.on_events([{"kind": "train", "step": 9, "loss": 1.0}, logged], now=102.0)[0].message == logged["message"]
    assert w.check_stall("running", now=102.0 + 59, seconds_per_step=0.5) == []  # under the 60 s floor
    stall = w.check_stall("running", now=102.0 + 61, seconds_per_step=0.5)
    assert len(stall) == 1 and "no step for 61 s" in stall[0].message
    assert w.check_stall("running", now=300.0, seconds_per_step=0.5) == []  # said once
    w.on_events([{"kind": "train", "step": 10, "loss": 1.0}], now=400.0)
    assert w.check_stall("running", now=400.0 + 20 * 5 - 1, seconds_per_step=5.0) == []  # 20 × usual step
    assert w.check_stall("running", now=400.0 + 20 * 5 + 1, seconds_per_step=5.0) != []
    assert w.check_stall("paused", now=10_000.0, seconds_per_step=5.0) == []
    osc = osc_notification("run; done", "finished\x07")
    assert osc == "\x1b]777;notify;run, done;finished\x1b\\\x1b]9;run, done: finished\x1b\\"


async def test_act_off_and_nothing_before_the_run_event(tmp_path: Path) -> None:
    lines = run_events(20, status="finished")
    run = json.loads(lines[0])
    run["config"]["model"]["halt_max_steps"] = 1
    off = write_run(tmp_path, "off", [json.dumps(run)] + lines[1:])
    before = write_run(tmp_path, "before", [ln for ln in lines if json.loads(ln)["kind"] != "run"])
    app = make_app(tmp_path, attach=off)
    async with app.run_test(size=(200, 50)) as pilot:
        act = app.screen.query_one(ActPanel)
        await wait_ui(pilot, lambda: text(act).startswith("ACT off"))
        assert "mean steps" not in text(act) and "q-halt" not in text(act)
    st = RunState()
    st.apply([json.loads(x) for x in before.joinpath("events.jsonl").read_text().splitlines()])
    assert st.halt_max_steps is None  # no default made up
    on = RunState()
    on.apply([json.loads(x) for x in lines])
    assert on.train_act_hist() == [0.0, 20.0, 40.0, 60.0, 40.0, 0.0, 0.0, 0.0]  # 20 train events summed


@pytest.mark.slow
async def test_a_real_tiny_trainer_run_reads_back_into_the_readout(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hrm.train", "tiny", "--run-dir", str(run), "train.total_steps=12"]
    cmd += ["train.eval_interval=6", "train.checkpoint_interval=12"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    events = read_events(run)
    app = make_app(run.parent, attach=run)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 12)
        await wait_ui(pilot, lambda: readout(dash).get("step") == "12 / 12")
        r, tr, ev = readout(dash), last(events, "train"), last(events, "eval")
        assert r["loss"] == f"{tr['loss']:.4f}" and r["lr"] == f"{tr['lr']:.2e}"
        assert r["exact"] == f"{tr['exact_accuracy'] * 100:.1f} %"
        if "changed_accuracy" in tr:  # the trainer's field (issue 14); "—" until it reports it
            assert r["blanks"] == f"{tr['changed_accuracy'] * 100:.1f} %"
        assert r[f"eval @{ev['step']:,}"] == "" and ev["step"] == 12
        assert "finished" in text(dash.query_one(RunHeader))
        assert text(dash.query_one(ActPanel)).startswith("mean steps")  # tiny has halt_max_steps 3


def test_ema_is_debiased_and_the_axis_marks_the_current_step() -> None:
    from hrm_tui.plotting import ema, ema_last, x_axis

    assert ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])  # no pull towards 0 at the start
    assert ema([1.0, float("nan"), 3.0], 0.5)[1] == 1.0  # unknown values carried, not averaged in
    assert ema_last([1.0] * 50 + [2.0], 0.0) == 2.0
    assert x_axis(1, 400, 60, 400).plain.split() == ["step", "1", "400▲"]
    axis = x_axis(100, 500, 60, 150).plain  # an eval ahead of the current step: both ends shown
    assert axis.split() == ["step", "100", "▲150", "500"] and axis.index("▲") == 8 + round(50 / 400 * 51)


def test_readout_accuracy_from_the_last_step_that_halted_sequences() -> None:
    """With ACT, a step where no sequence halted reports 0/0 (count 0, changed_accuracy null), as
    the real trainer writes it: the readout shows the last step that measured, and says which."""
    from hrm_tui.widgets.readout import rows

    lines = [json.loads(x) for x in run_events(10, status=None, eval_every=1000)]
    lines.append({"kind": "train", "step": 11, "t": T0 + 6, "loss": 0.8, "accuracy": 0.0, "exact_accuracy": 0.0,
                  "changed_accuracy": None, "count": 0.0, "act_steps_hist": [0] * 8})  # fmt: skip
    st = RunState()
    st.apply(lines)
    r = dict(rows(st, running=True, smoothing=0.9))
    halted = lines[-2]
    assert halted["kind"] == "train" and halted["step"] == 10
    assert r["blanks"] == f"{halted['changed_accuracy'] * 100:.1f} % @10"
    assert r["all cells"] == f"{halted['accuracy'] * 100:.1f} % @10" and r["loss"] == "0.8000"


async def test_a_stopping_trainer_that_writes_its_end_is_not_starting(tmp_path: Path, sleeper) -> None:
    """The trainer writes its final status, then exits: while it exits the header keeps the final
    state (it once read `● starting`), the alert says what it was, and no `died` follows. A new
    trainer holding the run (a resume) before its first event reads `starting`."""
    from hrm.run.layout import STATE_FILE
    from hrm.run.lock import write_pidfile

    run = write_run(tmp_path, "r", run_events(50, status="stopping"))
    write_pidfile(run, pid=sleeper.pid)
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.alive and dash.status == "stopping")
        await wait_ui(pilot, lambda: dash.alerts is not None and dash.alerts.armed)
        end = {"v": 1, "t": T0 + 30, "kind": "status", "step": 50, "state": "stopped", "reason": "stop command"}
        (run / STATE_FILE).write_text(json.dumps({"state": "stopped", "step": 50, "pid": sleeper.pid, "t": T0 + 30}))
        with open(run / "events.jsonl", "a") as f:
            f.write(json.dumps(end) + "\n")
        await wait_ui(pilot, lambda: dash.status == "stopped")
        await wait_ui(pilot, lambda: any("stopped" in n.title for n in app._notifications))
        assert [n.message for n in app._notifications if "stopped" in n.title] == ["the run is stopped (was stopping)"]
        seen = dash.liveness_checks
        await wait_ui(pilot, lambda: dash.liveness_checks >= seen + 2)  # the trainer is still exiting
        assert dash.status == "stopped" and dash.alive
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            write_pidfile(run, pid=other.pid)  # a resumed trainer took the directory over
            await wait_ui(pilot, lambda: dash.status == "starting")
        finally:
            other.kill()
            other.wait()
        assert not any("died" in n.title for n in app._notifications)


async def test_building_data_is_named_in_the_header(tmp_path: Path, sleeper) -> None:
    """A trainer building its dataset says so (status `building`); the header shows "building data"
    and the build's progress lines reach the log."""
    from hrm.run.lock import write_pidfile

    lines = run_events(0, status=None)[:2]  # the run event and `starting`
    lines.append(json.dumps({"v": 1, "t": T0 + 1, "kind": "status", "step": 0, "state": "building"}))
    progress = "building data: sudoku train 500/1000"
    lines.append(json.dumps({"v": 1, "t": T0 + 5, "kind": "log", "step": 0, "level": "info", "message": progress}))
    run = write_run(tmp_path, "b", lines)
    write_pidfile(run, pid=sleeper.pid)
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.alive and dash.status == "building")
        await wait_ui(pilot, lambda: "● building data" in text(dash.query_one(RunHeader)))
        header = text(dash.query_one(RunHeader))
        assert "ETA —" in header and "— ex/s" in header  # no step yet: nothing made up
        assert progress in [line.text for line in dash.state.log]
