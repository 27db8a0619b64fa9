"""Listing the checkpoints of a run, without torch (the app's runs & checkpoints browser uses it).

A checkpoint counts only once it is complete: `checkpoints/step-%08d.pt`, renamed into place after
fsync. Temp files (`.tmp-*`) never count. `checkpoints/index.json`, written atomically by the writer,
adds what a file name cannot hold: the eval exact accuracy (score), the write order, the best one, and
the files a prune is deleting (the index drops them before they go, so it never names a missing file).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrm.run.layout import CKPT_DIR
from hrm.run.layout import CKPT_INDEX_FILE as INDEX_NAME

log = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^step-(\d{8,})\.pt$")


def parse_step(name: str) -> int | None:
    """The step of a checkpoint file name, or None for anything else (temp files, index, ...)."""
    match = _CKPT_RE.match(name)
    return int(match.group(1)) if match else None


def checkpoints_dir(path: str | os.PathLike[str]) -> Path:
    """Accept a run directory or its checkpoints/ directory."""
    path = Path(path)
    return path / CKPT_DIR if (path / CKPT_DIR).is_dir() or path.name != CKPT_DIR else path


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    size: int
    mtime: float
    score: float | None  # eval exact accuracy recorded when it was written, if any
    order: int  # write order (higher = written later)
    best: bool = False


def read_index(ckpt_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """index.json as a dict ({"checkpoints": [...], "best": name|None, "deleting": [...]}); empty when
    missing or bad."""
    try:
        data = json.loads((Path(ckpt_dir) / INDEX_NAME).read_text())
        if isinstance(data, dict) and isinstance(data.get("checkpoints"), list):
            return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", Path(ckpt_dir) / INDEX_NAME, exc)
    return {"checkpoints": [], "best": None}


def being_deleted(index: dict[str, Any]) -> set[str]:
    """Files a prune has dropped from the index and is deleting (never offered, even while on disk)."""
    names = index.get("deleting")
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def checkpoints_in_write_order(path: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Complete checkpoints of a run in the order they were written: index.json's order, then files
    the index does not name yet (renamed into place just before a crash, or a run without an index)
    by step. File times play no part: copying or touching a file changes nothing."""
    ckpt_dir = checkpoints_dir(path)
    try:
        entries = list(os.scandir(ckpt_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    index = read_index(ckpt_dir)
    doomed = being_deleted(index)
    recorded: dict[str, tuple[int, dict[str, Any]]] = {}
    for e in index["checkpoints"]:
        if isinstance(e, dict) and isinstance(e.get("file"), str):
            recorded[e["file"]] = (len(recorded), e)
    best = index.get("best")
    found: list[CheckpointInfo] = []
    for entry in entries:
        step = parse_step(entry.name)
        if step is None or entry.name in doomed or not entry.is_file():
            continue
        st = entry.stat()
        order, meta = recorded.get(entry.name, (len(recorded) + step, {}))
        score = meta.get("score")
        found.append(
            CheckpointInfo(
                path=Path(entry.path),
                step=step,
                size=st.st_size,
                mtime=st.st_mtime,
                score=float(score) if isinstance(score, (int, float)) else None,
                order=order,
                best=entry.name == best,
            )
        )
    return sorted(found, key=lambda c: (c.order, c.step))


def list_checkpoints(path: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Complete checkpoints of a run (run dir or checkpoints dir), sorted by step."""
    return sorted(checkpoints_in_write_order(path), key=lambda c: c.step)


def live_branch(path: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """The checkpoints of the branch training goes on from, by step. After a resume from an older
    checkpoint, the checkpoints written later continue from it, and the higher steps written before
    them belong to the abandoned branch: walking back from the newest write, each earlier checkpoint
    with a lower step is on the branch."""
    branch: list[CheckpointInfo] = []
    for c in reversed(checkpoints_in_write_order(path)):
        if not branch or c.step < branch[-1].step:
            branch.append(c)
    return branch[::-1]


def latest_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The highest step on the live branch (see `live_branch`): the checkpoint a resume continues from."""
    branch = live_branch(path)
    return branch[-1].path if branch else None


def best_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest recorded eval exact accuracy, if any has a score."""
    scored = [c for c in list_checkpoints(path) if c.score is not None]
    return max(scored, key=lambda c: (c.score, c.step)).path if scored else None
