"""One optimizer step as the reference takes it (HRM-SPEC §4, §8), split so the trainer can look
at the reduced numbers before the optimizer moves anything:

`forward_backward` — ACT loss head on the kept carry, (loss / global_batch).backward(), gradient
SUM all-reduce, and the viewers' extra sums (changed cells, halting histogram) still on the device;
`pack` — everything the step reports or decides on in one vector that the trainer SUM-reduces and
copies to the host once per step (the step's only host sync); `unpack` — the reference's division
(loss keys by global_batch, the rest by max(count, 1)).

The parameter norm after an optimizer step can only be measured after the reduction that decided
to take the step, so it rides in the *next* step's vector; `TrainRecord` holds the step's train
event until then (or reads the norm itself where no next step follows: eval, checkpoint, command,
end)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hrm.model.losses import IGNORE_LABEL_ID, METRIC_KEYS, changed_cell_sums
from hrm.train import distributed as D
from hrm.train.steering import FLAGS

# Host syncs per training step on a GPU (tests/test_host_syncs.py counts them): the copy of the reduced
# vector to the host, nothing else. Batches come from pinned memory (hrm.data.prefetch), the control
# flags are built on the device (Steering.device), SignSGD's small tables skip `unique`
# (hrm.optim.sign_sgd._dense); AdamATan2's step counters live on the CPU.
HOST_SYNCS_PER_STEP = 1

# Slots after the metric sums: loss, non-finite flag, grad norm², param norm², changed [correct, total];
# then the halting histogram (halt_max_steps slots, none with ACT off), then the control flags.
_LOSS, _NONFINITE, _GRAD_SQ, _PARAM_SQ, _CHANGED = (len(METRIC_KEYS) + i for i in range(5))
_HIST0 = _CHANGED + 2


@dataclass
class StepTensors:
    """One rank's per-step numbers, on the device."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    grad_sq: torch.Tensor  # squared L2 norm of the all-reduced gradients (float64)
    changed: torch.Tensor  # float64 [correct, total] over changed cells of the rows that halted
    hist: torch.Tensor  # float64 [halt_max_steps]: halted rows per ACT step; empty with ACT off


@dataclass
class StepResult:
    metrics: dict[str, Any]
    nonfinite: bool
    grad_norm: float
    prev_param_norm: float  # L2 norm of the parameters after the previous optimizer step
    flags: torch.Tensor  # SUM-reduced control flags (FLAGS order)


def forward_backward(
    head: torch.nn.Module,
    carry: Any,
    batch: dict[str, torch.Tensor],
    global_batch: int,
    env: D.DistEnv,
    params: list[torch.Tensor],
    halt_max_steps: int = 1,
) -> tuple[Any, StepTensors]:
    """Returns (new carry, the step's tensors); gradients are all-reduced in place."""
    carry, loss, metrics, outputs, _all_halted = head(carry=carry, batch=batch, return_keys=("logits",))
    (loss / global_batch).backward()
    D.all_reduce_grads(env, params)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        grad_sq = torch.stack([g.detach().double().pow(2).sum() for g in grads]).sum()
    else:
        grad_sq = torch.zeros((), dtype=torch.float64, device=loss.device)
    # The rows the head's metrics count: halted on this call, with at least one label.
    data = carry.current_data
    rows = carry.halted & (data["labels"] != IGNORE_LABEL_ID).any(dim=-1)
    changed = changed_cell_sums(outputs["logits"].argmax(dim=-1), data["inputs"], data["labels"], rows)
    hist = torch.zeros(halt_max_steps if halt_max_steps > 1 else 0, dtype=torch.float64, device=loss.device)
    if halt_max_steps > 1:  # scatter, not bincount: bincount sizes its output on the host (a sync on CUDA)
        idx = (carry.steps.long() - 1).clamp(0, halt_max_steps - 1)
        hist.scatter_add_(0, idx, rows.to(torch.float64))
    return carry, StepTensors(loss, metrics, grad_sq, changed, hist)


def trained_tensors(head: torch.nn.Module) -> list[torch.Tensor]:
    """What the optimizers change: the parameters and the sparse puzzle-embedding tables (buffers)."""
    from hrm.model.sparse_embedding import CastedSparseEmbedding

    out: list[torch.Tensor] = [p for p in head.parameters() if p.requires_grad]
    out += [m.weights for m in head.modules() if isinstance(m, CastedSparseEmbedding)]
    return out


def param_sq(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Squared L2 norm of all `tensors` as a float64 device scalar (no sync)."""
    return torch.stack([torch.linalg.vector_norm(t.detach(), dtype=torch.float64) for t in tensors]).pow(2).sum()


def pack(env: D.DistEnv, t: StepTensors, prev_param_sq: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """One float64 vector per rank; its SUM over ranks carries everything the step reports or decides on."""
    dev = t.loss.device
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    vals = [t.metrics[k].detach().double() if k in t.metrics else zero for k in METRIC_KEYS]
    loss_d = t.loss.detach().double()
    vals.append(loss_d)
    vals.append((~torch.isfinite(loss_d)).double())
    # Gradients (all-reduced) and parameters are the same on every rank: only rank 0 contributes their norms.
    vals.append(t.grad_sq if env.is_main else zero)
    vals.append(prev_param_sq.to(dev, torch.float64) if env.is_main else zero)
    vec = torch.stack([v.reshape(()) for v in vals])
    return torch.cat([vec, t.changed.to(dev), t.hist.to(dev), flags.to(dev, torch.float64)])


def unpack(vec: torch.Tensor, global_batch: int) -> StepResult:
    """The reference's reduction of the SUM-reduced vector (already on the host)."""
    v = vec.tolist()
    count = v[METRIC_KEYS.index("count")]
    div = max(count, 1.0)
    m: dict[str, Any] = {}
    for i, k in enumerate(METRIC_KEYS):
        m[k] = v[i] / global_batch if k.endswith("loss") else v[i] / div
    m["count"] = count
    m["act_steps_mean"] = m.pop("steps")
    m["halted_frac"] = count / global_batch
    m["loss"] = v[_LOSS] / global_batch
    correct, total = v[_CHANGED], v[_CHANGED + 1]
    m["changed_accuracy"] = correct / total if total > 0 else None
    n_hist = len(v) - _HIST0 - len(FLAGS)
    if n_hist > 0:
        m["act_steps_hist"] = [int(x) for x in v[_HIST0 : _HIST0 + n_hist]]
    grad_sq = v[_GRAD_SQ]
    nonfinite = v[_NONFINITE] > 0 or not _finite(v[_LOSS]) or not _finite(grad_sq)
    grad_norm = math.sqrt(grad_sq) if _finite(grad_sq) else float("nan")
    return StepResult(
        metrics=m,
        nonfinite=nonfinite,
        grad_norm=grad_norm,
        prev_param_norm=_sqrt(v[_PARAM_SQ]),
        flags=vec[_HIST0 + n_hist :],
    )


@dataclass
class TrainRecord:
    """The last optimizer step's train event, waiting for its parameter norm (see the module docstring)."""

    step: int = 0
    fields: dict[str, Any] | None = None
    param_sq: torch.Tensor | None = field(default=None, repr=False)

    def hold(self, step: int, fields: dict[str, Any], sq: torch.Tensor) -> None:
        self.step, self.fields, self.param_sq = step, fields, sq

    def carried(self, device: torch.device) -> torch.Tensor:
        """What the next pack() carries: the held norm², or 0 when nothing waits."""
        return self.param_sq if self.param_sq is not None else torch.zeros((), dtype=torch.float64, device=device)

    def complete(self, param_norm: float) -> tuple[int, dict[str, Any]] | None:
        """The held event with `param_norm` filled in (from the next step's reduction), or None."""
        if self.fields is None:
            return None
        self.fields["param_norm"] = param_norm
        out = (self.step, self.fields)
        self.fields, self.param_sq = None, None
        return out

    def complete_now(self) -> tuple[int, dict[str, Any]] | None:
        """Where no step follows (eval, checkpoint, command, end): read the norm with a sync of its own."""
        if self.fields is None or self.param_sq is None:
            return None
        return self.complete(_sqrt(float(self.param_sq)))


def _sqrt(x: float) -> float:
    return math.sqrt(x) if _finite(x) and x >= 0 else float("nan")


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
