"""The run lock (hrm.run.lock): an flock on trainer.pid held for the trainer's life, the record for
display, a foreign-host or orphaned record taken over only with --take-over, and the same helper
for the dataset build lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrm.run.lock import (
    PIDFILE_NAME,
    TrainerAlreadyRunning,
    acquire,
    exclusive,
    read_pidfile,
    release,
    trainer_alive,
    write_pidfile,
)

# A child that takes the lock (or an exclusive lock on argv[2] when given), says so, and holds it.
_HOLDER = (
    "import sys, time\n"
    "from hrm.run.lock import acquire, exclusive\n"
    "if len(sys.argv) > 2:\n"
    "    cm = exclusive(sys.argv[2]); cm.__enter__()\n"
    "else:\n"
    "    acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _holder(run_dir: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir), *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@pytest.fixture(autouse=True)
def _release_ours(tmp_path: Path):
    yield
    release(tmp_path)


def _foreign_record(run_dir: Path, started: float | None = None) -> dict:
    """What a trainer on another host (or this container before a restart) left behind."""
    data = {"pid": 4242, "create_time": 1.0, "hostname": "other-host-7", "argv": ["hrm-train", "tiny"]}
    if started is not None:
        data["started"] = started
    (run_dir / PIDFILE_NAME).write_text(json.dumps(data))
    return data


def test_write_and_read_own_pidfile(tmp_path: Path) -> None:
    info = write_pidfile(tmp_path)
    data = json.loads((tmp_path / PIDFILE_NAME).read_text())
    assert set(data) == {"pid", "create_time", "hostname", "argv", "started"}
    assert read_pidfile(tmp_path) == info and info.pid == os.getpid()
    assert trainer_alive(tmp_path)
    release(tmp_path)
    assert read_pidfile(tmp_path) is None and not trainer_alive(tmp_path)


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    proc = _sleeper()
    write_pidfile(tmp_path, pid=proc.pid)
    assert trainer_alive(tmp_path)
    _stop(proc)
    assert not trainer_alive(tmp_path)


def test_unreaped_zombie_is_stale(tmp_path: Path) -> None:
    proc = _sleeper()
    write_pidfile(tmp_path, pid=proc.pid)
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead but not reaped: a zombie
    assert not trainer_alive(tmp_path)
    proc.wait()


def test_live_pid_with_other_create_time_is_stale(tmp_path: Path) -> None:
    write_pidfile(tmp_path)
    data = json.loads((tmp_path / PIDFILE_NAME).read_text())
    data["create_time"] -= 1000.0  # the pid was reused by a later process (this one)
    (tmp_path / PIDFILE_NAME).write_text(json.dumps(data))
    assert not trainer_alive(tmp_path)


def test_garbage_pidfile_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / PIDFILE_NAME).write_bytes(b"\xff{not json")
    assert read_pidfile(tmp_path) is None and not trainer_alive(tmp_path)
    assert acquire(tmp_path).pid == os.getpid()  # nothing to respect: taken


def test_the_lock_is_held_for_the_holders_life_and_dropped_by_the_kernel(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        assert trainer_alive(tmp_path) and read_pidfile(tmp_path).pid == holder.pid
        before = (tmp_path / PIDFILE_NAME).read_bytes()
        with pytest.raises(TrainerAlreadyRunning, match=rf"pid {holder.pid} on host .*Stop it first"):
            acquire(tmp_path, take_over=True)  # a live trainer on this host is never taken over
        assert (tmp_path / PIDFILE_NAME).read_bytes() == before  # the refusal changed nothing
    finally:
        _stop(holder)  # SIGKILL: no release ran, the record stays, the kernel drops the lock
    assert read_pidfile(tmp_path).pid == holder.pid
    assert not trainer_alive(tmp_path)
    info = acquire(tmp_path)  # a dead process on this host: replaced without any flag
    assert info.pid == os.getpid() and trainer_alive(tmp_path)
    assert acquire(tmp_path) == info  # re-acquiring our own run dir is fine


def test_a_second_process_is_refused_while_we_hold_it_and_gets_it_after_release(tmp_path: Path) -> None:
    acquire(tmp_path)
    code = (
        "import sys; from hrm.run.lock import acquire, TrainerAlreadyRunning\n"
        "try:\n    acquire(sys.argv[1])\nexcept TrainerAlreadyRunning as e:\n    print(e); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "in use by a live trainer" in proc.stdout
    assert read_pidfile(tmp_path).pid == os.getpid()
    release(tmp_path)
    assert not (tmp_path / PIDFILE_NAME).exists() and not trainer_alive(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_a_record_from_another_host_is_refused_naming_host_pid_and_age_then_taken_over(tmp_path: Path) -> None:
    _foreign_record(tmp_path, started=time.time() - 3 * 3600 - 120)
    before = (tmp_path / PIDFILE_NAME).read_bytes()
    assert not trainer_alive(tmp_path)  # nothing holds the lock; the app shows the run as not running
    with pytest.raises(TrainerAlreadyRunning) as refused:
        acquire(tmp_path)
    text = str(refused.value)
    assert "pid 4242" in text and "other-host-7" in text and "3 h 2 min ago" in text and "--take-over" in text
    assert "ctl" not in text  # stopping it over this host's control socket cannot work
    assert (tmp_path / PIDFILE_NAME).read_bytes() == before
    info = acquire(tmp_path, take_over=True)
    assert info.pid == os.getpid() and info.hostname == socket.gethostname()
    assert read_pidfile(tmp_path) == info and trainer_alive(tmp_path)


def test_an_older_record_without_start_time_gives_the_file_age(tmp_path: Path) -> None:
    _foreign_record(tmp_path)
    old = time.time() - 600
    os.utime(tmp_path / PIDFILE_NAME, (old, old))
    with pytest.raises(TrainerAlreadyRunning, match=r"pid 4242 on host other-host-7, started 10 min ago"):
        acquire(tmp_path)


def test_a_lock_held_under_a_foreign_record_is_taken_over_only_when_asked(tmp_path: Path) -> None:
    holder = _holder(tmp_path)  # e.g. the run dir on a shared filesystem, locked from another host
    try:
        _foreign_record(tmp_path, started=time.time() - 30)
        assert trainer_alive(tmp_path)
        with pytest.raises(TrainerAlreadyRunning, match=r"pid 4242 on host other-host-7.*--take-over"):
            acquire(tmp_path)
        info = acquire(tmp_path, take_over=True)
        assert info.pid == os.getpid() and read_pidfile(tmp_path) == info
        # the new file is locked by us: a third process is refused
        code = "import sys; from hrm.run.lock import acquire\nacquire(sys.argv[1])"
        third = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert third.returncode != 0 and f"pid {os.getpid()}" in third.stderr
    finally:
        _stop(holder)


def test_trainer_alive_is_fast(tmp_path: Path) -> None:
    acquire(tmp_path)
    t0 = time.perf_counter()
    for _ in range(200):
        assert trainer_alive(tmp_path)
    assert (time.perf_counter() - t0) / 200 < 0.005  # the app calls it per run, per refresh


def test_dataset_build_lock_is_the_same_flock(tmp_path: Path) -> None:
    lock = tmp_path / ".dataset.lock"
    holder = _holder(tmp_path, str(lock))
    code = (
        "import sys, fcntl, os\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
    )
    try:
        assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 3
    finally:
        _stop(holder)
    with exclusive(lock):  # the kernel dropped the dead holder's lock
        assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 3
    assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 0


@pytest.mark.slow  # three real trainer processes
def test_hrm_train_refuses_a_foreign_lock_untouched_then_takes_it_over(tmp_path: Path) -> None:
    """A real trainer on a run dir whose lock names another host (a restarted container): refused with
    host, pid and age and nothing in the run dir changed; --take-over continues the run."""
    from support.train import TINY, run, statuses, train_cmd

    d = tmp_path / "run"
    assert run(train_cmd(*TINY, "train.total_steps=1", "--run-dir", str(d)), timeout=600).returncode == 0
    _foreign_record(d, started=time.time() - 7200)
    before = {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    refused = run(train_cmd("--run-dir", str(d), "--resume", "latest", "train.total_steps=2"), timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    said = [line for line in refused.stderr.splitlines() if line.startswith("hrm-train:")]
    assert len(said) == 1, refused.stderr
    assert all(s in said[0] for s in ("pid 4242", "other-host-7", "2 h 0 min ago", "--take-over")), said
    assert "ctl" not in said[0]
    assert {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} == before  # nothing written
    took = run(train_cmd("--run-dir", str(d), "--resume", "latest", "train.total_steps=2", "--take-over"), timeout=600)
    assert took.returncode == 0, took.stderr[-3000:]
    assert statuses(d)[-1]["state"] == "finished" and not (d / PIDFILE_NAME).exists()
