"""`hrm-train ctl status` and hrm.run.status on a real trainer: the true state and step while it
runs, is paused, after a stop, after it finished, and after a SIGKILL (`died`, at the last step it
logged), with running and paused time kept apart."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from support.train import (
    LONG,
    TINY,
    as_json,
    events,
    kill_group,
    last_train_step,
    run,
    show,
    start,
    statuses,
    train_cmd,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.slow  # real trainer processes paused, killed, stopped


def _ctl_status(d: Path) -> dict:
    r = run(train_cmd("ctl", str(d), "status"), timeout=60)
    assert r.returncode == 0, r.stderr
    return as_json(r.stdout)


def _ctl(d: Path, cmd: str) -> dict:
    from hrm.run.control import send_command

    return send_command(d, cmd, timeout=60)


def test_status_of_a_running_paused_then_killed_run(tmp_path: Path) -> None:
    from hrm.run.status import read_status

    d, log = tmp_path / "run", tmp_path / "log"
    p = start(train_cmd(*LONG, "--run-dir", str(d)), log)
    try:
        wait_state(d, "running", 120)
        wait_for(lambda: last_train_step(d) >= 2, 60, "two steps")
        st = _ctl_status(d)
        assert st["live"] and st["state"] == "running" and st["step"] >= 2 and st["total_steps"] == 100000, st
        n = _ctl(d, "pause")["step"]
        wait_for(lambda: read_status(d).state == "paused", 30, "state.json says paused")
        st = _ctl_status(d)
        assert (st["state"], st["step"], st["live"]) == ("paused", n, True), st
        paused_before = read_status(d).paused_time()
        wait_for(lambda: read_status(d).paused_time() > paused_before + 0.3, 30, "paused time to grow")
        running = read_status(d).running_time()
        assert _ctl(d, "resume")["ok"]
        wait_for(lambda: last_train_step(d) >= n + 2, 60, "steps after the pause")
        st = read_status(d)
        assert st.paused_s > 0.3 and st.running_time() >= running, st
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        kill_group(p)
    # The step it reached: the newest the trainer recorded anywhere (a step's train event waits for
    # the next step's reduction, and state.json is rewritten at most twice a second).
    reached = max(json.loads((d / "state.json").read_text())["step"], max(e["step"] for e in events(d)))
    st = _ctl_status(d)
    assert (st["state"], st["live"], st["step"]) == ("died", False, reached), (st, show(log))
    assert reached >= last_train_step(d) >= n + 2
    assert statuses(d)[-1]["state"] == "running"  # the record itself never says died


def test_status_after_a_stop_and_after_finishing(tmp_path: Path) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main([*TINY, "train.total_steps=4", "--run-dir", str(d), "--stop-at-step", "2"]) == 0
    st = _ctl_status(d)
    assert (st["state"], st["step"], st["live"]) == ("stopped", 2, False), st
    assert st["checkpoint"] == "checkpoints/step-00000002.pt" and "--stop-at-step" in st["reason"]
    assert main(["--run-dir", str(d), "--resume", "latest"]) == 0
    st = _ctl_status(d)
    assert (st["state"], st["step"], st["total_steps"]) == ("finished", 4, 4), st
    assert st["running_s"] > 0 and st["paused_s"] == 0
