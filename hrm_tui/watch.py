"""Background threads that read the outside world and only ever `post_message` to the UI.

`RunWatcher` tails one run's events.jsonl (first a full replay, folded off the UI thread, then
batches every ~0.25 s) and checks whether its trainer lives. `SystemSampler` samples NVML and the
host every ~2 s for when no live run reports its own `system` events.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from textual.message import Message
from textual.message_pump import MessagePump

from hrm.train.events import EventTailer
from hrm_tui import runs
from hrm_tui.messages import EventsRead, Liveness, SystemSampled
from hrm_tui.runstate import RunState

log = logging.getLogger(__name__)
BATCH_S = 0.25
LIVENESS_S = 2.0


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
        # Fold the existing history here, off the UI thread, and hand the whole state over.
        state = RunState()
        state.apply(self.tailer.read())
        self.post(EventsRead(self.run_dir, [], initial=True, state=state))
        self._check_liveness()

    def _check_liveness(self) -> None:
        alive = runs.trainer_alive(self.run_dir)
        self.post(Liveness(self.run_dir, alive, [] if alive else runs.log_tail(self.run_dir)))


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
