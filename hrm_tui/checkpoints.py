"""A run's checkpoints as the runs browser shows them: which belong to the live branch, which to a
branch abandoned by a resume from an earlier step, and the best of the live branch.

Two pieces of evidence, either enough: the write order (hrm.run.ckpt_index.live_branch: a later
checkpoint at a lower step continues an earlier one), and the trainer segments, each opened by a `run`
event at its start step — which knows at once, before the resumed run writes its first checkpoint.
Step `s` of the live history belongs to the last segment that started before `s`; a checkpoint of step
`s` written before that segment began is from a continuation that a later resume replaced. index.json's
`best` is the trainer's, kept across branches: here it only counts on the live branch (else the
best-scored live checkpoint does).
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

from hrm.run import layout
from hrm.run.ckpt_index import CheckpointInfo, list_checkpoints, live_branch, read_index

_RUN_MARKS = (b'"kind":"run"', b'"kind": "run"')  # EventWriter's compact form, and json.dumps' default


@dataclass(frozen=True)
class Checkpoint:
    info: CheckpointInfo
    written: float  # when it was written (index.json's time, else the file's mtime)
    abandoned: bool  # from a continuation replaced by a resume from an earlier step
    best: bool  # the best eval exact accuracy of the live branch

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def step(self) -> int:
        return self.info.step


def segments(events_file: Path) -> list[tuple[int, float]]:
    """(start step, start time) of each trainer segment, in file order, from the `run` events.
    A memory-mapped byte search: a 60 MB history costs tens of milliseconds."""
    out: list[tuple[int, float, int]] = []  # (start step, start time, byte offset)
    try:
        with open(events_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for mark in _RUN_MARKS:
                i = m.find(mark)
                while i >= 0:
                    start, end = m.rfind(b"\n", 0, i) + 1, m.find(b"\n", i)
                    if end < 0:
                        break  # a torn last line
                    try:
                        ev = json.loads(m[start:end])
                        out.append((int(ev.get("step") or 0), float(ev["t"]), start))
                    except (ValueError, KeyError, TypeError):
                        pass
                    i = m.find(mark, end)
    except (OSError, ValueError):  # missing, or empty (mmap of 0 bytes)
        return []
    return [(step, t) for step, t, _ in sorted(out, key=lambda e: e[2])]


def on_live_branch(step: int, written: float, segs: list[tuple[int, float]]) -> bool:
    owner = [t for start, t in segs if start < step]
    return not owner or written >= owner[-1]


def browse(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints: the live branch newest step first, then the abandoned ones."""
    infos = list_checkpoints(run_dir)
    times = {
        e.get("file"): e.get("time")
        for e in read_index(layout.checkpoints_dir(run_dir))["checkpoints"]
        if isinstance(e, dict)
    }
    segs = segments(layout.events_path(run_dir))
    by_writes = {c.path for c in live_branch(run_dir)}
    rows = []
    for c in infos:
        t = times.get(c.path.name)
        written = float(t) if isinstance(t, (int, float)) else c.mtime
        rows.append((c, written, c.path not in by_writes or not on_live_branch(c.step, written, segs)))
    live_scored = [c for c, _, abandoned in rows if not abandoned and c.score is not None]
    best = next((c for c, _, abandoned in rows if c.best and not abandoned), None)
    if best is None and live_scored:
        best = max(live_scored, key=lambda c: (c.score or 0.0, c.step))
    out = [Checkpoint(c, w, a, c is best) for c, w, a in rows]
    return sorted(out, key=lambda c: (c.abandoned, -c.step))
