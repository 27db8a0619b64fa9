"""Who owns a run directory: an `flock` on trainer.pid, held for the trainer's whole life.

The kernel drops an flock when its holder dies (SIGKILL, OOM, power loss on a network filesystem
once the lease ends), so a lock that can be taken is never a live trainer's: there is no staleness
guess. The file's content — JSON {pid, create_time, hostname, argv, started} — is only for people:
who holds it and since when. The dataset builder (hrm.run.recipes) takes the same kind of lock
through `exclusive`. Torch-free: the app uses `trainer_alive` to list runs.

A record written by another host cannot be checked from here (container hostnames change at every
start, and a shared filesystem may not carry locks between hosts), so `acquire` refuses it with a
message naming host, pid and age, and `take_over=True` (`hrm-train --take-over`) claims it anyway.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from hrm.run.errors import writing
from hrm.run.layout import PID_FILE as PIDFILE_NAME

log = logging.getLogger(__name__)

# psutil's create_time is a float derived from boot time + ticks: allow for rounding in the JSON.
_CREATE_TIME_TOLERANCE_S = 0.05
# `trainer_alive` takes a shared lock for an instant; a starting trainer retries this long before
# it concludes that somebody holds the lock for real.
_CONTENDED_S = 0.5

_held: dict[str, tuple[int, PidInfo]] = {}  # run dirs this process holds: resolved path -> (fd, info)


class TrainerAlreadyRunning(RuntimeError):
    """Another trainer owns this run directory (or might: the message says how to take it over)."""


@dataclass
class PidInfo:
    pid: int
    create_time: float
    hostname: str
    argv: list[str] = field(default_factory=list)
    started: float = 0.0  # wall-clock time the lock was taken (0: an older record without it)


def _process_info(pid: int) -> PidInfo:
    proc = psutil.Process(pid)
    argv = sys.argv if pid == os.getpid() else proc.cmdline()
    return PidInfo(
        pid=pid, create_time=proc.create_time(), hostname=socket.gethostname(), argv=list(argv), started=time.time()
    )


def _encode(info: PidInfo) -> bytes:
    return (json.dumps(asdict(info)) + "\n").encode()


def _decode(text: str) -> PidInfo | None:
    try:
        data = json.loads(text)
        return PidInfo(
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            hostname=str(data.get("hostname", "")),
            argv=[str(a) for a in data.get("argv", [])],
            started=float(data.get("started", 0.0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def write_pidfile(run_dir: str | os.PathLike[str], pid: int | None = None) -> PidInfo:
    """Record `pid` (default: this process) as the owner without locking: for tools and tests that
    stand in for a trainer. Temp file + rename, so a reader never sees half a record."""
    info = _process_info(os.getpid() if pid is None else pid)
    path = Path(run_dir) / PIDFILE_NAME
    tmp = path.with_name(f".{PIDFILE_NAME}.{os.getpid()}.tmp")
    tmp.write_bytes(_encode(info))
    os.replace(tmp, path)
    return info


def read_pidfile(run_dir: str | os.PathLike[str]) -> PidInfo | None:
    """The recorded owner, or None when the file is missing or unreadable."""
    try:
        return _decode((Path(run_dir) / PIDFILE_NAME).read_text())
    except (OSError, UnicodeDecodeError):
        return None


def is_live(info: PidInfo) -> bool:
    """The recorded process runs on this host and is the very process that wrote the record."""
    if info.hostname and info.hostname != socket.gethostname():
        return False  # not checkable from here; `acquire` refuses such a record unless told to take over
    try:
        proc = psutil.Process(info.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - info.create_time) <= _CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _locked_by_someone(path: Path) -> bool:
    """Someone holds an flock on path. Never blocks; a filesystem without locks answers False."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def trainer_alive(run_dir: str | os.PathLike[str]) -> bool:
    """True while a trainer holds run_dir: its lock is held, or (a record written without the lock,
    as tools and tests do) the recorded process lives on this host. Microseconds; never blocks."""
    path = Path(run_dir) / PIDFILE_NAME
    if _locked_by_someone(path):
        return True
    info = read_pidfile(run_dir)
    return info is not None and is_live(info)


def _age(info: PidInfo, path: Path) -> str:
    since = info.started
    if not since:
        with contextlib.suppress(OSError):
            since = path.stat().st_mtime
    if not since:
        return "at an unknown time"
    s = max(0, int(time.time() - since))
    text = f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h {s % 3600 // 60} min"
    return f"{text} ago"


def _refusal(run_dir: Path, info: PidInfo | None, path: Path, held: bool) -> TrainerAlreadyRunning:
    if info is None:
        return TrainerAlreadyRunning(
            f"run directory {run_dir} is locked by another process that has not recorded itself in {path} yet "
            "(a trainer starting right now?); try again in a moment, or start with --take-over if nothing runs there"
        )
    who = f"pid {info.pid} on host {info.hostname or '?'}, started {_age(info, path)}"
    if is_live(info):
        return TrainerAlreadyRunning(
            f"run directory {run_dir} is in use by a live trainer ({who}, as: {' '.join(info.argv) or '?'}). "
            f"Stop it first (hrm-train ctl {run_dir} stop), attach to it, or pick another run directory."
        )
    if info.hostname and info.hostname != socket.gethostname():
        why = f"host {info.hostname} is not this host ({socket.gethostname()}), so that trainer cannot be checked"
    else:
        why = "that process is gone but something still holds the lock" if held else "that process is gone"
    return TrainerAlreadyRunning(
        f"run directory {run_dir} is claimed by {who} in {path}; {why}. "
        "If no trainer runs on that directory, start again with --take-over."
    )


def _try_lock(fd: int, blocking: bool) -> bool:
    deadline = time.monotonic() + (0 if blocking else _CONTENDED_S)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)  # a reader's instant shared lock, or a real holder: look again shortly
        except OSError as exc:
            if exc.errno == errno.ENOLCK:  # a filesystem without locks: the record is all we have
                log.warning("%s: the filesystem does not support locks; relying on the pid record", exc)
                return True
            raise


def _open_locked(path: Path, blocking: bool) -> int | None:
    """An fd holding an exclusive flock on the file now at `path`, or None if someone else holds it.
    The file may be replaced while we wait (a take-over, a release that unlinked it): the lock is
    only ours if the fd still names the file at `path`, so check and retry."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd, blocking):
                os.close(fd)
                return None
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the with-block, waiting for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path, blocking=True)
    assert fd is not None
    try:
        yield
    finally:
        os.close(fd)  # closing drops the lock


def acquire(run_dir: str | os.PathLike[str], take_over: bool = False) -> PidInfo:
    """Lock run_dir for this process until `release` (or its death). Refuses a live trainer always;
    refuses a record that cannot be checked (another host, a lock held by a process that is gone)
    unless `take_over`. A record of a dead process on this host is simply replaced."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _held:
        return _held[key][1]
    path = run_dir / PIDFILE_NAME
    fd = _open_locked(path, blocking=False)
    if fd is None:
        previous = read_pidfile(run_dir)
        if not take_over or (previous is not None and is_live(previous)):
            raise _refusal(run_dir, previous, path, held=True)
        log.warning("taking over %s from %s", run_dir, _who(previous))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the old holder keeps a lock on a file nobody can open any more
        fd = _open_locked(path, blocking=False)
        if fd is None:
            raise TrainerAlreadyRunning(f"{path}: another process took the lock during the take-over; try again")
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            previous = _decode(f.read().decode(errors="replace"))
        if previous is not None and previous.pid != os.getpid():
            foreign = previous.hostname and previous.hostname != socket.gethostname()
            # A live process that recorded itself without the lock (an older trainer), or a host we cannot check.
            if is_live(previous) or (foreign and not take_over):
                raise _refusal(run_dir, previous, path, held=False)
            log.info("replacing the record of %s (%s)", _who(previous), "taken over" if foreign else "not running")
        info = _process_info(os.getpid())
        with writing(path):  # a full disk fails here first: the message names the file
            os.ftruncate(fd, 0)
            os.pwrite(fd, _encode(info), 0)
            os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == 0:  # ours, never written (a full disk): leave the directory as it was
                path.unlink()
        os.close(fd)
        raise
    _held[key] = (fd, info)
    return info


def _who(info: PidInfo | None) -> str:
    return "an unrecorded process" if info is None else f"pid {info.pid} on host {info.hostname or '?'}"


def release(run_dir: str | os.PathLike[str]) -> None:
    """Give run_dir up: remove trainer.pid if it is ours, then drop the lock (when the trainer exits)."""
    run_dir = Path(run_dir)
    path = run_dir / PIDFILE_NAME
    held = _held.pop(str(run_dir.resolve()), None)
    if held is not None:
        fd = held[0]
        # Unlink while still holding the lock: a waiter that opened this file sees it replaced and retries.
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                path.unlink()
        os.close(fd)
        return
    info = read_pidfile(run_dir)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
