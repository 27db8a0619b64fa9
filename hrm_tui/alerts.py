"""When to tell the user, unasked, that something happened to the watched run.

A run that ends (finished, stopped, failed, died), a non-finite loss, and a stall (no step for many
times the usual step time) raise an alert: a notification, the terminal bell, and optionally an
OSC 9 / OSC 777 desktop notification (terminals forward these over SSH; off by default). Only what
happens while watching alerts: attaching to a run that is already over says nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ENDED = {"finished": "information", "stopped": "information", "failed": "error", "died": "error"}
STALL_FACTOR = 20.0  # no step for this many usual step times...
STALL_MIN_S = 60.0  # ...and at least this long is a stall


@dataclass(frozen=True)
class Alert:
    title: str
    message: str
    severity: str  # "information" | "warning" | "error" (Textual's notify severities)


def _nonfinite(ev: dict[str, Any]) -> str | None:
    """The non-finite loss an event reports, if any (the events writer turns NaN/Inf into null)."""
    kind = ev.get("kind")
    if kind == "train" and "loss" in ev:
        loss = ev["loss"]
        if loss is None or (isinstance(loss, float) and not math.isfinite(loss)):
            return f"non-finite loss at step {ev.get('step', '?')}"
    if kind == "log" and str(ev.get("level")) == "error" and str(ev.get("message", "")).startswith("non-finite"):
        return str(ev.get("message"))
    return None


class AlertWatch:
    """Fed the run's status and events as they arrive; returns the alerts to raise."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name
        self.armed = False  # set once the initial picture (replay + first liveness) is in
        self.status: str | None = None
        self._last_step_at: float | None = None  # monotonic time the last train event arrived
        self._stalled = False
        self._nonfinite_said = False

    def arm(self, status: str, now: float) -> None:
        self.armed, self.status, self._last_step_at = True, status, now

    def on_status(self, status: str) -> list[Alert]:
        before, self.status = self.status, status
        if not self.armed or status == before or status not in ENDED:
            return []
        return [Alert(f"{self.run_name} {status}", f"the run is {status} (was {before})", ENDED[status])]

    def on_events(self, events: list[dict[str, Any]], now: float) -> list[Alert]:
        out: list[Alert] = []
        for ev in events:
            if ev.get("kind") == "train":
                self._last_step_at, self._stalled = now, False
            msg = _nonfinite(ev)
            if msg is None:
                if ev.get("kind") == "train":
                    self._nonfinite_said = False
            elif self.armed and not self._nonfinite_said:
                self._nonfinite_said = True  # once per bad stretch, not once per step
                out.append(Alert(f"{self.run_name}: non-finite loss", msg, "error"))
        return out

    def check_stall(self, status: str, now: float, seconds_per_step: float | None) -> list[Alert]:
        if not self.armed or status != "running" or self._last_step_at is None or self._stalled:
            return []
        limit = max(STALL_MIN_S, STALL_FACTOR * (seconds_per_step or 0.0))
        quiet = now - self._last_step_at
        if quiet < limit:
            return []
        self._stalled = True
        usual = f" (usual step {seconds_per_step:.2f} s)" if seconds_per_step else ""
        return [Alert(f"{self.run_name} stalled", f"no step for {quiet:.0f} s{usual}", "warning")]


def osc_notification(title: str, message: str) -> str:
    """OSC 777 (urxvt, foot, WezTerm, ...) then OSC 9 (iTerm2, Windows Terminal, kitty, ...); a
    terminal ignores the one it does not know. Control characters are removed from the text."""
    clean = ["".join(ch for ch in s if ch.isprintable()).replace(";", ",") for s in (title, message)]
    return f"\x1b]777;notify;{clean[0]};{clean[1]}\x1b\\\x1b]9;{clean[0]}: {clean[1]}\x1b\\"
