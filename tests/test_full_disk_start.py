"""A trainer whose run directory's filesystem is full (found by bench/faults.py): the start-up failure
names the file it could not write with the fix (it said "no space left on device; free space there" for
the lock file, and only a log line "start-up failed: [Errno 28] ..." for config.yaml), and a trainer.log
that cannot be written costs one line, not a logging traceback per line and a failed exit."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.train import TINY, run, statuses, train_cmd

from hrm.run.layout import CONFIG_FILE, LOG_FILE, PID_FILE

pytestmark = pytest.mark.slow  # every test runs hrm-train processes


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root: skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _message(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("hrm-train")]


@pytest.mark.parametrize(("left", "names"), [(0, PID_FILE), (8 << 10, CONFIG_FILE)])
def test_a_start_on_a_full_filesystem_names_the_file_and_the_fix(small_fs: Path, left: int, names: str) -> None:
    (small_fs / "filler").write_bytes(b"\0" * ((64 << 10) - left))
    d = small_fs / "run"
    p = run(train_cmd(*TINY, "train.total_steps=2", "--run-dir", str(d)))
    msg = _message(p.stderr)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert len(msg) == 1 and str(d / names) in msg[0], p.stderr
    assert "no space left on device" in msg[0] and "free space" in msg[0], msg
    assert not [f for f in d.iterdir() if f.name.startswith(".")]  # no temp file left behind
    assert not (d / PID_FILE).exists()  # nor an empty lock record (it was left at 0 bytes)


def test_a_trainer_log_that_cannot_be_written_costs_one_line(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / LOG_FILE).symlink_to("/dev/full")  # every write to it: ENOSPC
    p = run(train_cmd(*TINY, "train.total_steps=2", "--run-dir", str(d)))
    assert p.returncode == 0 and "Traceback" not in p.stderr and "Logging error" not in p.stderr, p.stderr[-2000:]
    msg = _message(p.stderr)
    assert len(msg) == 1 and str(d / LOG_FILE) in msg[0] and "No space left on device" in msg[0], msg
    assert statuses(d)[-1]["state"] == "finished"
    assert "finished at step 2" in p.stderr  # stderr still has the log
