"""End to end in a real terminal (tmux): open the app, launch `tiny`, see the step advance, pause
(the step stops), checkpoint (a file appears), quit (the trainer lives on), kill the terminal while
a run is live (the trainer lives on), start the app again (it re-attaches with the full history),
stop the run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrm.run.config import list_presets
from hrm_tui import runs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]
REPO = Path(__file__).resolve().parents[1]
SOCKET = f"hrm-e2e-{os.getpid()}"
SESSION = "app"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def session_alive() -> bool:
    return subprocess.run(["tmux", "-L", SOCKET, "has-session", "-t", SESSION], capture_output=True).returncode == 0


def start_app(root: Path, *args: str) -> None:
    cmd = f"exec {sys.executable} -m hrm_tui --runs-root {root} {' '.join(args)}"
    # 80×24, the smallest size the app supports: plots stacked, side panels as tabs.
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", "-c", str(REPO), cmd)


def keys(*ks: str) -> None:
    for k in ks:
        tmux("send-keys", "-t", SESSION, k)
        time.sleep(0.15)


def type_text(text: str) -> None:
    tmux("send-keys", "-t", SESSION, "-l", text)
    time.sleep(0.2)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; screen:\n{screen()}")


def header_step() -> int | None:
    m = re.search(r"step ([\d,]+)", screen().splitlines()[0] if screen() else "")
    return int(m.group(1).replace(",", "")) if m else None


def test_tmux_launch_pause_checkpoint_quit_kill_reattach_stop(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = root / "e2e"
    try:
        start_app(root)
        wait_for(lambda: "New run" in screen() and "tiny" in screen(), 60, "the preset picker")
        # Choose `tiny` (presets are listed by name), name the run, make it outlive the test.
        index = [p.stem for p in list_presets()].index("tiny")
        keys(*["Down"] * index)
        keys("o")  # edit overrides: focus the run name
        type_text("e2e")
        keys("Tab")
        type_text("100000")
        keys("Enter")
        wait_for(lambda: "e2e" in screen() and "running" in screen(), 180, "the run to start")
        wait_for(lambda: (header_step() or 0) >= 2, 120, "the step to advance")

        keys("p")
        wait_for(lambda: "paused" in screen().splitlines()[0], 60, "paused")
        time.sleep(1.0)
        paused_at = header_step()
        time.sleep(3.0)
        assert header_step() == paused_at, "the step moved while paused"

        keys("c")
        wait_for(lambda: any((run / "checkpoints").glob("step-*.pt")), 60, "a checkpoint file")

        keys("q")  # quit: the app exits, the trainer lives on
        wait_for(lambda: not session_alive(), 20, "the app to exit")
        assert runs.trainer_alive(run)

        start_app(root, "attach", str(run))
        wait_for(lambda: "paused" in screen(), 60, "the app to re-attach")
        tmux("kill-session", "-t", SESSION)  # the terminal goes away under a live run
        time.sleep(1.0)
        assert runs.trainer_alive(run)

        start_app(root)  # runs exist: the runs list; enter attaches
        wait_for(lambda: "Runs" in screen() and "e2e" in screen(), 60, "the runs list")
        keys("Enter")
        # The whole history again: the plots start at step 1 and end where the run paused.
        full = re.compile(rf"step 1 +{paused_at:,}▲")  # the x axis: first step … the current one, marked
        wait_for(lambda: header_step() == paused_at and full.search(screen()) is not None, 60, "the full history")

        keys("p")
        wait_for(lambda: "running" in screen().splitlines()[0], 60, "running again")
        keys("s")
        wait_for(lambda: "Stop" in screen() and "(y)" in screen(), 20, "the confirm dialog")
        keys("y")
        wait_for(lambda: not runs.trainer_alive(run), 120, "the trainer to stop")
        wait_for(lambda: re.search(r"finished|stopped", screen().splitlines()[0]) is not None, 20, "a final status")
        keys("q")
        wait_for(lambda: not session_alive(), 20, "the app to exit")
    finally:
        tmux("kill-server")
        if run.exists() and runs.trainer_alive(run):
            from hrm.run.control import send_command

            send_command(run, "stop", timeout=60)
