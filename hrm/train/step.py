"""One optimizer step as the reference takes it (HRM-SPEC §4, §8), split so the trainer can look
at the reduced numbers before the optimizer moves anything:

`forward_backward` — ACT loss head on the kept carry, (loss / global_batch).backward(), gradient
SUM all-reduce; `pack` — the metric sums, a non-finite flag, the squared grad norm and the control
flags in one vector that the trainer SUM-reduces once per step; `reduce_metrics` — the
reference's division (loss keys by global_batch, the rest by max(count, 1))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hrm.train import distributed as D
from hrm.train.steering import FLAGS

# Sorted like the reference's stacking order; missing keys count as 0.
METRIC_KEYS = (
    "accuracy",
    "count",
    "exact_accuracy",
    "lm_loss",
    "q_continue_loss",
    "q_halt_accuracy",
    "q_halt_loss",
    "steps",
)
# Extra slots after the metric sums.
_LOSS, _NONFINITE, _GRAD_SQ = len(METRIC_KEYS), len(METRIC_KEYS) + 1, len(METRIC_KEYS) + 2
_FLAGS0 = len(METRIC_KEYS) + 3


@dataclass
class StepResult:
    metrics: dict[str, float]
    nonfinite: bool
    grad_norm: float
    flags: torch.Tensor  # SUM-reduced control flags (FLAGS order)


def forward_backward(
    head: torch.nn.Module,
    carry: Any,
    batch: dict[str, torch.Tensor],
    global_batch: int,
    env: D.DistEnv,
    params: list[torch.nn.Parameter],
) -> tuple[Any, torch.Tensor, dict, torch.Tensor]:
    """Returns (new carry, loss, metric sums, squared grad norm after the all-reduce)."""
    carry, loss, metrics, _outputs, _all_halted = head(carry=carry, batch=batch, return_keys=())
    (loss / global_batch).backward()
    D.all_reduce_grads(env, params)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        grad_sq = torch.stack([g.detach().double().pow(2).sum() for g in grads]).sum()
    else:
        grad_sq = torch.zeros((), dtype=torch.float64, device=loss.device)
    return carry, loss, metrics, grad_sq


def pack(
    env: D.DistEnv, loss: torch.Tensor, metrics: dict[str, torch.Tensor], grad_sq: torch.Tensor, flags: torch.Tensor
) -> torch.Tensor:
    """One float64 vector per rank; its SUM over ranks carries everything the step decides on."""
    dev = loss.device
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    vals = [metrics[k].detach().double() if k in metrics else zero for k in METRIC_KEYS]
    loss_d = loss.detach().double()
    vals.append(loss_d)
    vals.append((~torch.isfinite(loss_d)).double())
    # The all-reduced grads are the same on every rank: only rank 0 contributes their norm.
    vals.append(grad_sq if env.is_main else zero)
    vec = torch.stack([v.reshape(()) for v in vals])
    return torch.cat([vec, flags.to(dev)])


def unpack(vec: torch.Tensor, global_batch: int) -> StepResult:
    """The reference's reduction of the SUM-reduced vector (on CPU)."""
    v = vec.tolist()
    count = v[METRIC_KEYS.index("count")]
    div = max(count, 1.0)
    m: dict[str, float] = {}
    for i, k in enumerate(METRIC_KEYS):
        m[k] = v[i] / global_batch if k.endswith("loss") else v[i] / div
    m["count"] = count
    m["act_steps_mean"] = m.pop("steps")
    m["halted_frac"] = count / global_batch
    m["loss"] = v[_LOSS] / global_batch
    grad_sq = v[_GRAD_SQ]
    nonfinite = v[_NONFINITE] > 0 or not _finite(v[_LOSS]) or not _finite(grad_sq)
    grad_norm = grad_sq**0.5 if _finite(grad_sq) else float("nan")
    return StepResult(metrics=m, nonfinite=nonfinite, grad_norm=grad_norm, flags=vec[_FLAGS0 : _FLAGS0 + len(FLAGS)])


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
