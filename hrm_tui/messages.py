"""Messages that worker threads post to the UI (the only way they touch it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

# Workers post straight to the screen that handles each message; none of them bubble further.


@dataclass
class EventsRead(Message, bubble=False):
    """A batch of events tailed from a run's events.jsonl (about every 0.25 s at most)."""

    run_dir: Path
    events: list[dict[str, Any]]
    initial: bool = False  # the replay of the existing file on attach, folded into `state`
    state: Any = None  # RunState built off the UI thread (initial only); ownership moves to the UI


@dataclass
class Liveness(Message, bubble=False):
    """Whether the run's trainer process is alive, plus the trainer.log tail when it is not."""

    run_dir: Path
    alive: bool
    log_tail: list[str] = field(default_factory=list)
    recorded: str | None = None  # hrm.run.status.read_status's state ("starting" for a new trainer)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Liveness) and message.run_dir == self.run_dir


@dataclass
class SystemSampled(Message, bubble=False):
    """The app's own NVML/host sample (used only while no live run reports its own)."""

    sample: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SystemSampled)


@dataclass
class CommandDone(Message, bubble=False):
    """The trainer's reply to a control command, or the error that stopped it."""

    run_dir: Path
    cmd: str
    reply: dict[str, Any]
