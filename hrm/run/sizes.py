"""Parameter and FLOP counts of HRM-ACT-v1 and TRM from their sizes alone: pure arithmetic, no torch.

One definition each, used by the run config's `describe()` (the app's preset picker), by
`hrm.model.config` (which re-exports them for the model's own code) and by the benchmarks.
`ModelShape` is what they read: `hrm.model.config.HRMConfig` has these attributes, and `Shape`
builds them from a run config without importing the model package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ModelShape(Protocol):
    hidden_size: int
    num_heads: int
    expansion: float
    H_layers: int
    L_layers: int
    H_cycles: int
    L_cycles: int
    halt_max_steps: int
    pos_encodings: str
    puzzle_emb_ndim: int
    seq_len: int
    vocab_size: int


# TRM's sizes beyond HRM's (hrm.model.trm.TRMConfig has them; HRMConfig and a plain Shape default to HRM).
def is_trm(m: ModelShape) -> bool:
    return getattr(m, "arch", "hrm") == "trm"


def _mlp_t(m: ModelShape) -> bool:
    return bool(getattr(m, "mlp_t", False))


def q_target_forward(m: ModelShape) -> bool:
    """Does a training step run the second, no-grad forward for the Q-continue target?"""
    no_continue = getattr(m, "no_ACT_continue", None)
    return m.halt_max_steps > 1 and not (is_trm(m) if no_continue is None else no_continue)


def layer_modules(m: ModelShape) -> int:
    """Blocks that hold weights: H and L modules (HRM), the one L network (TRM)."""
    return m.L_layers if is_trm(m) else m.H_layers + m.L_layers


def forward_applications(m: ModelShape) -> int:
    """Block applications per segment: H_cycles·(L_cycles·L_layers + H_layers) (HRM; 24 at the paper
    config), H_cycles·(L_cycles + 1)·L_layers (TRM: the same network for the z_L and the z_H update)."""
    if is_trm(m):
        return m.H_cycles * (m.L_cycles + 1) * m.L_layers
    return m.H_cycles * (m.L_cycles * m.L_layers + m.H_layers)


def grad_applications(m: ModelShape) -> int:
    """Block applications that carry gradient: the last L and H update (HRM), the whole last cycle (TRM)."""
    return (m.L_cycles + 1) * m.L_layers if is_trm(m) else m.H_layers + m.L_layers


@dataclass(kw_only=True)
class Shape:
    """The sizes of one model on one task (a torch-free stand-in for HRMConfig)."""

    hidden_size: int
    num_heads: int
    expansion: float
    H_layers: int
    L_layers: int
    H_cycles: int
    L_cycles: int
    halt_max_steps: int
    pos_encodings: str
    puzzle_emb_ndim: int
    seq_len: int
    vocab_size: int
    arch: str = "hrm"
    mlp_t: bool = False
    puzzle_emb_len: int | None = None  # TRM: the prefix length it was given
    no_ACT_continue: bool | None = None  # None: the arch's own (TRM true, HRM false)


def round_up(x: int, multiple: int) -> int:
    return -(x // -multiple) * multiple


def mlp_inner(hidden_size: int, expansion: float) -> int:
    """SwiGLU inner width: round(expansion·hidden·2/3) rounded up to a multiple of 256."""
    return round_up(round(expansion * hidden_size * 2 / 3), 256)


def head_dim(m: ModelShape) -> int:
    return m.hidden_size // m.num_heads


def puzzle_emb_len(m: ModelShape) -> int:
    """Prefix positions the puzzle embedding occupies: ceil(ndim / hidden), or TRM's own puzzle_emb_len."""
    given = getattr(m, "puzzle_emb_len", None)
    if is_trm(m) and isinstance(given, int) and given > 0:
        return given
    return -(m.puzzle_emb_ndim // -m.hidden_size)


def total_seq_len(m: ModelShape) -> int:
    return m.seq_len + puzzle_emb_len(m)


def block_parameters(m: ModelShape) -> int:
    """Weights of one post-norm block: fused qkv, o_proj, fused gate_up, down (no biases, no gains)."""
    d, inner = m.hidden_size, mlp_inner(m.hidden_size, m.expansion)
    return mixer_parameters(m) + d * 2 * inner + inner * d


def mixer_parameters(m: ModelShape) -> int:
    """The token mixer of a block: attention (qkv, o), or mlp_t, a SwiGLU across the S positions."""
    if _mlp_t(m):
        s = total_seq_len(m)
        inner_t = mlp_inner(s, m.expansion)
        return s * 2 * inner_t + inner_t * s
    attn_out = m.num_heads * head_dim(m)
    return m.hidden_size * 3 * attn_out + attn_out * m.hidden_size


def count_parameters(m: ModelShape) -> int:
    """Trainable parameter count (puzzle embedding, H_init and L_init are buffers: not counted)."""
    d = m.hidden_size
    n = layer_modules(m) * block_parameters(m)
    n += m.vocab_size * d  # embed_tokens
    n += d * m.vocab_size  # lm_head (no bias)
    n += d * 2 + 2  # q_head (with bias)
    if m.pos_encodings == "learned":
        n += total_seq_len(m) * d
    return n


def layer_flops_per_token(m: ModelShape) -> float:
    """Forward FLOPs of one block application for one token: 2·(block weights) for the matmuls plus the
    attention score and value matmuls (2·S·d each, S = total sequence length incl. the puzzle prefix)."""
    attention = 0.0 if _mlp_t(m) else 4.0 * total_seq_len(m) * m.num_heads * head_dim(m)
    return 2.0 * block_parameters(m) + attention


def flops_per_example(m: ModelShape, train: bool) -> float:
    """Model FLOPs for one example in one ACT call (one segment).

    Forward block applications per segment: `forward_applications`. Train mode adds the second no-grad
    forward for the Q target where the model learns Q-continue (HRM with ACT; another forward without
    lm_head) and the backward of the gradient-carrying applications (2× their forward) and of the heads.
    Element-wise work (norms, RoPE, softmax, SiLU) is not counted.
    """
    tokens = total_seq_len(m)
    per_layer = layer_flops_per_token(m) * tokens
    apps = forward_applications(m)
    lm_head = 2.0 * m.hidden_size * m.vocab_size * tokens
    q_head = 2.0 * m.hidden_size * 2
    forward = apps * per_layer + lm_head + q_head
    if not train:
        return forward
    q_target = apps * per_layer + q_head if q_target_forward(m) else 0.0
    backward = 2.0 * (grad_applications(m) * per_layer + lm_head + q_head)
    return forward + q_target + backward
