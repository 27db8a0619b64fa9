"""A run's state: the one list of states, the small state file the trainer rewrites, and the reader
that every viewer (`hrm-train ctl status`, the app's runs list, the dashboard header) uses.

The trainer keeps `state.json` (layout.STATE_FILE) current: state, step, total steps, when it was
updated, who wrote it, the reason of a final state, and how long the run has spent running and
paused. It is rewritten atomically (temp file + rename), so a reader sees the old or the new file,
never half of one. A run without it (older runs, or a file lost to a full disk) is read from
events.jsonl, searched backwards from its end in place (mapped, not read line by line): ~70 ms for
the worst case of a 200,000-line run (bench/status.py). `died` is never written: a reader derives it when the recorded state is live but the trainer
that holds the run is gone. Torch-free."""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hrm.run.layout import events_path, state_path

log = logging.getLogger(__name__)

STATES: tuple[str, ...] = (
    "starting",
    "building",  # building the dataset; shown as "building data"
    "running",
    "paused",
    "stopping",
    "stopped",  # stopped by the user or a signal, final checkpoint written: resumable
    "finished",  # the planned steps are done
    "failed",  # with a reason
    "died",  # derived by readers only: live state recorded, trainer process gone
)
LIVE_STATES: frozenset[str] = frozenset({"starting", "building", "running", "paused", "stopping"})
ENDED_STATES: frozenset[str] = frozenset({"stopped", "finished", "failed", "died"})
STATE_LABELS: dict[str, str] = {"building": "building data"}

# A step-only update is written at most this often; a change of state is written at once.
_STEP_WRITE_INTERVAL_S = 0.5
_STATUS_MARK = b'"kind":"status"'
_RUN_MARK = b'"kind":"run"'


@dataclass(frozen=True)
class RunStatus:
    """What a run is doing now. `running_s`/`paused_s` are the run's training and paused time (all
    trainer processes of the directory) as of `updated`; `running_time()`/`paused_time()` add the
    time since, for a live run in that state. `source`: "state" (state.json), "events" (the
    backwards scan) or "none" (nothing recorded yet)."""

    state: str
    step: int
    total_steps: int | None
    live: bool
    reason: str | None = None
    updated: float | None = None
    pid: int | None = None
    host: str | None = None
    running_s: float = 0.0
    paused_s: float = 0.0
    checkpoint: str | None = None
    source: str = "none"

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    def running_time(self, now: float | None = None) -> float:
        return self.running_s + (self._since(now) if self.live and self.state == "running" else 0.0)

    def paused_time(self, now: float | None = None) -> float:
        return self.paused_s + (self._since(now) if self.live and self.state == "paused" else 0.0)

    def _since(self, now: float | None) -> float:
        return max(0.0, (time.time() if now is None else now) - (self.updated or time.time()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateFile:
    """The trainer's writer of state.json (rank 0). Counters continue those of an earlier trainer of
    the same directory. Never raises: a write that fails (a full disk) is logged and remembered in
    `last_error`; events.jsonl stays the record."""

    def __init__(self, run_dir: str | os.PathLike[str], total_steps: int | None = None, step: int = 0) -> None:
        self.path = state_path(Path(run_dir))
        prev = _read_state_file(self.path) or {}
        self.total_steps = total_steps
        self.step = int(step)
        self.state = "starting"
        self.reason: str | None = None
        self.checkpoint: str | None = prev.get("checkpoint") if isinstance(prev.get("checkpoint"), str) else None
        self.running_s = _float(prev.get("running_s"))
        self.paused_s = _float(prev.get("paused_s"))
        self.last_error: str | None = None
        self._mark = time.monotonic()
        self._written = 0.0
        self._lock = threading.Lock()
        self._pid, self._host = os.getpid(), socket.gethostname()

    def set(self, state: str, step: int | None = None, reason: str | None = None, **extra: Any) -> None:
        """A new state (written at once). `extra`: total_steps=..., checkpoint=..."""
        if state not in STATES or state == "died":
            raise ValueError(f"not a state a trainer records: {state!r}")
        with self._lock:
            self._account()
            self.state, self.reason = state, reason
            if step is not None:
                self.step = int(step)
            if "total_steps" in extra:
                self.total_steps = extra["total_steps"]
            if "checkpoint" in extra:
                self.checkpoint = extra["checkpoint"]
            self._write()

    def at_step(self, step: int, force: bool = False) -> None:
        """The step advanced: rewritten when the last write is older than half a second."""
        with self._lock:
            self.step = int(step)
            if force or time.monotonic() - self._written >= _STEP_WRITE_INTERVAL_S:
                self._account()
                self._write()

    def _account(self) -> None:
        now = time.monotonic()
        if self.state == "running":
            self.running_s += now - self._mark
        elif self.state == "paused":
            self.paused_s += now - self._mark
        self._mark = now

    def _write(self) -> None:
        data = {
            "state": self.state,
            "step": self.step,
            "total_steps": self.total_steps,
            "reason": self.reason,
            "t": time.time(),
            "pid": self._pid,
            "host": self._host,
            "running_s": round(self.running_s, 3),
            "paused_s": round(self.paused_s, 3),
            "checkpoint": self.checkpoint,
        }
        tmp = self.path.with_name(f".{self.path.name}.{self._pid}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(data) + "\n")
            os.replace(tmp, self.path)
            self.last_error = None
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if self.last_error is None:
                log.warning("could not write %s: %s", self.path, e)
            self.last_error = f"{self.path}: {e.strerror or e}"
        self._written = time.monotonic()


def _float(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0.0


def _int_or_none(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _read_state_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES else None


# --- reading events backwards -------------------------------------------------------------------
def _mapped(path: Path) -> Any:
    """The file mapped read-only (searched in place, never copied), or None when empty/missing."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return None
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def _last_event_with(path: Path, mark: bytes) -> dict[str, Any] | None:
    """The newest complete event whose line holds `mark` (a `"kind":"..."` pair), or None."""
    mm = _mapped(path)
    if mm is None:
        return None
    with mm:
        end = len(mm)
        while (i := mm.rfind(mark, 0, end)) >= 0:
            start = mm.rfind(b"\n", 0, i) + 1
            stop = mm.find(b"\n", i)
            if stop >= 0:  # a torn last line (no newline yet) is not an event
                with contextlib.suppress(ValueError):
                    ev = json.loads(mm[start:stop])
                    if isinstance(ev, dict) and mark == b'"kind":"%s"' % str(ev.get("kind")).encode():
                        return ev
            end = start
    return None


def last_event(path: Path) -> dict[str, Any] | None:
    """The newest complete event of an events file (None when there is none)."""
    mm = _mapped(path)
    if mm is None:
        return None
    with mm:
        stop = mm.rfind(b"\n")
        while stop >= 0:
            start = mm.rfind(b"\n", 0, stop) + 1
            with contextlib.suppress(ValueError):
                ev = json.loads(mm[start:stop])
                if isinstance(ev, dict):
                    return ev
            stop = start - 1
    return None


def status_from_events(run_dir: str | os.PathLike[str]) -> RunStatus:
    """The recorded state of a run without state.json: its last status event, the step of its last
    event, the total from that status (or the last run event). `live` is not checked here."""
    path = events_path(Path(run_dir))
    status = _last_event_with(path, _STATUS_MARK)
    newest = last_event(path)
    if status is None and newest is None:
        return RunStatus(state="starting", step=0, total_steps=None, live=False, source="none")
    total = _int_or_none((status or {}).get("total_steps"))
    if total is None:
        run = _last_event_with(path, _RUN_MARK)
        total = _int_or_none((run or {}).get("total_steps"))
    state = str((status or {}).get("state") or "starting")
    reason = (status or {}).get("reason") or (status or {}).get("error")
    return RunStatus(
        state=state if state in STATES else "starting",
        step=_int_or_none((newest or {}).get("step")) or 0,
        total_steps=total,
        live=False,
        reason=str(reason) if reason else None,
        updated=_float((newest or {}).get("t")) or None,
        source="events",
    )


def read_status(run_dir: str | os.PathLike[str]) -> RunStatus:
    """The state of a run directory now: state.json (else the events), with `live` checked
    against the run's lock. A live state whose trainer is gone reads `died`, at the step of the
    newest recorded event."""
    from hrm.run.lock import read_pidfile, trainer_alive

    run_dir = Path(run_dir)
    data = _read_state_file(state_path(run_dir))
    if data is not None:
        st = RunStatus(
            state=str(data["state"]),
            step=_int_or_none(data.get("step")) or 0,
            total_steps=_int_or_none(data.get("total_steps")),
            live=False,
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            updated=_float(data.get("t")) or None,
            pid=_int_or_none(data.get("pid")),
            host=data.get("host") if isinstance(data.get("host"), str) else None,
            running_s=_float(data.get("running_s")),
            paused_s=_float(data.get("paused_s")),
            checkpoint=data.get("checkpoint") if isinstance(data.get("checkpoint"), str) else None,
            source="state",
        )
    else:
        st = status_from_events(run_dir)
    alive = trainer_alive(run_dir)
    if st.state not in LIVE_STATES:
        holder = read_pidfile(run_dir) if alive else None
        if holder is not None and holder.pid != st.pid:
            # A new trainer holds the directory and has not recorded anything yet (it validates
            # its start point before it writes): the recorded end belongs to the previous one.
            return _replace(st, state="starting", live=True, reason=None)
        return st
    if alive:
        return _replace(st, live=True)
    if st.source == "none":
        return st  # nothing recorded yet: a trainer that has not claimed the directory (or never will)
    # Killed: the events may hold a later step than the state file's last (throttled) write.
    newest = last_event(events_path(run_dir)) or {}
    step = max(st.step, _int_or_none(newest.get("step")) or 0)
    return _replace(st, state="died", step=step, reason=st.reason or f"trainer gone while {st.label}")


def _replace(st: RunStatus, **changes: Any) -> RunStatus:
    return RunStatus(**{**asdict(st), **changes})
