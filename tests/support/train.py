"""Helpers for the trainer tests: run `python -m hrm.train` (or torchrun) as real processes on the
tiny preset and read what they wrote; and the one way every test waits for a condition (`wait_for`,
`wait_ui` for the app's pilot), never a fixed sleep. No tests here; no torch imported here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
# Short, deterministic runs: one thread per process (bitwise-repeatable on CPU, and kind to the
# shared 2-core machine), 8 examples per step.
TINY = ["tiny", "train.eval_max_examples=8", "train.keep_last=5"]
# A tiny run that outlives any test (no eval or checkpoint of its own): for runs a test pauses, kills or stops.
LONG = [*TINY, "train.total_steps=100000", "train.eval_interval=100000", "train.checkpoint_interval=100000"]


def proc_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", HRM_DIST_TIMEOUT="30")
    env.update(extra)
    return env


def train_cmd(*args: str) -> list[str]:
    return [PY, "-m", "hrm.train", *args]


def nan_loss_cmd(from_step: int, *args: str) -> list[str]:
    """The trainer in a process whose loss is NaN from training step `from_step` on (the weights stay
    as they were: a fault in the loss alone). Evaluation calls are left alone."""
    code = (
        "import sys, torch\n"
        "from hrm.model.losses import ACTLossHead\n"
        "real, calls = ACTLossHead.forward, [0]\n"
        "def forward(self, *a, **k):\n"
        "    out = real(self, *a, **k)\n"
        "    if torch.is_grad_enabled():\n"
        "        calls[0] += 1\n"
        f"        if calls[0] >= {from_step}:\n"
        "            out = (out[0], out[1] * float('nan'), *out[2:])\n"
        "    return out\n"
        "ACTLossHead.forward = forward\n"
        "from hrm.train.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return [PY, "-c", code, *args]


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=timeout, **kw)


def start(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen(
        cmd, cwd=REPO, env=proc_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True, **kw
    )


def events(run_dir: Path) -> list[dict[str, Any]]:
    from hrm.run.events import read_events

    p = run_dir / "events.jsonl"
    return read_events(p) if p.is_file() else []


def effective(evs: list[dict[str, Any]], kind: str = "train") -> dict[int, dict[str, Any]]:
    """step -> event, applying the resume rule: a `run` event at step S supersedes the earlier
    events of this kind whose step > S."""
    out: dict[int, dict[str, Any]] = {}
    for e in evs:
        if e["kind"] == "run":
            out = {s: v for s, v in out.items() if s <= e["step"]}
        elif e["kind"] == kind:
            out[e["step"]] = e
    return out


def statuses(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events(run_dir) if e["kind"] == "status"]


def wait_for(pred: Callable[[], Any], timeout: float = 60.0, what: str = "condition", interval: float = 0.05) -> Any:
    """Poll `pred` until it is truthy and return its value. The timeout is generous on purpose: it costs
    nothing when things work (the wait returns at once) and the shared machine can be very loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)  # the poll interval, not a wait for something
    v = pred()  # one last look: a loaded machine may have descheduled us past the deadline
    if v:
        return v
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def wait_ui(pilot: Any, cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """`wait_for` for the app's pilot tests: the app's own event loop keeps running between polls (the
    pilot's pause is the poll interval). 30 s: a screen change once took over 5 s at load average 15."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        await pilot.pause(0.05)  # the poll interval, not a wait for something
    v = cond()
    if v:
        return v
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_state(run_dir: Path, state: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_for(
        lambda: next((e for e in reversed(statuses(run_dir)) if e["state"] == state), None),
        timeout,
        f"status {state} in {run_dir}",
    )


def last_train_step(run_dir: Path) -> int:
    tr = effective(events(run_dir))
    return max(tr) if tr else 0


def model_of(ckpt: Path) -> dict[str, Any]:
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


def latest_ckpt(run_dir: Path) -> Path:
    from hrm.train.checkpoint import latest_checkpoint

    p = latest_checkpoint(run_dir / "checkpoints")
    assert p is not None, f"no checkpoint in {run_dir}"
    return Path(p)


def flip_a_data_byte(ckpt: Path) -> None:
    """Flip one bit in the middle of the largest tensor's bytes of a checkpoint (a flip in the zip's
    alignment padding would change nothing that is read)."""
    import struct
    import zipfile

    with zipfile.ZipFile(ckpt) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(ckpt.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x01
    ckpt.write_bytes(bytes(raw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(p: subprocess.Popen) -> None:
    """End a test's own process (and its children) if it is still running."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(30)


def show(log: Path) -> str:
    return log.read_text()[-3000:] if log.is_file() else "(no log)"


def as_json(s: str) -> dict[str, Any]:
    return json.loads(s.strip().splitlines()[-1])


def train_here(*args: str) -> int:
    """hrm-train in this process (saves the ~5 s start of a trainer process); its exit code."""
    from hrm.train.cli import main

    return main(list(args))
