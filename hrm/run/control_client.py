"""The client side of the control channel (`send_command`), and how both sides reach the socket.

A Unix socket path holds at most 107 bytes, and run directories can be deep. Both sides therefore
reach the socket through `/proc/self/fd/<fd of the run dir>/control.sock` when the plain path is
too long (the kernel resolves that link to the directory), or through a short symlink in the temp
directory where /proc is not available. Torch-free: the app imports this.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hrm.run.layout import SOCKET_FILE as SOCKET_NAME

_MAX_SUN_PATH = 100  # 108 bytes in sockaddr_un minus the NUL, with a margin
_CONNECT_RETRY_S = 0.02  # a full backlog (the trainer is between polls): try again until the deadline


@contextlib.contextmanager
def _socket_address(run_dir: Path) -> Iterator[str]:
    """Yield an AF_UNIX address for run_dir/control.sock that fits in sun_path."""
    direct = str(run_dir / SOCKET_NAME)
    if len(os.fsencode(direct)) <= _MAX_SUN_PATH:
        yield direct
        return
    dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        via_proc = f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}"
        if os.path.isdir(f"/proc/self/fd/{dir_fd}"):
            yield via_proc
            return
    finally:
        os.close(dir_fd)
    # No /proc (e.g. some containers or non-Linux): a short symlink to the run directory.
    link_parent = tempfile.mkdtemp(prefix="hrm-")
    try:
        link = os.path.join(link_parent, "r")
        os.symlink(os.path.abspath(run_dir), link)
        yield os.path.join(link, SOCKET_NAME)
    finally:
        shutil.rmtree(link_parent, ignore_errors=True)


def _connect(sock: socket.socket, run_dir: Path, deadline: float) -> None:
    """connect(), retried while the trainer's backlog is full (EAGAIN) until the deadline."""
    while True:
        try:
            with _socket_address(run_dir) as address:
                sock.connect(address)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError("the trainer's control backlog stayed full") from None
            time.sleep(_CONNECT_RETRY_S)


def send_command(run_dir: str | os.PathLike[str], cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one command to the trainer of run_dir and wait for its reply. Never raises for a
    missing or unresponsive trainer: returns {"ok": false, "error": "..."} naming the problem."""
    run_dir = Path(run_dir)
    sock_path = run_dir / SOCKET_NAME
    try:
        mode = sock_path.lstat().st_mode
    except OSError as exc:
        why = "the run is not running, or it is starting up" if isinstance(exc, FileNotFoundError) else exc.strerror
        return {"ok": False, "error": f"no trainer is listening: {sock_path} does not exist ({why})"}
    if not stat.S_ISSOCK(mode):
        return {
            "ok": False,
            "error": f"{sock_path} is not a socket (a leftover file, not a trainer's): no trainer is listening",
        }
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, run_dir, deadline)
            sock.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            buf = bytearray()
            while b"\n" not in buf:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf.extend(chunk)
        except TimeoutError:
            return {
                "ok": False,
                "error": f"no reply to {cmd!r} within {timeout:g} s "
                "(the trainer may be busy in a long step or evaluation)",
            }
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return {
                    "ok": False,
                    "error": f"no trainer is listening on {sock_path} (stale socket of a run that exited)",
                }
            return {"ok": False, "error": f"control socket {sock_path}: {exc}"}
    line = bytes(buf).split(b"\n", 1)[0]
    try:
        reply = json.loads(line)
    except ValueError:
        return {"ok": False, "error": "the trainer closed the connection without a valid reply"}
    return reply if isinstance(reply, dict) else {"ok": False, "error": f"unexpected reply {reply!r}"}
