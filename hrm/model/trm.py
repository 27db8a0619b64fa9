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

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from hrm.model.config import HRMConfig, round_up
from hrm.model.hrm_act import Batch, Carry, InnerCarry
from hrm.model.init import trunc_normal_
from hrm.model.layers import (
    Block,
    CastedEmbedding,
    CastedLinear,
    ReasoningModule,
    RotaryEmbedding,
    SwiGLU,
    add_norm,
    resolve_forward_dtype,
)
from hrm.model.sparse_embedding import CastedSparseEmbedding


@dataclass(kw_only=True)
class TRMConfig(HRMConfig):
    """HRM's fields plus TRM's own; `H_layers` is unused (one network) and `pos_encodings` may be "none"."""

    H_cycles: int = 3
    L_cycles: int = 6
    H_layers: int = 0
    L_layers: int = 2
    mlp_t: bool = False
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

    @property
    def mlp_t_inner(self) -> int:
        """Inner width of the SwiGLU across positions: the same rule as mlp_inner, over total_seq_len."""
        return round_up(round(self.expansion * self.total_seq_len * 2 / 3), 256)


class TRMBlock(nn.Module):
    """Post-norm block whose token mixer is attention (= HRM's Block) or, with mlp_t, a SwiGLU over
    positions whose residual norm is taken across the positions (the transposed layout)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.mlp_t = SwiGLU(cfg.total_seq_len, cfg.mlp_t_inner)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.mlp_inner)
        self.norm_eps = cfg.rms_norm_eps

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        t = h.transpose(1, 2)  # [B, d, S]
        h = add_norm(t, self.mlp_t(t), self.norm_eps).transpose(1, 2)  # [B, S, d]
        return add_norm(h, self.mlp(h), self.norm_eps)


class TinyRecursiveReasoningModel_ACTV1_Inner(nn.Module):
    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        self.forward_dtype = resolve_forward_dtype(config.forward_dtype)
        d = config.hidden_size
        self.embed_scale = math.sqrt(d)
        embed_init_std = 1.0 / self.embed_scale

        # Construction order = RNG draw order (embed, lm_head, q_head, [puzzle_emb: no draw], [pos], blocks)
        self.embed_tokens = CastedEmbedding(config.vocab_size, d, init_std=embed_init_std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(d, config.vocab_size, bias=False)
        self.q_head = CastedLinear(d, 2, bias=True)

        self.puzzle_emb_len = config.puzzle_emb_len
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers,
                config.puzzle_emb_ndim,
                batch_size=config.batch_size,
                init_std=0,
                cast_to=self.forward_dtype,
            )
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(
                config.head_dim, config.total_seq_len, config.rope_theta, n_heads=2 * config.num_heads
            )
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(
                config.total_seq_len, d, init_std=embed_init_std, cast_to=self.forward_dtype
            )

        def block() -> nn.Module:
            if config.mlp_t:
                return TRMBlock(config)
            return Block(d, config.num_heads, config.mlp_inner, config.rms_norm_eps)

        self.L_level = ReasoningModule([block() for _ in range(config.L_layers)])

        self.H_init = nn.Buffer(trunc_normal_(torch.empty(d, dtype=self.forward_dtype), std=1), persistent=True)
        self.L_init = nn.Buffer(trunc_normal_(torch.empty(d, dtype=self.forward_dtype), std=1), persistent=True)

        assert self.q_head.bias is not None  # built with bias=True
        with torch.no_grad():  # Q head starts at σ(−5): "almost never halt"
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def _rope(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.rotary_emb() if self.config.pos_encodings == "rope" else None

    def _input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        emb = self.embed_tokens(inputs.to(torch.int32))  # [B, S, d]
        if self.config.puzzle_emb_ndim > 0:
            d = self.config.hidden_size
            puzzle = self.puzzle_emb(puzzle_identifiers)  # [B, ndim]
            pad = self.puzzle_emb_len * d - puzzle.shape[-1]
            if pad > 0:
                puzzle = nn.functional.pad(puzzle, (0, pad))
            emb = torch.cat((puzzle.view(-1, self.puzzle_emb_len, d), emb), dim=-2)  # [B, P+S, d]
        if self.config.pos_encodings == "learned":
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * emb

    def empty_carry(self, batch_size: int) -> InnerCarry:
        shape = (batch_size, self.config.total_seq_len, self.config.hidden_size)
        device = self.H_init.device
        return InnerCarry(
            torch.empty(shape, dtype=self.forward_dtype, device=device),
            torch.empty(shape, dtype=self.forward_dtype, device=device),
        )

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        flag = reset.view(-1, 1, 1)
        return InnerCarry(torch.where(flag, self.H_init, carry.z_H), torch.where(flag, self.L_init, carry.z_L))

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


class TinyRecursiveReasoningModel_ACTV1(nn.Module):
    """ACT wrapper with HRM's carry and calling convention (so the loss head, trainer and eval take either)."""

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = TinyRecursiveReasoningModel_ACTV1_Inner(config)

    @property
    def puzzle_emb(self) -> CastedSparseEmbedding:
        return self.inner.puzzle_emb

    def initial_carry(self, batch: Batch) -> Carry:
        """Every slot starts halted, so the first call loads the whole batch."""
        b = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return Carry(
            self.inner.empty_carry(b),
            torch.zeros(b, dtype=torch.int32, device=device),
            torch.ones(b, dtype=torch.bool, device=device),
            {k: torch.empty_like(v) for k, v in batch.items()},
        )

    def forward(self, carry: Carry, batch: Batch) -> tuple[Carry, dict[str, torch.Tensor]]:
        cfg = self.config
        halted = carry.halted
        inner_carry = self.inner.reset_carry(halted, carry.inner_carry)
        steps = torch.where(halted, 0, carry.steps)
        data = {
            k: torch.where(halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }

        inner_carry, logits, (q_halt, q_continue) = self.inner(inner_carry, data)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= cfg.halt_max_steps
            halted = is_last
            if self.training and cfg.halt_max_steps > 1:  # evaluation always runs halt_max_steps segments
                halted = halted | ((q_halt > 0) if cfg.no_ACT_continue else (q_halt > q_continue))
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob  # both draws on every call
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if not cfg.no_ACT_continue:  # the Q-continue target: one more segment from the new carry
                    _, _, (next_halt, next_continue) = self.inner(inner_carry, data, with_logits=False)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue))
                    )

        return Carry(inner_carry, steps, halted, data), outputs
