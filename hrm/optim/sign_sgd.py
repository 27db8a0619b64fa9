"""Sign-SGD for the sparse puzzle embedding, across ranks (HRM-SPEC §3).

The puzzle embedding (`CastedSparseEmbedding`) keeps three buffers: ``weights`` [N_ids, D] (the
table, persistent), ``local_weights`` [B_local, D] (this batch's rows; requires grad, so autograd
fills its ``.grad``) and ``local_ids`` [B_local]. Each step:

1. world > 1: all-gather every rank's local grads and ids, so all ranks apply the same update;
2. take the unique ids and sum the grads of rows that share an id (scatter-add);
3. for those rows only: w ← w·(1 − η·λ) − η·sign(g).

Rows not in the batch are untouched (lazy decay). Adam ≈ SignSGD when the gradient is very sparse,
and the sign makes the 1/global_batch loss scaling irrelevant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["CastedSparseEmbeddingSignSGD_Distributed", "sparse_sign_sgd_update"]


class CastedSparseEmbeddingSignSGD_Distributed(Optimizer):
    """Optimizer over a sparse embedding's three buffers (``weights``, ``local_weights``, ``local_ids``).

    The buffers are told apart as the reference does: the one that requires grad holds the local
    rows, the 1-D one holds the ids, the other 2-D one is the table. It keeps no state.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        world_size: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"SignSGD: lr must be >= 0, got {lr!r}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"SignSGD: weight_decay must be >= 0, got {weight_decay!r}")
        if int(world_size) < 1:
            raise ValueError(f"SignSGD: world_size must be >= 1, got {world_size!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, world_size=int(world_size))
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The world size belongs to this process, not to the checkpoint: a 2-rank run resumed on
        # 1 rank must not try to all-gather.
        world_sizes = [g["world_size"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, ws in zip(self.param_groups, world_sizes):
            group["world_size"] = ws

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            local_grad, local_ids, weights = _split_buffers(group["params"])
            if local_grad is None:
                continue  # the embedding was not used since the last zero_grad
            sparse_sign_sgd_update(
                local_grad,
                local_ids,
                weights,
                lr=float(group["lr"]),
                weight_decay=float(group["weight_decay"]),
                world_size=group["world_size"],
            )
        return loss


def _split_buffers(params: list[Tensor]) -> tuple[Tensor | None, Tensor, Tensor]:
    if len(params) != 3:
        raise ValueError(
            "SignSGD expects exactly the sparse embedding's 3 buffers (weights, local_weights, "
            f"local_ids); got {len(params)} tensors. Pass `puzzle_emb.buffers()`."
        )
    local_grad = local_ids = weights = None
    for p in params:
        if p.requires_grad:
            local_grad = p.grad
        elif p.ndim == 1:
            local_ids = p
        elif p.ndim == 2:
            weights = p
    if local_ids is None or weights is None:
        raise ValueError(
            "SignSGD: could not find the ids (1-D) and the table (2-D, no grad) among the buffers; "
            f"got shapes {[tuple(p.shape) for p in params]}"
        )
    return local_grad, local_ids, weights


def _all_gather(t: Tensor, world_size: int) -> Tensor:
    """Concatenate `t` from every rank along dim 0 (rank order), marked for the trainer's collective
    watch (so a rank that never arrives here is named before NCCL's timeout aborts the run)."""
    from hrm.train.dist_watch import collective  # torch-free, no cycle: only marks the wait

    out = torch.empty((world_size * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    with collective("puzzle-embedding all-gather", blocking=not t.is_cuda):
        _gather_into(out, t.contiguous())
    return out


# torch 2.13 renamed all_gather_into_tensor (now deprecated, same signature); we support torch >= 2.4.
_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def sparse_sign_sgd_update(
    local_grad: Tensor,
    local_ids: Tensor,
    weights: Tensor,
    *,
    lr: float,
    weight_decay: float,
    world_size: int = 1,
) -> None:
    """Apply one sign-SGD step to the rows of `weights` named in the (gathered) batch ids."""
    dim = local_grad.shape[1]
    all_grad, all_ids = local_grad, local_ids
    if world_size > 1:
        all_grad = _all_gather(local_grad, world_size)
        all_ids = _all_gather(local_ids, world_size)

    if _dense(weights):
        _dense_update(all_grad, all_ids, weights, lr, weight_decay)
        return
    ids, inverse = all_ids.unique(return_inverse=True)  # ids [K], inverse [world·B]
    grad = torch.zeros((ids.shape[0], dim), dtype=all_grad.dtype, device=all_grad.device)
    grad.scatter_add_(0, inverse.unsqueeze(-1).expand(-1, dim), all_grad)

    rows = ids.long()
    p = weights[rows]
    p.mul_(1.0 - lr * weight_decay).add_(torch.sign(grad).to(p.dtype), alpha=-lr)
    weights[rows] = p


# Tables up to this many elements (64 MiB of float32) take the dense update on a GPU.
DENSE_MAX_ELEMENTS = 1 << 24


def _dense(weights: Tensor) -> bool:
    """`unique` has a data-dependent output size: on a GPU it waits for the device (a host sync every
    step). A small table (Sudoku and Maze have one puzzle identifier) is cheaper updated whole, masked
    to the rows in the batch; a large one (ARC) keeps the reference's unique. CPU keeps the reference."""
    return weights.is_cuda and weights.numel() <= DENSE_MAX_ELEMENTS


def _dense_update(all_grad: Tensor, all_ids: Tensor, weights: Tensor, lr: float, weight_decay: float) -> None:
    """The same update without `unique`: gradients summed per id into a table-sized buffer in the
    batch's order (as the scatter-add above), the same arithmetic on every row, kept only for the
    rows in the batch. Equal to the reference bitwise where the sums are ordered (CPU; tested);
    on a GPU both forms sum with atomics."""
    rows = all_ids.long()
    grad = torch.zeros((weights.shape[0], all_grad.shape[1]), dtype=all_grad.dtype, device=all_grad.device)
    grad.index_add_(0, rows, all_grad)
    seen = torch.zeros(weights.shape[0], dtype=torch.bool, device=weights.device).index_fill_(0, rows, True)
    p = weights.clone()
    p.mul_(1.0 - lr * weight_decay).add_(torch.sign(grad).to(p.dtype), alpha=-lr)
    weights.copy_(torch.where(seen.unsqueeze(-1), p, weights))
