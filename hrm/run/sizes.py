"""Parameter and FLOP counts of HRM-ACT-v1 from its sizes alone: pure arithmetic, no torch.

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


def round_up(x: int, multiple: int) -> int:
    return -(x // -multiple) * multiple


def mlp_inner(hidden_size: int, expansion: float) -> int:
    """SwiGLU inner width: round(expansion·hidden·2/3) rounded up to a multiple of 256."""
    return round_up(round(expansion * hidden_size * 2 / 3), 256)


def head_dim(m: ModelShape) -> int:
    return m.hidden_size // m.num_heads


def puzzle_emb_len(m: ModelShape) -> int:
    """Prefix positions the puzzle embedding occupies (ceil(ndim / hidden))."""
    return -(m.puzzle_emb_ndim // -m.hidden_size)


def total_seq_len(m: ModelShape) -> int:
    return m.seq_len + puzzle_emb_len(m)


def block_parameters(m: ModelShape) -> int:
    """Weights of one post-norm block: fused qkv, o_proj, fused gate_up, down (no biases, no gains)."""
    d, inner = m.hidden_size, mlp_inner(m.hidden_size, m.expansion)
    attn_out = m.num_heads * head_dim(m)
    return d * 3 * attn_out + attn_out * d + d * 2 * inner + inner * d


def count_parameters(m: ModelShape) -> int:
    """Trainable parameter count (puzzle embedding, H_init and L_init are buffers: not counted)."""
    d = m.hidden_size
    n = (m.H_layers + m.L_layers) * block_parameters(m)
    n += m.vocab_size * d  # embed_tokens
    n += d * m.vocab_size  # lm_head (no bias)
    n += d * 2 + 2  # q_head (with bias)
    if m.pos_encodings == "learned":
        n += total_seq_len(m) * d
    return n


def layer_flops_per_token(m: ModelShape) -> float:
    """Forward FLOPs of one block application for one token: 2·(block weights) for the matmuls plus the
    attention score and value matmuls (2·S·d each, S = total sequence length incl. the puzzle prefix)."""
    return 2.0 * block_parameters(m) + 4.0 * total_seq_len(m) * m.num_heads * head_dim(m)


def flops_per_example(m: ModelShape, train: bool) -> float:
    """Model FLOPs for one example in one ACT call (one segment).

    Forward layer applications per segment: H_cycles·(L_cycles·L_layers + H_layers) (24 at the paper
    config). Train mode adds the second no-grad forward for the Q target (another 24, without lm_head)
    and the backward of the gradient-carrying last L and H update (2× their forward: 8 layers) and of the
    heads. Element-wise work (norms, RoPE, softmax, SiLU) is not counted.
    """
    tokens = total_seq_len(m)
    per_layer = layer_flops_per_token(m) * tokens
    apps = m.H_cycles * (m.L_cycles * m.L_layers + m.H_layers)
    lm_head = 2.0 * m.hidden_size * m.vocab_size * tokens
    q_head = 2.0 * m.hidden_size * 2
    forward = apps * per_layer + lm_head + q_head
    if not train:
        return forward
    q_target = apps * per_layer + q_head
    backward = 2.0 * ((m.L_layers + m.H_layers) * per_layer + lm_head + q_head)
    return forward + q_target + backward
