"""Background threads that read the outside world and only ever `post_message` to the UI.

`RunWatcher` tails one run's events.jsonl (first a full replay, folded off the UI thread, then
batches every ~0.25 s) and checks whether its trainer lives. `SystemSampler` samples NVML and the
host every ~2 s for when no live run reports its own `system` events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump

from hrm.run.events import EventTailer
from hrm_tui import history, runs
from hrm_tui.messages import EventsRead, Liveness, SystemSampled
from hrm_tui.runstate import RunState

log = logging.getLogger(__name__)
BATCH_S = 0.25
LIVENESS_S = 2.0
PREVIEW_BYTES = 256 * 1024  # the end of a long history: enough for the current picture
MAX_TRAIN_POINTS = 50_000  # old train history is thinned to about this many points on attach


class _Worker(threading.Thread):
    def __init__(self, target: MessagePump, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target = target
        self._exit = threading.Event()

    def post(self, message: Message) -> None:
        self._target.post_message(message)

    def close(self) -> None:
        self._exit.set()


class RunWatcher(_Worker):
    def __init__(self, target: MessagePump, run_dir: Path) -> None:
        super().__init__(target, f"watch-{run_dir.name}")
        self.run_dir = run_dir
        self.tailer = EventTailer(run_dir / runs.EVENTS)

    def run(self) -> None:
        try:
            self._replay()
            since_liveness = LIVENESS_S
            while not self._exit.wait(BATCH_S):
                events = self.tailer.read()
                if events:
                    self.post(EventsRead(self.run_dir, events))
                since_liveness += BATCH_S
                if since_liveness >= LIVENESS_S:
                    since_liveness = 0.0
                    self._check_liveness()
        except Exception:  # a reader bug must show, not silently freeze the dashboard
            log.exception("watcher for %s failed", self.run_dir)
            self.post(Liveness(self.run_dir, False, ["hrm-tui: the events reader failed; see the app log"]))

    def _replay(self) -> None:
        """Fold the existing history here, off the UI thread, and hand whole states over: first a
        preview from the file's first line and its last PREVIEW_BYTES (the current picture of a
        long run in milliseconds), then the whole history (see hrm_tui.history)."""
        path = self.run_dir / runs.EVENTS
        size = path.stat().st_size if path.exists() else 0
        stride = 1
        if size > 2 * PREVIEW_BYTES:
            preview = RunState()
            preview.partial = True
            events = _preview_events(path, size)
            preview.apply(events)
            self.post(EventsRead(self.run_dir, [], initial=True, state=preview))
            self._check_liveness()
            stride = history.thinning_stride(size, PREVIEW_BYTES / max(1, len(events)), MAX_TRAIN_POINTS)
            self._exit.wait(0.3)  # let the UI paint the current picture before the long replay
        state, offset = history.replay(path, size, stride=stride, stop=self._exit)
        self.tailer = EventTailer(path, offset=offset)
        self.post(EventsRead(self.run_dir, [], initial=True, state=state))
        self._check_liveness()

    def _check_liveness(self) -> None:
        from hrm.run.status import read_status

        alive = runs.trainer_alive(self.run_dir)
        recorded = read_status(self.run_dir).state  # tells a new trainer from one finishing its exit
        self.post(Liveness(self.run_dir, alive, [] if alive else runs.log_tail(self.run_dir), recorded))


class SystemSampler(_Worker):
    def __init__(self, target: MessagePump, sample: Callable[[], dict[str, Any]], every_s: float = 2.0) -> None:
        super().__init__(target, "system-sampler")
        self._sample = sample
        self._every = every_s
        self.active = threading.Event()  # cleared while a live run reports its own samples
        self.active.set()

    def run(self) -> None:
        while True:
            if self.active.is_set():
                try:
                    self.post(SystemSampled(self._sample()))
                except Exception as exc:  # NVML failures are a normal state, never a crash
                    self.post(SystemSampled({"gpus": [], "nvml": f"sampling failed: {exc}"}))
            if self._exit.wait(self._every):
                return


def _preview_events(path: Path, size: int) -> list[dict[str, Any]]:
    """The first complete line (the first `run` event) and the complete lines of the last
    PREVIEW_BYTES bytes."""
    import json

    with open(path, "rb") as f:
        first = f.readline()
        f.seek(size - PREVIEW_BYTES)
        tail = f.read(PREVIEW_BYTES)
    lines = [first] + tail.split(b"\n")[1:]  # the first piece of the tail is a cut line
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a torn last line: the full replay picks it up when complete
        if isinstance(ev, dict):
            out.append(ev)
    return out
