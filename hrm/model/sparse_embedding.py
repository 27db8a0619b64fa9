"""Puzzle-identifier embedding trained sparsely (HRM-SPEC §3).

The table is a persistent fp32 *buffer* (not a parameter: AdamATan2 never sees it). In train mode the
rows of the batch are copied into `local_weights`, a leaf that requires grad, so backward fills
`local_weights.grad` [batch, D]; the SignSGD optimizer then updates only those rows of `weights` using
`local_ids`. Eval reads the table directly and accepts any batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hrm.model.init import trunc_normal_


class CastedSparseEmbedding(nn.Module):
    def __init__(
        self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype
    ) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(
            trunc_normal_(torch.empty(num_embeddings, embedding_dim), std=init_std), persistent=True
        )
        self.local_weights = nn.Buffer(torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.local_ids = nn.Buffer(torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[ids].to(self.cast_to)
        if ids.shape[0] != self.local_ids.shape[0]:
            raise ValueError(
                f"train batch has {ids.shape[0]} rows but the puzzle embedding was built for "
                f"batch_size={self.local_ids.shape[0]}: train batches must be full (set "
                f"model batch_size to the per-rank batch)"
            )
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(self.cast_to)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # Module.to() maps buffers outside no_grad, which would turn the grad-receiving leaf into a
        # non-leaf (its .grad would never be filled); make it a leaf again.
        out = super()._apply(fn, recurse)
        lw = self.local_weights
        if lw.grad_fn is not None or not lw.requires_grad:
            self.local_weights = nn.Buffer(lw.detach().requires_grad_(True), persistent=False)
        return out
