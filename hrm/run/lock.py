"""trainer.pid: who owns a run directory.

JSON {pid, create_time, hostname, argv}. A pid alone is not enough to tell a live trainer from a
stale file (pids are reused after a crash or reboot), so the process's start time as psutil reports
it must match too. Torch-free: the app uses `trainer_alive` to list runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from hrm.run.layout import PID_FILE as PIDFILE_NAME

# psutil's create_time is a float derived from boot time + ticks: allow for rounding in the JSON.
_CREATE_TIME_TOLERANCE_S = 0.05


class TrainerAlreadyRunning(RuntimeError):
    """Another live trainer owns this run directory."""


@dataclass
class PidInfo:
    pid: int
    create_time: float
    hostname: str
    argv: list[str] = field(default_factory=list)


def _process_info(pid: int) -> PidInfo:
    proc = psutil.Process(pid)
    argv = sys.argv if pid == os.getpid() else proc.cmdline()
    return PidInfo(pid=pid, create_time=proc.create_time(), hostname=socket.gethostname(), argv=list(argv))


def write_pidfile(run_dir: str | os.PathLike[str], pid: int | None = None) -> PidInfo:
    """Write trainer.pid for `pid` (default: this process) atomically (temp file + rename)."""
    info = _process_info(os.getpid() if pid is None else pid)
    path = Path(run_dir) / PIDFILE_NAME
    tmp = path.with_name(f".{PIDFILE_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(info)) + "\n")
    os.replace(tmp, path)
    return info


def read_pidfile(run_dir: str | os.PathLike[str]) -> PidInfo | None:
    """The recorded owner, or None when the file is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / PIDFILE_NAME).read_text())
        return PidInfo(
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            hostname=str(data.get("hostname", "")),
            argv=list(data.get("argv", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_live(info: PidInfo) -> bool:
    """The recorded process exists on this host and is the very process that wrote the file."""
    if info.hostname and info.hostname != socket.gethostname():
        # A run directory on a shared filesystem, trained elsewhere: we cannot check, so assume
        # alive rather than let a second trainer clobber it.
        return True
    try:
        proc = psutil.Process(info.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - info.create_time) <= _CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def trainer_alive(run_dir: str | os.PathLike[str]) -> bool:
    """True when a live trainer owns run_dir; a stale file (dead or reused pid) gives False."""
    info = read_pidfile(run_dir)
    return info is not None and is_live(info)


def acquire(run_dir: str | os.PathLike[str]) -> PidInfo:
    """Claim run_dir for this process, refusing if another live trainer holds it.
    A stale pidfile is replaced."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / f".{PIDFILE_NAME}.lock"
    # O_EXCL on a lock file makes check-then-write atomic against a second trainer starting at once.
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        _break_stale_lock(lock)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, str(os.getpid()).encode())
        current = read_pidfile(run_dir)
        if current is not None and current.pid != os.getpid() and is_live(current):
            raise TrainerAlreadyRunning(
                f"run directory {run_dir} is in use by a live trainer (pid {current.pid} on "
                f"{current.hostname}, started as: {' '.join(current.argv) or '?'}). "
                "Stop it first (hrm-train ctl RUN stop), attach to it, or pick another run directory."
            )
        return write_pidfile(run_dir)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _break_stale_lock(lock: Path) -> None:
    """Remove a lock left by a process that died inside `acquire` (else raise: someone is in it)."""
    try:
        owner = int(lock.read_text() or "0")
    except (OSError, ValueError):
        owner = 0
    try:
        fresh = time.time() - lock.stat().st_mtime < 5.0
    except FileNotFoundError:
        return
    # An empty lock younger than a few seconds belongs to a process between open() and write().
    if (owner and psutil.pid_exists(owner)) or (not owner and fresh):
        raise TrainerAlreadyRunning(f"another trainer is starting in {lock.parent} right now (pid {owner})")
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()


def release(run_dir: str | os.PathLike[str]) -> None:
    """Remove trainer.pid if it is ours (called when the trainer exits cleanly)."""
    info = read_pidfile(run_dir)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / PIDFILE_NAME).unlink()
