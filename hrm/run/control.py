"""The control channel: a Unix socket `control.sock` in the run directory (mode 0600).

Wire format: the client sends one JSON line `{"cmd": "pause"}` and reads one JSON line back,
`{"ok": true, "cmd": "pause", "step": N, "message": "..."}` or `{"ok": false, "error": "..."}`.
The trainer calls `ControlServer.poll()` between optimizer steps (it never blocks) and replies
once it has acted. Torch-free: the app imports the client.

A Unix socket path holds at most 107 bytes, and run directories can be deep. Both sides therefore
reach the socket through `/proc/self/fd/<fd of the run dir>/control.sock` when the plain path is
too long (the kernel resolves that link to the directory), or through a short symlink in the temp
directory where /proc is not available.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm.run.layout import COMMANDS
from hrm.run.layout import SOCKET_FILE as SOCKET_NAME

log = logging.getLogger(__name__)

_MAX_SUN_PATH = 100  # 108 bytes in sockaddr_un minus the NUL, with a margin
_MAX_REQUEST = 64 * 1024
_STALE_CLIENT_S = 30.0  # a client that never finishes its line is dropped after this


class ControlError(RuntimeError):
    """The control socket cannot be set up (the trainer side)."""


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


@dataclass
class Request:
    """One command from a client. Reply exactly once with `reply()` (or `error()`)."""

    cmd: str
    args: dict[str, Any]
    _conn: socket.socket = field(repr=False)
    replied: bool = False

    def reply(self, payload: dict[str, Any] | None = None) -> None:
        message = {"ok": True, "cmd": self.cmd}
        message.update(payload or {})
        _send_and_close(self._conn, message)
        self.replied = True

    def error(self, text: str) -> None:
        self.reply({"ok": False, "error": text})


def _send_and_close(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(1.0)  # a client that stopped reading must not stall the trainer
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError as exc:
        log.debug("control client went away before its reply: %s", exc)
    finally:
        conn.close()


def _someone_listening(run_dir: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            with _socket_address(run_dir) as address:
                probe.connect(address)
        except OSError:
            return False
    return True


class ControlServer:
    """Listens on run_dir/control.sock; `poll()` returns the complete requests waiting now."""

    def __init__(self, run_dir: str | os.PathLike[str], commands: tuple[str, ...] = COMMANDS) -> None:
        self.run_dir = Path(run_dir).absolute()  # close() must find the socket even after a chdir
        self.path = self.run_dir / SOCKET_NAME
        self.commands = commands
        self._clients: list[tuple[socket.socket, bytearray, float]] = []
        self._unanswered: list[Request] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind()
        except BaseException:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def _bind(self) -> None:
        # A socket left by a dead trainer blocks bind; the caller holds the pidfile, so it is stale.
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                if _someone_listening(self.run_dir):
                    raise ControlError(
                        f"another process is listening on {self.path}: is a second "
                        "trainer running on this run directory?"
                    )
                os.unlink(self.path)
        with _socket_address(self.run_dir) as address:
            try:
                self._sock.bind(address)
            except OSError as exc:
                raise ControlError(f"cannot create the control socket {self.path}: {exc}") from exc
        # chmod before listen(): until then nobody can connect, so the socket is never open to others.
        os.chmod(self.path, 0o600)
        self._sock.listen(16)

    def poll(self) -> list[Request]:
        """Accept waiting clients and return every complete, valid request. Malformed lines and
        unknown commands are answered with an error here and never returned."""
        self._accept()
        requests: list[Request] = []
        still_open: list[tuple[socket.socket, bytearray, float]] = []
        now = time.monotonic()
        for conn, buf, since in self._clients:
            done = self._read(conn, buf)
            if done is None:
                if now - since > _STALE_CLIENT_S:
                    _send_and_close(conn, {"ok": False, "error": "request not completed in time"})
                else:
                    still_open.append((conn, buf, since))
                continue
            if done is False:
                conn.close()
                continue
            request = self._parse(conn, bytes(buf))
            if request is not None:
                requests.append(request)
        self._clients = still_open
        self._unanswered = [r for r in self._unanswered if not r.replied] + requests
        return requests

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._clients.append((conn, bytearray(), time.monotonic()))

    @staticmethod
    def _read(conn: socket.socket, buf: bytearray) -> bool | None:
        """True: a full line is in buf; None: not yet; False: the client hung up or sent too much."""
        while b"\n" not in buf:
            try:
                chunk = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                return False
            if not chunk:  # the client shut its side: what it sent is the request, if anything
                return bool(buf.strip())
            if len(buf) + len(chunk) > _MAX_REQUEST:
                return False
            buf.extend(chunk)
        del buf[buf.index(b"\n") :]
        return True

    def _parse(self, conn: socket.socket, line: bytes) -> Request | None:
        try:
            message = json.loads(line)
        except ValueError:
            _send_and_close(
                conn, {"ok": False, "error": "malformed request: expected one JSON line like {\"cmd\": \"pause\"}"}
            )
            return None
        cmd = message.get("cmd") if isinstance(message, dict) else None
        if cmd not in self.commands:
            _send_and_close(
                conn, {"ok": False, "error": f"unknown command {cmd!r}; valid commands: {', '.join(self.commands)}"}
            )
            return None
        args = {k: v for k, v in message.items() if k != "cmd"}
        return Request(cmd=cmd, args=args, _conn=conn)

    def close(self) -> None:
        """Answer what is left unanswered, close the socket and remove control.sock."""
        for request in self._unanswered:
            if not request.replied:
                request.error("the trainer exited before acting on this command")
        self._unanswered = []
        for conn, _, _ in self._clients:
            _send_and_close(conn, {"ok": False, "error": "the trainer is exiting"})
        self._clients = []
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_command(run_dir: str | os.PathLike[str], cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one command to the trainer of run_dir and wait for its reply. Never raises for a
    missing or unresponsive trainer: returns {"ok": false, "error": "..."} naming the problem."""
    run_dir = Path(run_dir)
    sock_path = run_dir / SOCKET_NAME
    if not sock_path.exists():
        return {
            "ok": False,
            "error": f"no trainer is listening: {sock_path} does not exist "
            "(the run is not running, or it is starting up)",
        }
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _socket_address(run_dir) as address:
                sock.connect(address)
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
