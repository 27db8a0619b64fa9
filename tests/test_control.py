from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hrm.run.control import ControlServer, send_command


class _Trainer(threading.Thread):
    """Stands in for the trainer loop: polls between 'steps' and replies with the step."""

    def __init__(self, server: ControlServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.step = 0
        self.seen: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.step += 1
            for req in self.server.poll():
                self.seen.append(req.cmd)
                req.reply({"step": self.step, "message": f"did {req.cmd}", **req.args})
            self.stop_event.wait(0.002)  # the fake trainer's step time; returns at once when stopped


@pytest.fixture()
def long_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path
    while len(str(run_dir)) < 300:
        run_dir = run_dir / ("deep-directory-name-" * 4)
    run_dir.mkdir(parents=True)
    return run_dir


@pytest.mark.parametrize("deep", [False, True])
def test_round_trip_all_commands(tmp_path: Path, long_run_dir: Path, deep: bool) -> None:
    run_dir = long_run_dir if deep else tmp_path
    assert (len(str(run_dir)) >= 300) == deep
    server = ControlServer(run_dir)
    trainer = _Trainer(server)
    trainer.start()
    try:
        sock_path = run_dir / "control.sock"
        st = os.stat(sock_path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        for cmd in ("pause", "resume", "checkpoint", "eval", "stop"):
            reply = send_command(run_dir, cmd, timeout=10)
            assert reply["ok"] is True and reply["cmd"] == cmd
            assert reply["message"] == f"did {cmd}" and reply["step"] >= 1
        assert trainer.seen == ["pause", "resume", "checkpoint", "eval", "stop"]
        assert send_command(run_dir, "checkpoint", timeout=10, tag="x")["tag"] == "x"
    finally:
        trainer.stop_event.set()
        trainer.join()
        server.close()
    assert not (run_dir / "control.sock").exists()


def test_client_in_another_process_with_long_path(long_run_dir: Path) -> None:
    server = ControlServer(long_run_dir)
    trainer = _Trainer(server)
    trainer.start()
    try:
        code = (
            "import json, sys; from hrm.run.control import send_command; "
            "print(json.dumps(send_command(sys.argv[1], 'pause', timeout=20)))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(long_run_dir)], capture_output=True, text=True, timeout=60
        )
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
        assert reply["ok"] is True and reply["cmd"] == "pause"
    finally:
        trainer.stop_event.set()
        trainer.join()
        server.close()


def _raw_exchange(run_dir: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(run_dir / "control.sock"))
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_malformed_and_unknown_commands_get_errors_and_change_nothing(tmp_path: Path) -> None:
    with ControlServer(tmp_path) as server:
        trainer = _Trainer(server)
        trainer.start()
        try:
            bad = _raw_exchange(tmp_path, b"this is not json\n")
            assert bad["ok"] is False and "malformed" in bad["error"]
            unknown = _raw_exchange(tmp_path, b'{"cmd": "explode"}\n')
            assert unknown["ok"] is False and "explode" in unknown["error"] and "pause" in unknown["error"]
            no_cmd = _raw_exchange(tmp_path, b"[1, 2]\n")
            assert no_cmd["ok"] is False
            assert send_command(tmp_path, "reboot", timeout=5)["ok"] is False
            assert trainer.seen == []  # nothing reached the trainer
            assert send_command(tmp_path, "pause", timeout=5)["ok"] is True
            assert trainer.seen == ["pause"]
        finally:
            trainer.stop_event.set()
            trainer.join()


def test_poll_never_blocks_and_waits_for_a_full_line(tmp_path: Path) -> None:
    with ControlServer(tmp_path) as server:
        start = time.perf_counter()
        for _ in range(100):
            assert server.poll() == []
        assert time.perf_counter() - start < 0.5
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "control.sock"))
            s.sendall(b'{"cmd": "pa')  # half a request: stays pending, poll returns at once
            assert server.poll() == []
            s.sendall(b'use"}\n')
            deadline = time.monotonic() + 5
            requests = []
            while not requests and time.monotonic() < deadline:
                requests = server.poll()
            assert [r.cmd for r in requests] == ["pause"]
            requests[0].reply({"step": 7})
            assert json.loads(s.recv(4096)) == {"ok": True, "cmd": "pause", "step": 7}


def test_unanswered_request_gets_an_error_on_close(tmp_path: Path) -> None:
    server = ControlServer(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(tmp_path / "control.sock"))
        s.sendall(b'{"cmd": "eval"}\n')
        deadline = time.monotonic() + 5
        while not server.poll() and time.monotonic() < deadline:
            pass
        server.close()
        reply = json.loads(s.recv(4096))
    assert reply["ok"] is False and "exited" in reply["error"]


def test_client_reports_missing_or_dead_trainer(tmp_path: Path) -> None:
    reply = send_command(tmp_path, "pause", timeout=2)
    assert reply["ok"] is False and "does not exist" in reply["error"]
    # a stale socket file left by a killed trainer: connect is refused
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    reply = send_command(tmp_path, "pause", timeout=2)
    assert reply["ok"] is False and "no trainer is listening" in reply["error"]
    # a new server replaces the stale socket
    with ControlServer(tmp_path) as server:
        assert server.poll() == []


def test_client_times_out_when_trainer_does_not_reply(tmp_path: Path) -> None:
    with ControlServer(tmp_path):
        start = time.monotonic()
        reply = send_command(tmp_path, "pause", timeout=0.3)
        assert reply["ok"] is False and "no reply" in reply["error"]
        assert time.monotonic() - start < 3


def test_long_path_without_proc_uses_a_short_symlink(long_run_dir: Path, monkeypatch) -> None:
    import hrm.run.control as control

    real_isdir = os.path.isdir
    monkeypatch.setattr(
        control.os.path, "isdir", lambda p: False if str(p).startswith("/proc/self/fd/") else real_isdir(p)
    )
    with ControlServer(long_run_dir) as server:
        trainer = _Trainer(server)
        trainer.start()
        try:
            assert send_command(long_run_dir, "eval", timeout=10)["ok"] is True
        finally:
            trainer.stop_event.set()
            trainer.join()


def test_a_second_server_on_a_live_socket_is_refused(tmp_path: Path) -> None:
    from hrm.run.control import ControlError

    with ControlServer(tmp_path):
        with pytest.raises(ControlError, match="another process is listening"):
            ControlServer(tmp_path)
        assert (tmp_path / "control.sock").exists()


def test_request_without_newline_then_shutdown_is_accepted(tmp_path: Path) -> None:
    with ControlServer(tmp_path) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "control.sock"))
            s.sendall(b'{"cmd": "stop"}')
            s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 5
            requests = []
            while not requests and time.monotonic() < deadline:
                requests = server.poll()
            assert [r.cmd for r in requests] == ["stop"]
            requests[0].reply({"step": 3})
            assert json.loads(s.recv(4096))["ok"] is True
