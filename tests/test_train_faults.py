"""Faults of issue 15 on real trainers (processes and files of our own trainer): a run killed before
its first checkpoint, a kill right after a checkpoint, a corrupt checkpoint, a refused resume, a
full disk, wrecked weights — and the exit code and final status each one leaves."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from support.train import (
    LONG,
    TINY,
    effective,
    events,
    flip_a_data_byte,
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

pytestmark = pytest.mark.slow  # every test runs real trainer processes

SHORT = [*TINY, "train.total_steps=4", "train.eval_interval=2", "train.checkpoint_interval=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 4 steps, finished, with checkpoints at 2 and 4."""
    from hrm.train.cli import main

    d = tmp_path_factory.mktemp("finished") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*SHORT, "--run-dir", str(d)]) == 0
    finally:
        torch.set_num_threads(n)
    return d


def _snapshot(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in ("events.jsonl", "state.json", "config.yaml") if (d / n).is_file()}


def _kill_after(d: Path, log: Path, cond, what: str, args: list[str] | None = None) -> None:
    p = start(train_cmd(*(args or LONG), "--run-dir", str(d)), log)
    try:
        wait_for(cond, 120, what, interval=0.002)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        kill_group(p)


def test_resume_latest_without_a_checkpoint_starts_from_step_0_in_place(tmp_path: Path) -> None:
    d, log = tmp_path / "run", tmp_path / "log"
    _kill_after(d, log, lambda: last_train_step(d) >= 2, "two steps, no checkpoint")
    assert not list((d / "checkpoints").glob("*.pt"))
    plain = run(train_cmd(*TINY, "--run-dir", str(d)))
    assert plain.returncode == 2 and "--resume latest" in plain.stderr and "step 0" in plain.stderr, plain.stderr
    r = run(train_cmd("--run-dir", str(d), "train.total_steps=3", "--resume", "latest"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "starting from step 0 in place" in r.stderr and "Traceback" not in r.stderr
    runs = [e for e in events(d) if e["kind"] == "run"]
    assert runs[-1]["step"] == 0 and runs[-1]["resumed_from"] == "step 0"
    assert sorted(effective(events(d))) == [1, 2, 3]  # the killed attempt's steps are superseded
    assert statuses(d)[-1]["state"] == "finished"


def test_every_step_a_checkpoint_covers_is_logged_before_it_appears(tmp_path: Path) -> None:
    """Kill the moment step-3's file is visible: steps 1-3 must all be in events.jsonl."""
    d, log = tmp_path / "run", tmp_path / "log"
    args = [*TINY, "train.total_steps=100000", "train.eval_interval=100000", "train.checkpoint_interval=3"]
    _kill_after(d, log, lambda: (d / "checkpoints" / "step-00000003.pt").exists(), "checkpoint 3", args)
    assert {1, 2, 3} <= set(effective(events(d))), show(log)
    r = run(train_cmd("--run-dir", str(d), "train.total_steps=5", "--resume", "latest"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(effective(events(d))) == [1, 2, 3, 4, 5]


def test_a_corrupt_checkpoint_is_one_line_and_latest_falls_back(finished: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "run"
    shutil.copytree(finished, d)
    newest = d / "checkpoints" / "step-00000004.pt"
    flip_a_data_byte(newest)
    before = _snapshot(d)
    r = run(train_cmd("--run-dir", str(d), "--resume", str(newest)))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("hrm-train: checkpoint ") and str(newest) in lines[-1] and "corrupt" in lines[-1]
    assert _snapshot(d) == before  # refused: nothing written
    r = run(train_cmd("--run-dir", str(d), "train.total_steps=5", "--resume", "latest"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "skipped checkpoints/step-00000004.pt" in r.stderr
    assert [e for e in events(d) if e["kind"] == "run"][-1]["resumed_from"] == "checkpoints/step-00000002.pt"
    half = d / "checkpoints" / "step-00000002.pt"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    r = run(train_cmd("--run-dir", str(d), "--resume", str(half)))
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(half) in r.stderr, r.stderr


def test_a_refused_resume_leaves_a_finished_run_as_it_was(finished: Path, tmp_path: Path) -> None:
    from hrm.run.status import read_status

    before = _snapshot(finished)
    bad = tmp_path / "step-00000009.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run(train_cmd("--run-dir", str(finished), "--resume", str(bad)))
    assert r.returncode == 2 and str(bad) in r.stderr, r.stderr
    r = run(train_cmd("--run-dir", str(finished), "model.hidden_size=64", "--resume", "latest"))
    assert r.returncode == 2 and "does not fit" in r.stderr, r.stderr
    assert _snapshot(finished) == before
    st = read_status(finished)
    assert (st.state, st.step) == ("finished", 4)


def test_wrecked_weights_are_never_checkpointed(tmp_path: Path) -> None:
    """optim.lr=1e30: finite weights of ~1e30 after the first update. Checkpoints are due every
    step; none may hold them, and the run ends failed (exit 1) saying why."""
    from hrm.train.cli import main

    d = tmp_path / "run"
    rc = main([*TINY, "optim.lr=1e30", "train.total_steps=4", "train.checkpoint_interval=1", "--run-dir", str(d)])
    assert rc == 1
    errors = [e["message"] for e in events(d) if e["kind"] == "log" and e["level"] == "error"]
    assert any("parameters wrecked by the update of step 1" in m for m in errors), errors
    last = statuses(d)[-1]
    assert last["state"] == "failed" and "wrecked" in last["reason"], last
    assert not list((d / "checkpoints").glob("*.pt"))  # due at step 1: refused
    assert not [e for e in events(d) if e["kind"] == "checkpoint"]


# --- a full disk: a real small filesystem (tmpfs; needs root and mount rights) -------------------
@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {ok.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_final_checkpoint_fails_the_run(small_fs: Path) -> None:
    """A 600 KiB filesystem holds the events but not a 900 KB checkpoint."""
    d = small_fs / "run"
    r = run(train_cmd(*TINY, "train.total_steps=3", "--run-dir", str(d)))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "enforce fail" not in r.stderr
    last = statuses(d)[-1]
    assert last["state"] == "failed" and "no space left on device" in last["reason"], last
    assert "step-00000003.pt" in last["reason"] and "--resume latest" in last["reason"]
    assert not list((d / "checkpoints").glob("*.pt")) and not list((d / "checkpoints").glob(".tmp-*"))
    from hrm.run.status import read_status

    assert read_status(d).state == "failed"


def test_completely_full_disk_still_records_why_the_run_ended(small_fs: Path, tmp_path: Path) -> None:
    d, log = small_fs / "run", tmp_path / "log"
    p = start(train_cmd(*LONG, "--run-dir", str(d)), log)
    try:
        wait_state(d, "running", 120)
        wait_for(lambda: last_train_step(d) >= 1, 60, "a step")
        fd = os.open(small_fs / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # take every free byte
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        rc = p.wait(120)
    finally:
        kill_group(p)
    assert rc == 1, show(log)
    last = statuses(d)[-1]
    assert last["state"] == "failed" and "no space left on device" in last["reason"], (last, show(log))
    from hrm.run.status import read_status

    st = read_status(d)
    assert st.state == "failed" and not st.live
