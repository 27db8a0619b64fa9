"""Socket abuse against a real trainer process: garbage, deep nesting, over-long lines, 1,100 idle
connections under a 1,024 open-file limit and 200 simultaneous requests. Every client gets an error
reply or a closed connection, the run keeps stepping, and it stops cleanly afterwards."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import pytest
from test_control import ABUSE, _exchange_or_closed, _idle_connections
from test_train_helpers import TINY, kill_group, last_train_step, show, start, statuses, train_cmd, wait_for, wait_state

from hrm.run.control import send_command

pytestmark = pytest.mark.slow  # a real trainer under socket abuse

LONG = [*TINY, "train.total_steps=100000", "train.eval_interval=100000", "train.checkpoint_interval=100000"]


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_the_trainer_keeps_stepping_under_socket_abuse(tmp_path: Path) -> None:
    import time

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
