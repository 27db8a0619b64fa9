"""Abuse of the control socket: any bytes, nesting or length, 200 simultaneous requests, a thousand idle
connections under a low open-file limit, another user. Against a real ControlServer with a stand-in
trainer loop, and against a real trainer process: every client gets an error reply or a closed
connection, and the run keeps stepping and stops cleanly afterwards."""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.train import (
    LONG,
    kill_group,
    last_train_step,
    show,
    start,
    statuses,
    train_cmd,
    wait_for,
    wait_state,
)
from test_control import _Trainer

from hrm.run.control import ControlServer, send_command

# --- abuse: nothing a client sends or does may stop the trainer ----------------------------------


def _exchange_or_closed(path: Path, payload: bytes, shut: bool = False) -> dict | None:
    """Send payload; the server's one-line reply, or None when it closed the connection without one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        try:
            s.sendall(payload)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return None  # closed while we were still sending: an over-long request
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            return None
    return json.loads(data) if data else None


ABUSE = {
    "deep-nesting": b"[" * 60_000 + b"\n",
    "deep-nesting-no-newline": b"[" * 60_000,
    "deep-object": b'{"a":' * 30_000 + b"\n",
    "over-long": b"a" * 200_000,
    "over-long-line": b'{"cmd": "pause", "x": "' + b"y" * 100_000 + b'"}\n',
    "bad-utf8": b"\xff\xfe\xfd\n",
    "nul-bytes": b"\x00" * 100 + b"\n",
    "huge-int": b'{"cmd": ' + b"9" * 10_000 + b"}\n",
    "huge-float": b'{"cmd": 1e999999}\n',
    "cmd-list": b'{"cmd": ["pause"]}\n',
    "cmd-object": b'{"cmd": {"pause": 1}}\n',
    "bare-string": b'"pause"\n',
    "empty-line": b"\n",
    "null": b"null\n",
}


@pytest.mark.parametrize("name", list(ABUSE))
def test_any_bytes_get_an_error_reply_or_a_closed_connection(tmp_path: Path, name: str) -> None:
    with ControlServer(tmp_path) as server:
        trainer = _Trainer(server)
        trainer.start()
        try:
            reply = _exchange_or_closed(tmp_path / "control.sock", ABUSE[name], shut=not ABUSE[name].endswith(b"\n"))
            assert reply is None or reply["ok"] is False
            assert trainer.is_alive(), "the poll loop died"
            step = trainer.step
            assert send_command(tmp_path, "pause", timeout=10)["ok"] is True
            assert trainer.seen == ["pause"]
            deadline = time.monotonic() + 10
            while trainer.step <= step + 1 and time.monotonic() < deadline:
                trainer.stop_event.wait(0.01)
            assert trainer.step > step + 1 and trainer.is_alive()  # the loop goes on
        finally:
            trainer.stop_event.set()
            trainer.join()


def test_two_hundred_simultaneous_requests_are_all_answered(tmp_path: Path) -> None:
    with ControlServer(tmp_path) as server:
        trainer = _Trainer(server)
        trainer.start()
        replies: list[dict] = []
        barrier = threading.Barrier(200)

        def client(i: int) -> None:
            barrier.wait()
            replies.append(send_command(tmp_path, "checkpoint", timeout=60, n=i))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        finally:
            trainer.stop_event.set()
            trainer.join()
        assert len(replies) == 200
        assert [r for r in replies if not r.get("ok")] == []
        assert sorted(r["n"] for r in replies) == list(range(200))


# A ControlServer with a poll loop in a process whose open-file limit is 128; prints "ready", then
# polls until stdin closes and prints how many requests it answered.
_LOW_LIMIT_SERVER = """
import resource, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
from hrm.run.control import ControlServer
server = ControlServer(sys.argv[1])
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
answered = 0
while not done.is_set():
    for req in server.poll():
        req.reply({"step": 1})
        answered += 1
    done.wait(0.002)  # poll interval; returns at once when stdin closes
server.close()
print("answered", answered, flush=True)
"""


def _idle_connections(path: Path, n: int, deadline: float) -> list[socket.socket]:
    """Open up to n connections that never send anything (fewer if the server's backlog stays full)."""
    conns: list[socket.socket] = []
    while len(conns) < n and time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:  # backlog full right now
            s.close()
            continue
        conns.append(s)
    return conns


def test_a_thousand_idle_connections_under_a_low_file_limit(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOW_LIMIT_SERVER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    conns: list[socket.socket] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        conns = _idle_connections(tmp_path / "control.sock", 1100, time.monotonic() + 60)
        assert len(conns) >= 1000
        for _ in range(5):  # while the idle ones are still open, real commands get through
            assert send_command(tmp_path, "pause", timeout=30)["ok"] is True
        assert proc.poll() is None
    finally:
        for c in conns:
            c.close()
        out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "answered 5" in out and "Traceback" not in err


def test_socket_mode_0600_and_other_users_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    os.chmod(tmp_path, 0o755)
    with ControlServer(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / "control.sock").st_mode) == 0o600
        code = (
            "import os, socket, sys\nos.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "control.sock")], timeout=60)
        assert other.returncode == 3


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.slow  # a real trainer under socket abuse
def test_the_trainer_keeps_stepping_under_socket_abuse(tmp_path: Path) -> None:
    d, log = tmp_path / "run", tmp_path / "log"
    p = start(train_cmd(*LONG, "--run-dir", str(d)), log, preexec_fn=_limit_files)
    conns = []
    try:
        wait_state(d, "running", 120)
        sock = d / "control.sock"
        wait_for(lambda: last_train_step(d) >= 2, 60, "two steps")
        for name, payload in ABUSE.items():
            reply = _exchange_or_closed(sock, payload, shut=not payload.endswith(b"\n"))
            assert reply is None or reply["ok"] is False, (name, reply)
        step = last_train_step(d)
        wait_for(lambda: last_train_step(d) > step, 60, "steps after the garbage")

        conns = _idle_connections(sock, 1100, time.monotonic() + 60)
        assert len(conns) >= 1000
        replies: list[dict] = []
        barrier = threading.Barrier(200)

        def client() -> None:
            barrier.wait()
            replies.append(send_command(d, "status", timeout=60))

        threads = [threading.Thread(target=client) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(replies) == 200 and [r for r in replies if not r.get("ok")] == []
        assert all(r["state"] == "running" for r in replies)
        step = last_train_step(d)
        wait_for(lambda: last_train_step(d) > step + 2, 60, "steps with 1,100 idle connections open")
        assert p.poll() is None, show(log)
        for c in conns:
            c.close()
        conns = []
        r = send_command(d, "stop", timeout=60)
        assert r["ok"], r
        assert p.wait(60) == 0, show(log)
    finally:
        for c in conns:
            c.close()
        kill_group(p)
    last = statuses(d)[-1]
    assert last["state"] == "stopped" and "stop command" in last["reason"], last
    assert "Traceback" not in log.read_text()
