"""The run the app last showed, per runs root, so that starting the app again re-attaches to it.

A small JSON file in the user's cache directory ($XDG_CACHE_HOME/hrm-tui/last-run.json, else
~/.cache/...): losing it costs nothing but one key press, so a cache is the right home. Written
atomically; an unreadable file reads as empty.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
FILE_NAME = "last-run.json"


def default_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "hrm-tui" / FILE_NAME


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def recall(path: Path, runs_root: Path) -> Path | None:
    """The run last shown under `runs_root`, if it still exists."""
    run = _read(path).get(str(runs_root.resolve()))
    return Path(run) if run and Path(run).is_dir() else None


def remember(path: Path, runs_root: Path, run_dir: Path | None) -> None:
    """Record (or, with None, clear) the run shown under `runs_root`; failure only logs."""
    data = _read(path)
    key = str(runs_root.resolve())
    if run_dir is None:
        data.pop(key, None)
    else:
        data[key] = str(run_dir.resolve())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not break the app
        log.warning("cannot remember the last run in %s: %s", path, exc)
