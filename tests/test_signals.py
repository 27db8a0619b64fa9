"""Commands over control.sock and signals, on a real trainer process: each acts within one step,
gets its reply and its event; the pid file refuses a second trainer and tells a stale one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from support.train import (
    LONG,
    TINY,
    effective,
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


def _ctl(run_dir: Path, cmd: str) -> dict:
    from hrm.run.control import send_command

    return send_command(run_dir, cmd, timeout=60)


@pytest.mark.slow  # a real trainer, steered over its socket
def test_commands_act_within_one_step(tmp_path: Path) -> None:
    d, log = tmp_path / "run", tmp_path / "log"
    p = start(train_cmd(*LONG, "--run-dir", str(d)), log)
    try:
        wait_state(d, "running", 90)
        wait_for(lambda: last_train_step(d) >= 2, 60, "two steps")

        r = _ctl(d, "pause")
        assert r["ok"], r
        n = r["step"]
        assert wait_state(d, "paused")["step"] == n
        # No fixed sleep to "give it time to step": every reply below comes from the trainer's pause loop,
        # and its events are flushed before the checkpoint event, so a step taken while paused would show.

        # A second trainer on this live run directory is refused; the run is untouched.
        second = run(train_cmd("--run-dir", str(d), "--resume", "latest"), timeout=90)
        assert second.returncode != 0 and "trainer" in second.stderr.lower(), second.stderr[-2000:]

        r = _ctl(d, "checkpoint")  # answered while paused, after the file is written
        assert r["ok"] and r["step"] == n, r
        assert (d / r["path"]).is_file()
        assert any(e["kind"] == "checkpoint" and e["step"] == n for e in events(d))

        r = _ctl(d, "eval")
        assert r["ok"] and "exact_accuracy" in r, r
        ev = effective(events(d), "eval")[n]
        assert ev["num_examples"] == 8 and len(ev["samples"]) <= 8 and sum(ev["act_steps_hist"]) == 8

        r = _ctl(d, "status")
        assert r["ok"] and r["state"] == "paused" and r["step"] == n, r
        assert last_train_step(d) == n, "a step ran after the pause"
        bad = _ctl(d, "explode")
        assert not bad["ok"] and "unknown command" in bad["error"]

        r = _ctl(d, "resume")
        assert r["ok"], r
        wait_for(lambda: last_train_step(d) > n + 1, 60, "steps after resume")

        r = _ctl(d, "stop")
        assert r["ok"], r
        m = r["step"]
        assert p.wait(60) == 0, show(log)
    finally:
        kill_group(p)
    last = statuses(d)[-1]
    assert last["state"] == "stopped" and "stop command" in last["reason"]
    assert last_train_step(d) == m
    assert (d / "checkpoints" / f"step-{m:08d}.pt").is_file()
    assert not (d / "control.sock").exists() and not (d / "trainer.pid").exists()


@pytest.mark.slow  # a real trainer, steered by signals
def test_signals(tmp_path: Path) -> None:
    d, log = tmp_path / "run", tmp_path / "log"
    p = start(train_cmd(*LONG, "--run-dir", str(d)), log)
    try:
        wait_state(d, "running", 90)
        wait_for(lambda: last_train_step(d) >= 1, 60, "a step")
        os.kill(p.pid, signal.SIGHUP)  # ignored: closing a terminal never ends a run
        os.kill(p.pid, signal.SIGUSR1)  # = checkpoint
        ck = wait_for(lambda: next((e for e in events(d) if e["kind"] == "checkpoint"), None), 60, "checkpoint")
        assert p.poll() is None, "SIGHUP ended the trainer"
        assert wait_for(lambda: last_train_step(d) > ck["step"], 60, "training after SIGUSR1")
        os.kill(p.pid, signal.SIGTERM)  # = stop, with a checkpoint
        assert p.wait(60) == 0, show(log)
    finally:
        kill_group(p)
    last = statuses(d)[-1]
    assert last["state"] == "stopped" and "SIGTERM" in last["reason"], last
    stop_step = last_train_step(d)
    assert (d / "checkpoints" / f"step-{stop_step:08d}.pt").is_file()

    # SIGINT also stops cleanly; the resumed run continues from the last step.
    p = start(train_cmd("--run-dir", str(d), "--resume", "latest"), log)
    try:
        wait_for(lambda: last_train_step(d) > stop_step, 90, "resumed steps")
        os.kill(p.pid, signal.SIGINT)
        assert p.wait(60) == 0, show(log)
    finally:
        kill_group(p)
    last = statuses(d)[-1]
    assert last["state"] == "stopped" and "SIGINT" in last["reason"], last


@pytest.mark.slow  # a tiny training run in this process
def test_stale_pidfile_is_detected(tmp_path: Path) -> None:
    from hrm.run.lock import read_pidfile, trainer_alive

    d = tmp_path / "run"
    d.mkdir()
    # A pid file left by a crashed trainer: the pid may even be reused, the start time is not.
    (d / "trainer.pid").write_text(
        json.dumps({"pid": os.getpid(), "create_time": 1.0, "hostname": os.uname().nodename, "argv": ["hrm-train"]})
    )
    assert not trainer_alive(d)
    from hrm.train.cli import main

    assert main([*TINY, "train.total_steps=2", "--run-dir", str(d)]) == 0
    assert statuses(d)[-1]["state"] == "finished"
    assert read_pidfile(d) is None


def test_a_signal_during_the_optimizer_step_is_kept_for_the_next_step() -> None:
    """local_flags() is read before the optimizer step and decide() runs after it: a SIGUSR1 or SIGTERM
    that lands in between must not be wiped by that decision (it once was: a lost checkpoint)."""
    from hrm.train.steering import Steering

    steering = Steering(rank=0)
    steering.install_signals()
    try:
        folded = steering.local_flags()  # nothing pending yet
        os.kill(os.getpid(), signal.SIGUSR1)  # arrives "during the optimizer step"
        os.kill(os.getpid(), signal.SIGTERM)
        # Python runs the handlers in this thread, between bytecodes: wait until both have.
        wait_for(lambda: steering._signal_checkpoint and steering._signal_stop, 30, "both signal handlers")
        d = steering.decide(folded)
        assert not d.checkpoint and not d.stop
        d = steering.decide(steering.local_flags())  # the next step acts on both
        assert d.checkpoint and d.stop and d.stop_reason == "signal SIGTERM"
        assert not steering.decide(steering.local_flags()).any()  # and consumes them
    finally:
        steering.restore_signals()


def test_a_signal_while_steering_holds_its_lock_does_not_deadlock() -> None:
    from hrm.train.steering import Steering

    steering = Steering(rank=0)
    steering.install_signals()
    try:
        with steering._lock:  # the main thread inside local_flags/decide
            os.kill(os.getpid(), signal.SIGUSR1)
            wait_for(lambda: steering._signal_checkpoint, 30, "the handler, re-entering the lock")
        assert steering.decide(steering.local_flags()).checkpoint
    finally:
        steering.restore_signals()
