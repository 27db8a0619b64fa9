"""TRM, the Tiny Recursive Model (arXiv 2510.04871), beside HRM-ACT-v1 and behind the same ACT interface.

One network (`L_level`, `L_layers` blocks) serves both updates of a cycle: z_L ← f(z_L, z_H + x̃) L_cycles
times, then z_H ← f(z_H, z_L). The first H_cycles − 1 cycles run without grad and the whole last cycle
with grad (HRM keeps only the last L and H update). Halting is on q_halt > 0 alone, with no Q-continue
target and so no second forward. `mlp_t` swaps attention for a SwiGLU across the positions (fixed-size
grids, no position encoding). The puzzle embedding fills `puzzle_emb_len` prefix positions.

Module names, construction order (= RNG draw order) and arithmetic follow the public code, so its
checkpoints load here and the same seed draws the same weights. The names TRM shares with HRM
(`embed_tokens`, `lm_head`, `q_head`, `puzzle_emb`, `L_level`, `H_init`, `L_init`) are HRM's too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import (
    Batch,
    HierarchicalReasoningModel_ACTV1,
    HierarchicalReasoningModel_ACTV1_Inner,
    InnerCarry,
)
from hrm.model.layers import ReasoningModule


@dataclass(kw_only=True)
class TRMConfig(HRMConfig):
    """HRM's fields plus TRM's own; `H_layers` is unused (one network) and `pos_encodings` may be "none"."""

    H_cycles: int = 3
    L_cycles: int = 6
    H_layers: int = 0
    L_layers: int = 2
    puzzle_emb_len: int = 16  # a field here; HRM derives it from puzzle_emb_ndim
    no_ACT_continue: bool = True

    _POSITIVE: ClassVar[tuple[str, ...]] = tuple(n for n in HRMConfig._POSITIVE if n != "H_layers")
    _POS_ENCODINGS: ClassVar[tuple[str, ...]] = ("rope", "learned", "none")
    arch: ClassVar[str] = "trm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.puzzle_emb_len == 0:  # 0 means "as many positions as the embedding needs", as HRM
            self.puzzle_emb_len = -(self.puzzle_emb_ndim // -self.hidden_size)
        if self.puzzle_emb_len < 0:
            raise ValueError(f"model.puzzle_emb_len must be >= 0, got {self.puzzle_emb_len}")
        if self.puzzle_emb_ndim > self.puzzle_emb_len * self.hidden_size:
            raise ValueError(
                f"model.puzzle_emb_ndim ({self.puzzle_emb_ndim}) does not fit in puzzle_emb_len "
                f"({self.puzzle_emb_len}) positions of hidden_size {self.hidden_size}"
            )


class TinyRecursiveReasoningModel_ACTV1_Inner(HierarchicalReasoningModel_ACTV1_Inner):
    """HRM's inner model (embeddings, carry reset) with TRM's one network and its recursion."""

    config: TRMConfig

    def _build_levels(self, config: HRMConfig) -> None:
        """One network (L_layers blocks) for both updates; no H module."""
        assert isinstance(config, TRMConfig)

        self.L_level = ReasoningModule(self._blocks(config, config.L_layers))

    def _cycle(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, rope: tuple | None) -> tuple:
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, rope)
        return self.L_level(z_H, z_L, rope), z_L

    def forward(
        self, carry: InnerCarry, batch: Batch, with_logits: bool = True
    ) -> tuple[InnerCarry, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """One ACT segment. Returns (detached new carry, logits [B, S, vocab] or None, (q_halt, q_continue))."""
        rope = self._rope()
        x = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                z_H, z_L = self._cycle(z_H, z_L, x, rope)
        z_H, z_L = self._cycle(z_H, z_L, x, rope)  # the whole last cycle carries gradient

        new_carry = InnerCarry(z_H.detach(), z_L.detach())
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :] if with_logits else None
        q = self.q_head(z_H[:, 0]).to(torch.float32)  # [B, 2]
        return new_carry, logits, (q[..., 0], q[..., 1])


class TinyRecursiveReasoningModel_ACTV1(HierarchicalReasoningModel_ACTV1):
    """HRM's ACT wrapper (carry, calling convention: the loss head, trainer and eval take either) around
    the TRM inner model; its halting rule is HRM's wrapper's with no_ACT_continue on by default (q_halt > 0,
    no Q-continue target)."""

    Inner = TinyRecursiveReasoningModel_ACTV1_Inner
    config: TRMConfig
