"""HRM-ACT-v1 (HRM-SPEC §1.4–1.7): the inner two-level recurrent model and the ACT wrapper with its carry.

Module attribute order is the reference's, so the state_dict keys, their order and the RNG draw order of
the initialisation all match it (HRM-SPEC §8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hrm.model.config import HRMConfig
from hrm.model.init import trunc_normal_
from hrm.model.layers import (
    Block,
    CastedEmbedding,
    CastedLinear,
    ReasoningModule,
    RotaryEmbedding,
    SequenceMLPBlock,
    resolve_forward_dtype,
)
from hrm.model.sparse_embedding import CastedSparseEmbedding

Batch = dict[str, torch.Tensor]


@dataclass
class InnerCarry:
    z_H: torch.Tensor  # [B, S+P, hidden]
    z_L: torch.Tensor  # [B, S+P, hidden]


@dataclass
class Carry:
    inner_carry: InnerCarry
    steps: torch.Tensor  # int32 [B]: segments run so far for the puzzle in each row
    halted: torch.Tensor  # bool [B]: row finished → it is reset with fresh data on the next call
    current_data: Batch  # the batch rows each slot is working on (labels come from here)


def carry_state_dict(carry: Carry) -> dict[str, torch.Tensor]:
    """Flat tensor dict of a carry (for checkpoints: torch.load(weights_only=True)-safe)."""
    d = {"z_H": carry.inner_carry.z_H, "z_L": carry.inner_carry.z_L, "steps": carry.steps, "halted": carry.halted}
    d.update({f"current_data.{k}": v for k, v in carry.current_data.items()})
    return d


def carry_from_state_dict(d: dict[str, torch.Tensor]) -> Carry:
    """Inverse of carry_state_dict."""
    prefix = "current_data."
    return Carry(
        InnerCarry(d["z_H"], d["z_L"]),
        d["steps"],
        d["halted"],
        {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)},
    )


class HierarchicalReasoningModel_ACTV1_Inner(nn.Module):
    def __init__(self, config: HRMConfig) -> None:
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
            )  # q and k heads
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(
                config.total_seq_len, d, init_std=embed_init_std, cast_to=self.forward_dtype
            )

        self._build_levels(config)

        # Fixed (never trained) initial states, σ = 1
        self.H_init = nn.Buffer(trunc_normal_(torch.empty(d, dtype=self.forward_dtype), std=1), persistent=True)
        self.L_init = nn.Buffer(trunc_normal_(torch.empty(d, dtype=self.forward_dtype), std=1), persistent=True)

        # Q head starts at "almost zero" halting probability: σ(−5) ≈ 0.0067 (the draw above still happened)
        assert self.q_head.bias is not None  # built with bias=True
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def _build_levels(self, config: HRMConfig) -> None:
        """The reasoning modules, H then L (their construction order is part of the RNG draw order)."""
        self.H_level = ReasoningModule(self._blocks(config, config.H_layers))
        self.L_level = ReasoningModule(self._blocks(config, config.L_layers))

    @staticmethod
    def _blocks(config: HRMConfig, n: int) -> list[nn.Module]:
        """n attention blocks, or with mlp_t n sequence-MLP blocks (positions mixed by a SwiGLU)."""
        if config.mlp_t:
            seq, d = config.total_seq_len, config.hidden_size
            return [
                SequenceMLPBlock(seq, config.mlp_t_inner, d, config.mlp_inner, config.rms_norm_eps) for _ in range(n)
            ]
        return [Block(config.hidden_size, config.num_heads, config.mlp_inner, config.rms_norm_eps) for _ in range(n)]

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
            # 1/√2 keeps the forward variance of the sum
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * emb

    def empty_carry(self, batch_size: int) -> InnerCarry:
        shape = (batch_size, self.config.total_seq_len, self.config.hidden_size)
        return InnerCarry(
            torch.empty(shape, dtype=self.forward_dtype, device=self.H_init.device),
            torch.empty(shape, dtype=self.forward_dtype, device=self.H_init.device),
        )

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        """Halted rows restart from H_init/L_init. The kept rows are cast to the compute dtype first: a
        carry saved in another dtype (a float32 CPU checkpoint resumed on a bf16 GPU) would otherwise
        promote `where` to float32 and keep the whole run in float32 from then on."""
        flag = reset.view(-1, 1, 1)
        z_H, z_L = carry.z_H.to(self.H_init.dtype), carry.z_L.to(self.L_init.dtype)
        return InnerCarry(torch.where(flag, self.H_init, z_H), torch.where(flag, self.L_init, z_L))

    def forward(
        self, carry: InnerCarry, batch: Batch, with_logits: bool = True
    ) -> tuple[InnerCarry, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """One ACT segment. Returns (detached new carry, logits [B, S, vocab] or None, (q_halt, q_continue))."""
        cfg = self.config
        rope = self._rope()
        x = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])

        # All updates but the last L and H one run without grad ("1-step gradient")
        with torch.no_grad():
            z_H, z_L = carry.z_H, carry.z_L
            for h_step in range(cfg.H_cycles):
                injection = z_H + x  # z_H is fixed during the L steps of one H cycle
                for l_step in range(cfg.L_cycles):
                    if not (h_step == cfg.H_cycles - 1 and l_step == cfg.L_cycles - 1):
                        z_L = self.L_level(z_L, injection, rope)
                if h_step != cfg.H_cycles - 1:
                    z_H = self.H_level(z_H, z_L, rope)
        z_L = self.L_level(z_L, z_H + x, rope)
        z_H = self.H_level(z_H, z_L, rope)

        new_carry = InnerCarry(z_H.detach(), z_L.detach())
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :] if with_logits else None
        q = self.q_head(z_H[:, 0]).to(torch.float32)  # [B, 2]
        return new_carry, logits, (q[..., 0], q[..., 1])


class HierarchicalReasoningModel_ACTV1(nn.Module):
    """ACT wrapper: keeps a carry of B puzzle slots across calls; halted slots take the next batch's row.
    TRM shares it with its own inner model and halting rule (`_halted`)."""

    Inner: type[HierarchicalReasoningModel_ACTV1_Inner] = HierarchicalReasoningModel_ACTV1_Inner

    def __init__(self, config: HRMConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = self.Inner(config)

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
                halted = halted | self.wants_halt(q_halt, q_continue)
                # Exploration can only delay halting; both draws happen on every train call
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
            if self.training and cfg.halt_max_steps > 1 and self.learns_q_continue():
                # Q target: one more segment from the new carry (no replay buffer, no target network)
                _, _, (next_halt, next_continue) = self.inner(inner_carry, data, with_logits=False)
                outputs["target_q_continue"] = torch.sigmoid(
                    torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue))
                )

        return Carry(inner_carry, steps, halted, data), outputs

    def wants_halt(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """The Q-head's own halting decision, which evaluation's halting histogram uses too: the reference
        HRM halts when halting looks worth more than going on; with no_ACT_continue (TRM's rule, TRM's
        default) when q_halt > 0, the continue output untrained."""
        return (q_halt > 0) if self.config.no_ACT_continue else (q_halt > q_continue)

    def learns_q_continue(self) -> bool:
        """Does training bootstrap Q-continue from a second forward? (The reference HRM: always, with ACT.)"""
        return not self.config.no_ACT_continue
