"""The run directory's layout: every file name and id format, defined once.

```
runs/<run-id>/
  config.yaml        the fully resolved config, written once at start
  events.jsonl       append-only history, one JSON object per line
  checkpoints/       step-00001000.pt ... and index.json
  control.sock       Unix socket, mode 0600, while the trainer lives
  trainer.pid        host, pid and start time of the trainer holding the run
  trainer.log        the trainer's stdout/stderr
  state.json         the run's state and step now, rewritten atomically by the trainer
```
"""

from __future__ import annotations

import time
from pathlib import Path

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
CKPT_DIR = "checkpoints"
CKPT_INDEX_FILE = "index.json"
SOCKET_FILE = "control.sock"
PID_FILE = "trainer.pid"
LOG_FILE = "trainer.log"
STATE_FILE = "state.json"

# Commands the trainer obeys between steps (the app's keys and `hrm-train ctl` send these);
# `status` is answered without acting.
COMMANDS: tuple[str, ...] = ("pause", "resume", "checkpoint", "stop", "eval")
QUERIES: tuple[str, ...] = ("status",)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def run_id(stem: str, now: float | None = None) -> str:
    """`<preset>-<UTC timestamp>`, the id of a run nobody named."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


def events_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / EVENTS_FILE


def config_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / CONFIG_FILE


def checkpoints_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / CKPT_DIR


def checkpoint_path(run_dir: Path | str, step: int) -> Path:
    return checkpoints_dir(run_dir) / checkpoint_name(step)


def log_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / LOG_FILE


def state_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / STATE_FILE
