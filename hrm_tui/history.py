"""Replaying a long events file into a RunState quickly (off the UI thread).

A week-long run writes hundreds of thousands of `train` lines; the plots never show more than a
few hundred points. So, like TensorBoard's downsampling of scalars, train lines older than the last
FULL_RES_BYTES are thinned to at most about `max_train_points` before they are even parsed; every
other kind (eval, checkpoint, status, log, run), and every recent train line, is kept. The thinning
is reported in the run's log panel, so a reader knows old curves are sampled.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from hrm.run.events import parse_event_lines
from hrm_tui.runstate import RunState

CHUNK = 512 * 1024  # bytes parsed per step: short GIL holds keep the UI responsive
FULL_RES_BYTES = 8 * 1024 * 1024  # the most recent history is always kept whole
_TRAIN_TAGS = (b'"kind":"train"', b'"kind": "train"')


def _is_train(line: bytes) -> bool:
    return _TRAIN_TAGS[0] in line or _TRAIN_TAGS[1] in line


def _parse(lines: list[bytes]) -> list[dict[str, Any]]:
    return parse_event_lines(lines)[0]


def thinning_stride(size: int, bytes_per_line: float, max_train_points: int) -> int:
    old_lines = max(0.0, size - FULL_RES_BYTES) / max(bytes_per_line, 1.0)
    return max(1, math.ceil(old_lines / max_train_points))


def replay(path: Path, size: int, *, stride: int = 1, stop: threading.Event | None = None) -> tuple[RunState, int]:
    """Fold the first `size` bytes (complete lines) of an events file; returns the state and the byte
    offset just past the last complete line folded (where live tailing continues)."""
    state = RunState()
    if size <= 0:
        return state, 0  # a run just launched: no events file yet
    thin_before = size - FULL_RES_BYTES if stride > 1 else 0
    offset, pending, seen_train, thinned_step = 0, b"", 0, None
    with open(path, "rb") as f:
        while offset + len(pending) < size and not (stop is not None and stop.is_set()):
            chunk = f.read(min(CHUNK, size - offset - len(pending)))
            if not chunk:
                break
            data = pending + chunk
            end = data.rfind(b"\n")
            if end < 0:
                pending = data
                continue
            lines, pending = data[:end].split(b"\n"), data[end + 1 :]
            if offset < thin_before:
                kept = []
                for line in lines:
                    if _is_train(line):
                        seen_train += 1
                        if seen_train % stride:
                            continue
                    kept.append(line)
                lines = kept
            events = _parse([ln for ln in lines if ln.strip()])
            if offset < thin_before and events:
                thinned_step = events[-1].get("step", thinned_step)
            state.apply(events)
            offset += end + 1
    if thinned_step is not None:
        state.add_log(
            state.first_t or 0.0,
            "info",
            f"history: train points before step {thinned_step:,} kept 1 in {stride} (plots sample them anyway)",
        )
    return state, offset
