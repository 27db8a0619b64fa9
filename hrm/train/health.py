"""Numerical health: a non-finite loss or gradient is caught before the optimizer step (the step
is skipped), and from then until a finite step no checkpoint is written, so the last good one
survives (HRM's Sudoku-1k is known to go unstable late)."""

from __future__ import annotations

from typing import Any


class Health:
    def __init__(self, cfg: Any) -> None:
        self.healthy = True
        self.bad_steps = 0
        self.last_message = ""

    def record(self, step: int, res: Any, last_checkpoint: str | None) -> str:
        """Note a non-finite step; returns the message for the log event."""
        self.healthy = False
        self.bad_steps += 1
        loss = res.metrics.get("loss")
        what = "loss" if loss is None or loss != loss or abs(loss) == float("inf") else "gradient"
        keep = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint written yet"
        self.last_message = (
            f"non-finite {what} at step {step} (loss={loss}, grad_norm={res.grad_norm}); optimizer step skipped; {keep}"
        )
        return self.last_message

    def ok(self) -> None:
        self.healthy = True

    def refusal(self) -> str:
        return f"not writing a checkpoint after non-finite values ({self.last_message})"
