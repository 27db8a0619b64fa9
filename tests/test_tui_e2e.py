"""End to end in a real terminal (tmux, 80×24) on a real trainer (`tiny`): launch from the picker, see
the step advance, pause (the runs list says `paused` at the step the trainer stopped at, and the
trainer writes no step meanwhile), checkpoint (a file appears), quit (the trainer lives on), start the
app again (it re-attaches by itself, with the full history), close the terminal under a live run
(the trainer lives on), stop (the list says `stopped`), resume from the checkpoint, kill the trainer
with SIGKILL (the list says `died`); at 80×24 the side-panel keys 1-5 and the ACT segment stepper.
Every wait is on a condition, with a timeout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hrm.run import layout
from hrm.run.config import list_presets
from hrm.run.events import read_events
from hrm.run.lock import read_pidfile
from hrm_tui import runs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]
REPO = Path(__file__).resolve().parents[1]
SOCKET = f"hrm-e2e-{os.getpid()}"
SESSION = "app"
START_S = 180  # torch import + dataset build + first step, on a busy 2-core machine
STEP_S = 60  # one command: the trainer acts between steps


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def session_alive() -> bool:
    return subprocess.run(["tmux", "-L", SOCKET, "has-session", "-t", SESSION], capture_output=True).returncode == 0


def start_app(root: Path, cache: Path, *args: str) -> None:
    # Its own cache dir: the run the app remembers (to re-attach on the next start) stays in the test.
    cmd = f"XDG_CACHE_HOME={cache} exec {sys.executable} -m hrm_tui --runs-root {root} {' '.join(args)}"
    # 80×24, the smallest size the app supports: plots stacked, side panels as tabs.
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", "-c", str(REPO), cmd)


def keys(*ks: str) -> None:
    tmux("send-keys", "-t", SESSION, *ks)


def type_text(text: str) -> None:
    tmux("send-keys", "-t", SESSION, "-l", text)


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)  # polling interval, not a wait for something
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; screen:\n{screen()}")


def focused_field() -> int | None:
    """Which of the picker's run name / steps / gpus fields has the focus (0, 1, 2), read from the
    colour of each field's left border on screen; None when none has it."""
    styled = tmux("capture-pane", "-p", "-e", "-t", SESSION).splitlines()
    line = next((ln for ln in styled if "run name" in re.sub(r"\x1b\[[0-9;:]*m", "", ln)), "")
    borders = re.findall(r"\x1b\[7m(\x1b\[[0-9;:]*m)▊", line)
    odd = [i for i, b in enumerate(borders) if borders.count(b) == 1]
    return odd[0] if len(borders) == 3 and len(odd) == 1 else None


def focus_then_type(key: str, field: int, text: str) -> None:
    keys(key)
    wait_for(lambda: focused_field() == field, 30, f"field {field} to take the focus on {key}")
    type_text(text)
    wait_for(lambda: text in screen(), 30, f"{text!r} in its field")


def side_panel() -> str:
    """The right-hand panel of the 80×24 dashboard (everything right of the plots)."""
    return "\n".join(line[38:] for line in screen().splitlines()[1:-1])


def header() -> str:
    lines = screen().splitlines()
    return lines[0] if lines else ""


def header_step() -> int | None:
    m = re.search(r"step ([\d,]+)", header())
    return int(m.group(1).replace(",", "")) if m else None


def row(name: str) -> tuple[str, int] | None:
    """(status, step) of a run's row in the runs list on screen."""
    for line in screen().splitlines():
        m = re.search(rf"[●○✗]\s+{re.escape(name)}\s+([a-z ]+?)\s+([\d,]+)( / [\d,]+)?\s", line)
        if m:
            return m.group(1), int(m.group(2).replace(",", ""))
    return None


def last_train_step(run: Path) -> int:
    return max((e["step"] for e in read_events(layout.events_path(run)) if e.get("kind") == "train"), default=0)


def on_runs_list() -> bool:
    return "Runs under" in screen()


def test_tmux_pause_stop_resume_kill_states_and_reattach(tmp_path: Path) -> None:
    root, cache = tmp_path / "runs", tmp_path / "cache"
    run = root / "e2e"
    try:
        start_app(root, cache)
        wait_for(lambda: "New run" in screen() and "tiny" in screen(), 60, "the preset picker")
        # Choose `tiny` (presets are listed by name), name the run, make it outlive the test.
        index = [p.stem for p in list_presets()].index("tiny")
        keys(*["Down"] * index)
        wait_for(lambda: "tiny: " in screen(), 30, "tiny highlighted")
        # Keys reach the widget focused when they arrive: move the focus, wait until the field shows
        # it (its border colour), then type.
        focus_then_type("o", 0, "e2e")  # o: edit overrides, from the run name
        focus_then_type("Tab", 1, "100000")  # the steps field
        keys("Enter")
        wait_for(lambda: run.is_dir() and "running" in header(), START_S, "the run to start")
        wait_for(lambda: (header_step() or 0) >= 2, STEP_S, "the step to advance")

        keys("p")
        wait_for(lambda: "paused" in header(), STEP_S, "paused")
        paused_at = last_train_step(run)
        keys("c")  # checkpoint while paused: the trainer acts, and still takes no step
        wait_for(lambda: any(layout.checkpoints_dir(run).glob("step-*.pt")), STEP_S, "a checkpoint file")
        assert last_train_step(run) == paused_at, "the trainer stepped while paused"
        wait_for(lambda: header_step() == paused_at, 30, "the header at the paused step")

        # 80×24: one key per side panel, each showing its own content for this run.
        keys("1")
        wait_for(lambda: re.search(rf"step +{paused_at:,} / 100,000", screen()), 30, "panel 1: the values")
        keys("2")
        wait_for(lambda: "mean steps" in screen() or "ACT off" in screen(), 30, "panel 2: ACT")
        keys("3")
        wait_for(lambda: "host CPU" in screen(), 30, "panel 3: the machine")
        keys("5")
        wait_for(lambda: f"checkpoint step {paused_at}" in screen(), 30, "panel 5: the log of the checkpoint")
        keys("e", "4")  # an eval while paused, then the sample panel: its segments step by key
        wait_for(lambda: f"· step {paused_at}" in screen() and "Eval sample 1/" in screen(), STEP_S, "the sample")
        last_segment = side_panel()
        keys("[")
        wait_for(lambda: side_panel() != last_segment, 30, "the previous segment")
        keys("]")
        wait_for(lambda: side_panel() == last_segment, 30, "back to the last segment")

        keys("r")  # the runs list: the row says what the trainer did
        wait_for(lambda: row("e2e") == ("paused", paused_at), 30, f"the row `paused {paused_at}`")

        keys("q")  # quit: the app exits, the trainer lives on
        wait_for(lambda: not session_alive(), 30, "the app to exit")
        assert runs.trainer_alive(run)

        start_app(root, cache)  # no run named: it re-attaches to the live run it showed last
        wait_for(lambda: "paused" in header(), 60, "the app to re-attach by itself")
        # The whole history again: the plots start at step 1 and end where the run paused.
        full = re.compile(rf"step 1 +{paused_at:,}▲")  # the x axis: first step … the current one, marked
        wait_for(lambda: full.search(screen()) is not None, 60, "the full history")
        tmux("kill-session", "-t", SESSION)  # the terminal goes away under a live run
        wait_for(lambda: not session_alive(), 30, "the terminal to close")
        assert runs.trainer_alive(run)

        start_app(root, cache, "attach", str(run))
        wait_for(lambda: "paused" in header(), 60, "attached")
        keys("p")
        wait_for(lambda: "running" in header(), STEP_S, "running again")
        wait_for(lambda: last_train_step(run) > paused_at, STEP_S, "steps after the pause")
        keys("s")
        wait_for(lambda: "Stop" in screen() and "(y)" in screen(), 30, "the confirm dialog")
        keys("y")
        wait_for(lambda: not runs.trainer_alive(run), STEP_S, "the trainer to stop")
        stopped_at = last_train_step(run)
        wait_for(lambda: "stopped" in header(), 30, "`stopped` in the header")
        keys("r")
        wait_for(lambda: row("e2e") == ("stopped", stopped_at), 30, f"the row `stopped {stopped_at}`")

        keys("R")  # resume from the newest checkpoint of the live branch (the cursor starts there)
        wait_for(lambda: "Resume e2e from" in screen(), 30, "the resume question")
        keys("y")
        wait_for(lambda: runs.trainer_alive(run) and "running" in header(), START_S, "the resumed trainer")
        resumed = [e for e in read_events(layout.events_path(run)) if e.get("kind") == "run"][-1]
        wait_for(lambda: last_train_step(run) > resumed["step"], STEP_S, "steps after the resume")
        pid = read_pidfile(run).pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)  # no final status: only the reader can tell
        wait_for(lambda: not runs.trainer_alive(run), 30, "the trainer to be gone")
        # The last step the trainer recorded before it was killed (its buffered train lines are lost
        # with it; a system event or state.json may already name a later step).
        died_at = max(e["step"] for e in read_events(layout.events_path(run)))
        if layout.state_path(run).exists():
            died_at = max(died_at, json.loads(layout.state_path(run).read_text())["step"])
        keys("r")
        wait_for(lambda: row("e2e") == ("died", died_at), 30, f"the row `died {died_at}`")
        keys("Enter")
        wait_for(lambda: "died" in header(), 30, "`died` in the header")
        keys("q")
        wait_for(lambda: not session_alive(), 30, "the app to exit")
    finally:
        tmux("kill-server")
        if run.exists() and runs.trainer_alive(run):
            from hrm.run.control import send_command

            send_command(run, "stop", timeout=60)
