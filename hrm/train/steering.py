"""Commands from the control socket and from signals, turned into one decision per step that
every rank shares.

Rank 0 owns the socket; any rank may receive a signal (torchrun forwards SIGTERM to all of them,
and a user may signal one pid). Each rank folds what it got into a small flag vector; the trainer
SUM-reduces that vector together with the step's metrics (one collective per step), so every rank
acts on the same step. Requests are answered by rank 0 once the trainer has acted."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hrm.run.layout import COMMANDS as COMMANDS_LIST

log = logging.getLogger(__name__)

# Slots of the flag vector, in a fixed order shared by all ranks.
FLAGS = COMMANDS_LIST
COMMANDS = frozenset(FLAGS)


@dataclass
class Decision:
    """What all ranks do after this step. `requests` (rank 0 only) wait for their reply."""

    pause: bool = False
    resume: bool = False
    checkpoint: bool = False
    stop: bool = False
    eval: bool = False
    stop_reason: str = ""
    requests: list[Any] = field(default_factory=list)

    def any(self) -> bool:
        return self.pause or self.resume or self.checkpoint or self.stop or self.eval


class Steering:
    """Collects commands between steps; never blocks."""

    def __init__(
        self,
        rank: int,
        server: Any | None = None,
        status_fn: Callable[[], dict[str, Any]] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.rank = rank
        # The flag vector is built where the step's metrics are: a copy from pageable host memory
        # to a GPU would cost the step a host sync of its own.
        self.device = device or torch.device("cpu")
        self.server = server  # hrm.run.control.ControlServer on rank 0, else None
        self.status_fn = status_fn or (lambda: {})
        # Re-entrant: Python runs signal handlers in the main thread between bytecodes, possibly while
        # that thread is inside `with self._lock` below; a plain Lock would deadlock the trainer.
        self._lock = threading.RLock()
        self._signal_stop = ""
        self._own_stop = ""  # a stop the trainer asks of itself (rank 0: its events cannot be written)
        self._signal_checkpoint = False
        self._pending: list[tuple[str, Any]] = []
        self.paused = False
        self._saved_handlers: dict[int, Any] = {}

    # --- signals -------------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM/SIGINT = stop, SIGUSR1 = checkpoint, SIGHUP ignored (closing a terminal
        never ends a run). Only the main thread may install handlers."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in (
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGUSR1, self._on_checkpoint),
            (signal.SIGHUP, signal.SIG_IGN),
        ):
            self._saved_handlers[sig] = signal.signal(sig, handler)

    def restore_signals(self) -> None:
        """Put back the handlers we replaced (matters when the trainer runs inside another program)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    def _on_stop(self, signum: int, _frame: object) -> None:
        with self._lock:
            self._signal_stop = signal.Signals(signum).name

    def _on_checkpoint(self, _signum: int, _frame: object) -> None:
        with self._lock:
            self._signal_checkpoint = True

    def request_stop(self, reason: str) -> None:
        """Stop at the next step on every rank (folded into the flags like a signal)."""
        with self._lock:
            self._own_stop = self._own_stop or reason

    # --- control socket ------------------------------------------------------------------
    def _poll_socket(self) -> None:
        if self.server is None:
            return
        for req in self.server.poll():
            cmd = getattr(req, "cmd", None)
            if cmd == "status":
                # Answered at once: it changes nothing, so no rank needs to know.
                req.reply({"ok": True, "cmd": "status", **self.status_fn()})
            elif cmd in COMMANDS:
                self._pending.append((cmd, req))
            else:
                req.reply(
                    {
                        "ok": False,
                        "error": f"unknown command {cmd!r}; expected one of {', '.join(sorted(COMMANDS | {'status'}))}",
                    }
                )

    def local_flags(self) -> torch.Tensor:
        """This rank's wishes as a float64 vector (one slot per FLAGS entry) on `self.device`: zeros
        and scalar fills are kernel launches there, never a copy from the host."""
        self._poll_socket()
        v = torch.zeros(len(FLAGS), dtype=torch.float64, device=self.device)
        with self._lock:
            if self._signal_stop or self._own_stop:
                v[FLAGS.index("stop")] = 1
            if self._signal_checkpoint:
                v[FLAGS.index("checkpoint")] = 1
        # Pause/resume are resolved to the state the last request asks for, so "pause, resume"
        # arriving within one step is a no-op rather than a race.
        want_paused = self.paused
        for cmd, _ in self._pending:
            if cmd in ("pause", "resume"):
                want_paused = cmd == "pause"
            elif cmd in FLAGS:
                v[FLAGS.index(cmd)] = 1
        if want_paused != self.paused:
            v[FLAGS.index("pause" if want_paused else "resume")] = 1
        return v

    def decide(self, reduced: torch.Tensor) -> Decision:
        """Turn the SUM-reduced flags (identical on every rank) into a Decision; consumes the
        pending requests and signal flags that were folded into it."""
        d = Decision()
        for i, name in enumerate(FLAGS):  # one flag per command, in the one command list's order
            setattr(d, name, bool(reduced[i].item() > 0))
        with self._lock:
            # A signal flag is consumed only by a decision that acts on it: one that arrived after
            # local_flags() (during the optimizer step, say) waits for the next step instead of being lost.
            if d.stop:
                d.stop_reason = f"signal {self._signal_stop}" if self._signal_stop else self._own_stop or "stop command"
                self._signal_stop = self._own_stop = ""
            if d.checkpoint:
                self._signal_checkpoint = False
        d.requests, self._pending = self._pending, []
        if d.pause:
            self.paused = True
        if d.resume:
            self.paused = False
        return d

    def reply_all(self, d: Decision, step: int, extra: dict[str, dict[str, Any]] | None = None) -> None:
        """Answer the requests folded into `d` (rank 0). `extra[cmd]` adds fields (e.g. a path)."""
        extra = extra or {}
        for cmd, req in d.requests:
            fields = dict(extra.get(cmd, {}))
            if fields.get("ok") is False:
                req.reply({"ok": False, "cmd": cmd, "step": step, **fields})
            else:
                req.reply({"ok": True, "cmd": cmd, "step": step, "message": fields.pop("message", cmd), **fields})
