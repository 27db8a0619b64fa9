"""Headless progress: the plain lines a real `hrm-train` writes (stderr not a terminal, so they also land in
trainer.log) carry the step, loss and blanks of the events it wrote, and a line at every eval, checkpoint,
stop and the end; the ETA comes from running steps only; a dataset build the trainer starts is reported as
status `building` with done/total progress events."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from support.train import PY, REPO, TINY, effective, events, proc_env

from hrm.progress import TrainProgress, format_duration

LINE = re.compile(r"hrm\.progress: step (\d+)/(\d+)  loss (\S+)  blanks (\S+)")


@pytest.mark.slow  # a real trainer run
def test_plain_lines_of_a_real_run_match_its_events(tmp_path: Path) -> None:
    import subprocess

    d = tmp_path / "run"
    cmd = [PY, "-m", "hrm.train", *TINY, "train.eval_interval=3", "train.checkpoint_interval=3"]
    cmd += ["--run-dir", str(d), "--stop-at-step", "7"]
    p = subprocess.run(cmd, cwd=REPO, env=proc_env(HRM_PROGRESS_S="0"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    tr = effective(events(d))
    evals = {e["step"]: e for e in events(d) if e["kind"] == "eval"}
    lines = [m for m in map(LINE.search, p.stderr.splitlines()) if m]
    assert [int(m[1]) for m in lines] == sorted(tr) == list(range(1, 8))  # HRM_PROGRESS_S=0: every step
    for m in lines:
        ev = tr[int(m[1])]
        assert int(m[2]) == 40 and m[3] == f"{ev['loss']:.4g}"
        assert m[4] == (f"{100 * ev['changed_accuracy']:.1f}%" if ev["changed_accuracy"] is not None else "—")
    e3, e6 = evals[3], evals[6]
    blanks, exact = 100 * e3["changed_accuracy"], 100 * e3["exact_accuracy"]
    assert f"eval at step 3: blanks {blanks:.1f}% exact {exact:.1f}%" in p.stderr
    assert f"eval@6 blanks {100 * e6['changed_accuracy']:.1f}% exact {100 * e6['exact_accuracy']:.1f}%" in p.stderr
    for step in (3, 6, 7):
        assert f"checkpoint at step {step}: checkpoints/step-{step:08d}.pt" in p.stderr
    assert "stopping at step 7: reached --stop-at-step 7" in p.stderr
    final = [e for e in events(d) if e["kind"] == "status"][-1]
    assert p.stderr.rstrip().splitlines()[-1].endswith(f"{final['state']} at step 7: {final['reason']}")
    log = (d / "trainer.log").read_text()  # the same lines in the run's log
    assert [m.group(0) for m in map(LINE.search, log.splitlines()) if m] == [m.group(0) for m in lines]


def test_eta_counts_running_steps_only() -> None:
    """A pause between steps (the trainer never counts it as step time) leaves the ETA where the rate puts it."""
    prog = TrainProgress(terminal=False, interval_s=3600)
    prog.log_event({"kind": "run", "step": 0, "total_steps": 1000, "task": "maze"})
    for step in range(1, 101):
        prog.log_event({"kind": "train", "step": step, "loss": 1.0, "step_time_s": 0.5, "examples_per_s": 64.0})
    prog.log_event({"kind": "status", "step": 100, "state": "paused"})
    prog.log_event({"kind": "status", "step": 100, "state": "running", "reason": "resume command"})
    ev = {"kind": "train", "step": 101, "loss": 0.9, "changed_accuracy": 0.25, "step_time_s": 0.5}
    prog.log_event(ev)
    line = prog.line(101, ev)
    assert f"ETA {format_duration(0.5 * 899)}" in line and "path 25.0%" in line and "64.0 ex/s" in line
    assert format_duration(0.5 * 899) == "7:29"


@pytest.mark.slow  # a trainer that builds its dataset
def test_a_build_the_trainer_starts_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="hrm.progress")
    # a recipe no other test builds: this run builds it
    assert main([*TINY, "data.seed=4242", "train.total_steps=1", "--run-dir", str(d)]) == 0
    evs = events(d)
    states = [(e["state"], i) for i, e in enumerate(evs) if e["kind"] == "status"]
    # Nothing is written to the run directory before the start is validated, and the dataset build is
    # part of that start: a fresh run's first state is `building`, then `starting`, then `running`.
    names = [s for s, _ in states]
    assert names[:2] == ["building", "starting"] and names[-2:] == ["running", "finished"], names
    first, last = states[0][1], states[1][1]
    builds = [e["build"] for e in evs[first:last] if e["kind"] == "log" and "build" in e]
    by_what: dict[str, list[tuple[int, int]]] = {}
    for b in builds:
        by_what.setdefault(b["what"], []).append((b["done"], b["total"]))
    assert set(by_what) == {"train: easy sudoku", "test: easy sudoku"}
    assert by_what["train: easy sudoku"][0] == (0, 64) and by_what["train: easy sudoku"][-1] == (64, 64)
    assert by_what["test: easy sudoku"][-1] == (16, 16)
    assert all(a[0] <= b[0] for seq in by_what.values() for a, b in zip(seq, seq[1:]))
    assert "train: easy sudoku 64/64" in caplog.text  # the plain build lines (stderr is not a terminal here)
