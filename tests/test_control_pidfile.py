from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrm.run.lock import (
    PIDFILE_NAME,
    TrainerAlreadyRunning,
    acquire,
    read_pidfile,
    release,
    trainer_alive,
    write_pidfile,
)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_write_and_read_own_pidfile(tmp_path: Path) -> None:
    info = write_pidfile(tmp_path)
    data = json.loads((tmp_path / PIDFILE_NAME).read_text())
    assert set(data) == {"pid", "create_time", "hostname", "argv"}
    assert read_pidfile(tmp_path) == info and info.pid == os.getpid()
    assert trainer_alive(tmp_path)
    release(tmp_path)
    assert read_pidfile(tmp_path) is None and not trainer_alive(tmp_path)


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    proc = _sleeper()
    write_pidfile(tmp_path, pid=proc.pid)
    assert trainer_alive(tmp_path)
    proc.kill()
    proc.wait()
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
    (tmp_path / PIDFILE_NAME).write_text("{not json")
    assert read_pidfile(tmp_path) is None and not trainer_alive(tmp_path)


def test_acquire_refuses_a_second_live_trainer(tmp_path: Path) -> None:
    other = _sleeper()
    try:
        write_pidfile(tmp_path, pid=other.pid)
        with pytest.raises(TrainerAlreadyRunning, match=rf"pid {other.pid}.*Stop it first"):
            acquire(tmp_path)
        assert read_pidfile(tmp_path).pid == other.pid  # untouched
    finally:
        other.kill()
        other.wait()
    info = acquire(tmp_path)  # the owner died: the stale file is replaced
    assert info.pid == os.getpid() and trainer_alive(tmp_path)
    assert acquire(tmp_path).pid == os.getpid()  # re-acquiring our own run dir is fine
    assert not list(tmp_path.glob(".*lock"))


def test_acquire_in_subprocess_refused_while_we_hold_it(tmp_path: Path) -> None:
    acquire(tmp_path)
    code = (
        "import sys; from hrm.run.lock import acquire, TrainerAlreadyRunning\n"
        "try:\n    acquire(sys.argv[1])\nexcept TrainerAlreadyRunning as e:\n    print(e); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "in use by a live trainer" in proc.stdout
    assert read_pidfile(tmp_path).pid == os.getpid()
