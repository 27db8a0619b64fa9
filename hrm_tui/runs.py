"""Run directories as the app sees them: list them with their status, launch, resume, delete.

The app never holds a trainer: it starts `python -m hrm.train` detached (its own session, output to
the run's trainer.log) and from then on only reads the directory and talks to its control socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hrm.run import layout
from hrm.run.status import ENDED_STATES, STATE_LABELS, read_status
from hrm_tui.runstate import LIVE_STATES

EVENTS = layout.EVENTS_FILE
TRAINER_LOG = layout.LOG_FILE
# Trainers launched by this app, by run directory: polled so they never linger as zombies, and
# counted as alive while they start (before the trainer has written its pid file).
_children: dict[Path, subprocess.Popen] = {}
_ended: dict[Path, tuple[tuple[tuple[int, int], ...], RunInfo]] = {}  # ended runs, by their files' stamp
STARTUP_GRACE_S = 120.0  # a launched trainer records its first event within this (torch import, lock)


@dataclass
class RunInfo:
    path: Path
    status: str  # one of hrm.run.status.STATES
    step: int
    total_steps: int | None
    alive: bool
    last_t: float | None
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """The state as shown ("building data" for building)."""
        return STATE_LABELS.get(self.status, self.status)


class LaunchError(Exception):
    """A run could not be started; the message says why and what to do."""


# ---- reading a run directory cheaply ------------------------------------------------------------
def trainer_alive(run_dir: Path) -> bool:
    """The run's trainer lives: its pid file names a living process (hrm.run.lock), or it is a
    process this app launched that has not exited yet."""
    from hrm.run.lock import trainer_alive as _alive

    reap_children()
    return Path(run_dir).resolve() in _children or bool(_alive(run_dir))


def reap_children() -> None:
    for run_dir, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[run_dir]


def run_info(run_dir: Path) -> RunInfo:
    """State and step of one run (hrm.run.status: the trainer's state.json, else a backwards scan of
    its events), fast however long its history. A trainer this app just launched counts as
    `starting` until it records anything; one that left only its trainer.log (it exited on bad
    arguments before its first event) is `died` once the log is older than a start-up takes.

    An ended run whose files have not changed is not read again: the runs list rescans every few
    seconds, and an old run without state.json can cost a scan of its whole history."""
    stamp = _stamp(run_dir)
    cached = _ended.get(run_dir)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    st = read_status(run_dir)
    state, live = st.state, st.live
    if not live and st.source == "none":
        reap_children()
        if Path(run_dir).resolve() in _children:
            live = True
        elif time.time() - _mtime(Path(run_dir) / TRAINER_LOG, default=time.time()) > STARTUP_GRACE_S:
            state = "died"
    info = RunInfo(run_dir, state, st.step, st.total_steps, live, st.updated, st.reason)
    if not live and state in ENDED_STATES:
        _ended[run_dir] = (stamp, info)
    else:
        _ended.pop(run_dir, None)
    return info


def _stamp(run_dir: Path) -> tuple[tuple[int, int], ...]:
    """Size and mtime of every file a run's state is read from: a new trainer, a new event or a
    rewritten state changes one of them."""
    out = []
    for name in (EVENTS, layout.STATE_FILE, layout.PID_FILE, TRAINER_LOG):
        try:
            st = os.stat(Path(run_dir) / name)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


def derive_status(last_state: str, alive: bool, has_events: bool = True, has_log: bool = False) -> str:
    """What to call a run, given the last `status` event and whether its trainer lives."""
    if alive:  # a live process that has not said "running" yet (or a resume of a finished run)
        return last_state if last_state in LIVE_STATES else "starting"
    if last_state in ("finished", "failed", "stopped"):  # final states the trainer wrote
        return last_state
    if last_state == "stopping":
        return "stopped"
    if not has_events:
        return "died" if has_log else "unknown"  # e.g. exited on bad arguments before any event
    return "died"  # no final status and no process: killed or crashed hard


def _run_dirs(runs_root: Path) -> list[Path]:
    try:
        entries = list(runs_root.iterdir())
    except OSError:
        return []
    marks = (EVENTS, layout.CONFIG_FILE, TRAINER_LOG)
    return [d for d in entries if d.is_dir() and any((d / m).exists() for m in marks)]


def has_runs(runs_root: Path) -> bool:
    return bool(_run_dirs(runs_root))


def list_runs(runs_root: Path) -> list[RunInfo]:
    """Runs under `runs_root`, live ones first, then newest first."""
    infos = [run_info(d) for d in _run_dirs(runs_root)]
    infos.sort(key=lambda r: (not r.alive, -(r.last_t or _mtime(r.path))))
    return infos


def _mtime(p: Path, default: float = 0.0) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return default


def log_tail(run_dir: Path, lines: int = 12) -> list[str]:
    try:
        with open(run_dir / TRAINER_LOG, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]


# ---- starting trainers ----------------------------------------------------------------------------
def new_run_dir(runs_root: Path, preset: str, name: str | None = None, now: float | None = None) -> Path:
    if name:
        from hrm.run.config import validate_run_name

        try:
            run_id = validate_run_name(name)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    else:
        stem = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
        run_id = layout.run_id(stem, now)
    path = runs_root / run_id
    if path.exists():
        raise LaunchError(f"run directory {path} already exists: pick another run name")
    return path


def train_command(preset: str | None, run_dir: Path, overrides: list[str], gpus: int = 1) -> list[str]:
    """`python -m hrm.train`, or torchrun of it for gpus > 1; no preset: the run's own config.yaml."""
    if gpus > 1:
        head = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "hrm.train",
        ]
    else:
        head = [sys.executable, "-m", "hrm.train"]
    return head + ([preset] if preset else []) + ["--run-dir", str(run_dir), *overrides]


def _spawn(argv: list[str], run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Detached: own session (no controlling terminal, so SIGHUP from a closed terminal never
    reaches it), stdin from /dev/null, stdout/stderr appended to trainer.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRAINER_LOG, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=os.getcwd(),
        )
    _children[run_dir.resolve()] = proc
    return proc


def launch(
    preset: str,
    runs_root: Path,
    *,
    name: str | None = None,
    overrides: list[str] | None = None,
    gpus: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[Path, subprocess.Popen]:
    run_dir = new_run_dir(runs_root, preset, name)
    if gpus > 1:
        overrides = [*(overrides or []), f"train.gpus={gpus}"]
    return run_dir, _spawn(train_command(preset, run_dir, list(overrides or []), gpus), run_dir, env)


def resume(run_dir: Path, checkpoint: Path, *, gpus: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Continue a stopped/finished/failed run from one of its checkpoints, in the same directory."""
    if trainer_alive(run_dir):
        raise LaunchError(f"{run_dir.name} is still running: stop it before resuming from a checkpoint")
    if not Path(checkpoint).is_file():
        raise LaunchError(f"checkpoint {checkpoint} does not exist")
    return _spawn(train_command(None, run_dir, ["--resume", str(checkpoint)], gpus), run_dir, env)


def run_gpus(run_dir: Path) -> int:
    """How many processes the run trains on (its config.yaml's train.gpus; 1 when unreadable), so a
    resume continues a torchrun run under torchrun."""
    try:
        from hrm.run.config import load_config

        return int(load_config(layout.config_path(run_dir)).train.gpus)
    except (OSError, ValueError):
        return 1


def delete_run(run_dir: Path) -> None:
    if trainer_alive(run_dir):
        raise LaunchError(f"{run_dir.name} is running: stop it before deleting it")
    shutil.rmtree(run_dir)


def human_size(n: int | None) -> str:
    from hrm_tui.runstate import human_bytes

    return human_bytes(n) if n is not None else "?"
