"""Learning-rate schedule: linear warmup, then cosine decay to `min_ratio` (HRM-SPEC §3).

A pure function of the step, so there is nothing to checkpoint and a resume is exact. Both
optimizers use the same shape with their own base lr (lr and puzzle_emb_lr).
"""

from __future__ import annotations

import math

__all__ = ["cosine_schedule_with_warmup_lr"]


def cosine_schedule_with_warmup_lr(
    step: int,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 1.0,
) -> float:
    """The lr for optimizer step `step` (the first step is 1).

    η = η0·t/W for t < W, else η0·(r + (1 − r)·½(1 + cos(π·(t − W)/(T − W)))).
    With the reference default r = 1.0 the lr is constant after warmup. Steps past `total_steps`
    keep the final value (the reference never runs them; the cosine would rise again).
    """
    if step < warmup_steps:
        return base_lr * float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    progress = min(progress, 1.0)
    return base_lr * (min_ratio + max(0.0, (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))
