"""The control channel: a Unix socket `control.sock` in the run directory (mode 0600).

Wire format: the client sends one JSON line `{"cmd": "pause"}` and reads one JSON line back,
`{"ok": true, "cmd": "pause", "step": N, "message": "..."}` or `{"ok": false, "error": "..."}`.
The trainer calls `ControlServer.poll()` between optimizer steps (it never blocks) and replies
once it has acted. The client (`send_command`) and the socket addressing are in
hrm.run.control_client. Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import socket
import stat
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm.run.control_client import _socket_address, send_command
from hrm.run.layout import COMMANDS
from hrm.run.layout import SOCKET_FILE as SOCKET_NAME

__all__ = ["ControlError", "ControlServer", "Request", "send_command"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 64 * 1024
_IDLE_S = 5.0  # a client that has not sent its whole line by then is dropped (ctl sends it at once)
_MAX_IDLE = 64  # connections without a full line kept open at once; the oldest goes first
_MAX_IN_FLIGHT = 256  # requests waiting for the step to end; more wait in the backlog
_ACCEPT_PER_POLL = 256  # bounds the time one poll can take
_BACKLOG = 1024  # queued connections cost the kernel, not our descriptors


class ControlError(RuntimeError):
    """The control socket cannot be set up (the trainer side)."""


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
    """Never blocks: a reply is small and the client's receive buffer empty, so it goes in one send;
    a client that stopped reading (or left) loses its reply rather than stall the trainer."""
    try:
        conn.setblocking(False)
        conn.send((json.dumps(message, default=str) + "\n").encode())
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


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except (OSError, AttributeError, struct.error):  # not Linux: the socket's mode 0600 is the guard
        return None
    return int(uid)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Client:
    conn: socket.socket
    since: float
    buf: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Listens on run_dir/control.sock; `poll()` returns the complete requests waiting now.

    Whatever arrives cannot stop the trainer: a bad line gets an error reply, an over-long one a closed
    connection. The process's descriptors are bounded: at most `_MAX_IDLE` connections without a full
    line (the oldest is dropped first, any is dropped after `_IDLE_S`) and `_MAX_IN_FLIGHT` requests
    awaiting their reply; connections beyond that wait in the kernel's backlog for a later poll."""

    def __init__(self, run_dir: str | os.PathLike[str], commands: tuple[str, ...] = COMMANDS) -> None:
        self.run_dir = Path(run_dir).absolute()  # close() must find the socket even after a chdir
        self.path = self.run_dir / SOCKET_NAME
        self.commands = commands
        self._clients: deque[_Client] = deque()
        self._unanswered: list[Request] = []
        self._uid = os.getuid()
        self._reserve: int | None = None
        self._warned_at = -math.inf
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind()
        except BaseException:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._reserve = _open_reserve()

    def _bind(self) -> None:
        # A socket left by a dead trainer blocks bind; the caller holds the run lock, so it is stale.
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
        self._sock.listen(_BACKLOG)

    def poll(self) -> list[Request]:
        """Accept waiting clients and return every complete, valid request. Malformed lines and
        unknown commands are answered with an error here and never returned. Never raises for
        anything a client does."""
        requests: list[Request] = []
        self._unanswered = [r for r in self._unanswered if not r.replied]
        now = time.monotonic()
        for _ in range(len(self._clients)):
            client = self._clients.popleft()
            if not self._serve(client, requests):
                if now - client.since > _IDLE_S:
                    _send_and_close(client.conn, {"ok": False, "error": "request not completed in time"})
                else:
                    self._clients.append(client)
        try:
            self._accept(requests, now)
        except Exception:  # a bug here must not end a training run: log it, serve the next poll
            log.exception("control socket: accepting clients failed")
        self._unanswered += requests
        return requests

    def _serve(self, client: _Client, requests: list[Request]) -> bool:
        """Read what the client sent; True once it is dealt with (a request, a reply or closed)."""
        try:
            done = self._read(client.conn, client.buf)
            if done is None:
                return False
            if done is False:
                client.conn.close()
                return True
            request = self._parse(client.conn, bytes(client.buf), len(self._unanswered) + len(requests))
            if request is not None:
                requests.append(request)
        except Exception:  # whatever a client sends ends with its connection, never with the trainer
            log.exception("control socket: dropping a client")
            client.conn.close()
        return True

    def _accept(self, requests: list[Request], now: float) -> None:
        for _ in range(_ACCEPT_PER_POLL):
            if len(self._unanswered) + len(requests) >= _MAX_IN_FLIGHT:
                return  # the rest wait in the backlog until replies free descriptors
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up while queued
                raise
            conn.setblocking(False)
            if self._uid != 0 and _peer_uid(conn) not in (None, self._uid):
                _send_and_close(conn, {"ok": False, "error": "permission denied: not the trainer's user"})
                continue
            client = _Client(conn, now)
            if not self._serve(client, requests):
                self._clients.append(client)
                if len(self._clients) > _MAX_IDLE:
                    oldest = self._clients.popleft()
                    _send_and_close(oldest.conn, {"ok": False, "error": "too many open control connections"})

    def _out_of_descriptors(self, exc: OSError) -> None:
        """EMFILE/ENFILE: free a descriptor held in reserve to take one queued client off the backlog
        and close it, drop the oldest half of the idle clients, warn (at most once a minute)."""
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("control socket: %s; dropping idle control connections", exc)
        for _ in range(len(self._clients) // 2 + 1):
            if self._clients:
                _send_and_close(self._clients.popleft().conn, {"ok": False, "error": "the trainer is out of files"})
        if self._reserve is not None:
            os.close(self._reserve)
            with contextlib.suppress(OSError):
                self._sock.accept()[0].close()
            self._reserve = _open_reserve()

    @staticmethod
    def _read(conn: socket.socket, buf: bytearray) -> bool | None:
        """True: a full line is in buf; None: not yet; False: the client hung up or sent too much."""
        while b"\n" not in buf:
            try:
                chunk = conn.recv(_MAX_REQUEST + 1 - len(buf))
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                return False
            if not chunk:  # the client shut its side: what it sent is the request, if anything
                return bool(buf.strip())
            buf.extend(chunk)
            if len(buf) > _MAX_REQUEST and b"\n" not in buf[:_MAX_REQUEST]:
                return False
        del buf[buf.index(b"\n") :]
        return True

    def _parse(self, conn: socket.socket, line: bytes, in_flight: int) -> Request | None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError, MemoryError):  # bad UTF-8, bad JSON, too deep, too big a number
            _send_and_close(
                conn, {"ok": False, "error": 'malformed request: expected one JSON line like {"cmd": "pause"}'}
            )
            return None
        cmd = message.get("cmd") if isinstance(message, dict) else None
        if not isinstance(cmd, str) or cmd not in self.commands:
            _send_and_close(
                conn,
                {"ok": False, "error": f"unknown command {_short(cmd)}; valid commands: {', '.join(self.commands)}"},
            )
            return None
        if in_flight >= _MAX_IN_FLIGHT:
            _send_and_close(conn, {"ok": False, "error": "too many requests waiting; try again"})
            return None
        args = {k: v for k, v in message.items() if k != "cmd"}
        return Request(cmd=cmd, args=args, _conn=conn)

    def close(self) -> None:
        """Answer what is left unanswered, close the socket and remove control.sock."""
        for request in self._unanswered:
            if not request.replied:
                request.error("the trainer exited before acting on this command")
        self._unanswered = []
        for client in self._clients:
            _send_and_close(client.conn, {"ok": False, "error": "the trainer is exiting"})
        self._clients.clear()
        self._sock.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
