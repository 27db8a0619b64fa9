"""Numerical health. A non-finite loss or gradient is caught before the optimizer step (the step is
skipped); the parameters are checked after it, before any checkpoint is written — an update can
leave finite but wrecked weights (optim.lr=1e30 gives weights of ~1e30 in one step). From then
until a finite step no checkpoint is written, so the last good one survives (HRM's Sudoku-1k is
known to go unstable late)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hrm.train.step import StepResult

# Weights whose L2 norm grew past this multiple of the norm the session started with are wrecked:
# weight decay keeps a healthy run within a few times its initial norm.
PARAM_NORM_GROWTH_LIMIT = 1e3


class Health:
    def __init__(self, initial_param_norm: float) -> None:
        self.healthy = True
        self.bad_steps = 0
        self.last_message = ""
        self.initial_param_norm = initial_param_norm

    @staticmethod
    def keep(last_checkpoint: str | None) -> str:
        return f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint written yet"

    def record(self, step: int, res: StepResult, last_checkpoint: str | None) -> str:
        """Note a non-finite step; returns the message for the log event."""
        self.healthy = False
        self.bad_steps += 1
        loss = res.metrics.get("loss")
        what = "loss" if loss is None or loss != loss or abs(loss) == float("inf") else "gradient"
        self.last_message = (
            f"non-finite {what} at step {step} (loss={loss}, grad_norm={res.grad_norm}); optimizer step skipped; "
            f"{self.keep(last_checkpoint)}"
        )
        return self.last_message

    def check_params(self, step: int, norm: float) -> str | None:
        """None when the weights after step `step`'s update are sound; else the message (and the
        run is unhealthy until a later check passes)."""
        limit = PARAM_NORM_GROWTH_LIMIT * max(self.initial_param_norm, 1.0)
        if math.isfinite(norm) and norm <= limit:
            return None
        self.healthy = False
        self.bad_steps += 1
        self.last_message = (
            f"parameters wrecked by the update of step {step}: L2 norm {norm:.3g} "
            f"(started at {self.initial_param_norm:.3g}; limit {limit:.3g})"
        )
        return self.last_message

    def ok(self) -> None:
        self.healthy = True

    def refusal(self) -> str:
        return f"not writing a checkpoint of unhealthy weights ({self.last_message})"
