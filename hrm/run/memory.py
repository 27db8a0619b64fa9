"""GPU memory of a training step before launch, torch-free: the closed form of what
`hrm.model.memory` measures with the model itself (saved-tensor hooks and a live-bytes count on
meta tensors). tests/test_memory.py holds the two together on tiny and paper shapes.

Per token of the sequence (S = seq_len + the puzzle prefix), b = bytes of the compute dtype, d = hidden,
i = SwiGLU inner, H = heads, per block application that carries gradient (HRM: the last L and H update,
H_layers+L_layers; TRM: the whole last cycle, (L_cycles+1)·L_layers; its mlp_t block saves its own set):

* saved for the backward: the block input, norm-1 output and down-projection input (d·b, d·b, i·b);
  the fused qkv output (3d·b: v is a view of it), RoPE's rotated q|k (2d·b), the attention output (d·b)
  and its float32 log-sum-exp (4·H); gate|up (2i·b) and silu(gate) (i·b); the two RMSNorms' float32
  inputs (2·4d) and rsqrt (2·4). Plus z_H for the heads (d·b) and the float64 stablemax loss
  (≈33 bytes per vocab entry per label);
* temporaries at the peak: with ACT (halt_max_steps > 1) the no-grad Q-target forward runs while all of
  the above is alive; its largest block temporaries (RoPE's float32 q|k copies or the SwiGLU's gate|up
  and silu) plus ~12 d·b of embeddings, carry and level inputs. Without it, the backward's (~8 d·b);
* the carry (z_H, z_L: 2d·b), kept between steps.

Fixed: parameters, their gradients and AdamATan2's two moments (4 × fp32), the compute-dtype copies of
the block weights autograd keeps, the buffers, and on CUDA the runtime (context, cuBLAS workspaces,
allocator slack: CUDA_RUNTIME_BYTES, typical, not measured here).
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm.run.sizes import (
    ModelShape,
    block_parameters,
    count_parameters,
    grad_applications,
    head_dim,
    mlp_inner,
    q_target_forward,
    total_seq_len,
)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# float16 is refused (schema and model): the reference trains bf16 without a loss scale, and in fp16 the
# logit gradients (~1e-6–1e-8 after the 1/global_batch scaling) underflow. A constant loss scale would
# work (neither optimizer cares about gradient scale) but buys nothing over bf16 on the cards that have it.
FLOAT16_REFUSED = (
    "float16 is not supported: without loss scaling its gradients underflow; "
    "use bfloat16 (GPUs of compute capability 8.0+), float32, or auto"
)
CUDA_RUNTIME_BYTES = 1 << 30
# Share of the card a batch may fill: the caching allocator fragments, and peaks move with the data.
FIT_MARGIN = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of training at per-rank batch B: fixed + B · per_example."""

    per_example: int
    fixed: int
    saved_per_example: int  # the part of per_example autograd keeps for the backward

    def total(self, batch: int) -> int:
        return self.fixed + batch * self.per_example

    def largest_batch(self, capacity: int, margin: float = FIT_MARGIN) -> int:
        """Largest per-rank batch whose estimate fits in margin · capacity bytes (0 if none)."""
        room = capacity * margin - self.fixed
        return max(0, int(room // self.per_example))


def compute_dtype(forward_dtype: str, device: str) -> str:
    """The dtype a run computes in: "auto" is bfloat16 on CUDA (assumed a card that runs it natively:
    compute capability 8.0+; the trainer falls back to float32 on older cards) and float32 on CPU."""
    if forward_dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return forward_dtype


def saved_per_token(m: ModelShape, dtype: str) -> float:
    """Bytes autograd keeps for the backward, per sequence position."""
    b = DTYPE_BYTES[dtype]
    d, i, h = m.hidden_size, mlp_inner(m.hidden_size, m.expansion), m.num_heads
    if getattr(m, "mlp_t", False):
        # mlp_t over the transposed [d, S] layout: its gate|up, silu and down input (4·i_t·d·b per
        # example), the float32 norm input and its rsqrt per hidden row; then the hidden MLP as below
        s = total_seq_len(m)
        block = 2 * d * b + 4 * i * b + 8 * d + 4 + (4 * mlp_inner(s, m.expansion) * d * b + 4 * d) / s
    else:
        block = 8 * d * b + 4 * i * b + 8 * d + 4 * h + 8
        if m.pos_encodings != "rope":
            block -= 2 * d * b  # q and k stay views of the qkv output
    loss = (33 * m.vocab_size + 21) * m.seq_len / total_seq_len(m)
    return grad_applications(m) * block + d * b + loss


def temporaries_per_token(m: ModelShape, dtype: str) -> float:
    """Bytes per position alive on top of the saved tensors at the step's peak."""
    b = DTYPE_BYTES[dtype]
    d, i = m.hidden_size, mlp_inner(m.hidden_size, m.expansion)
    if not q_target_forward(m):
        return 8 * d * b
    rope = 2 * d * 4 * (2 if b == 4 else 3) if m.pos_encodings == "rope" else 0
    return max(rope, 3 * i * b) + 12 * d * b


def estimate(m: ModelShape, dtype: str, device: str = "cuda", num_puzzle_identifiers: int = 1) -> MemoryEstimate:
    """Training memory per rank of model `m` in compute dtype `dtype` ("float32" | "bfloat16")."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"no memory model for dtype {dtype!r} (use one of {', '.join(DTYPE_BYTES)})")
    b = DTYPE_BYTES[dtype]
    s, d = total_seq_len(m), m.hidden_size
    carry = 2 * d * b
    saved = saved_per_token(m, dtype) * s
    per_example = saved + (temporaries_per_token(m, dtype) + carry) * s + 8 * m.puzzle_emb_ndim
    params = count_parameters(m)
    casts = grad_applications(m) * block_parameters(m) * b if b != 4 else 0
    rope_tables = 2 * s * (2 * m.num_heads + 1) * head_dim(m) * 4 if m.pos_encodings == "rope" else 0
    buffers = 2 * d * b + rope_tables + num_puzzle_identifiers * m.puzzle_emb_ndim * 4
    fixed = 16 * params + casts + buffers + (CUDA_RUNTIME_BYTES if device == "cuda" else 0)
    return MemoryEstimate(per_example=int(per_example), fixed=int(fixed), saved_per_example=int(saved))


def format_bytes(n: float) -> str:
    """'15.6 GiB', '812 MiB'."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"
