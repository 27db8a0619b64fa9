"""Building blocks of HRM-ACT-v1 (HRM-SPEC §1.2): casted linear/embedding, weight-free RMSNorm, RoPE,
fused-qkv attention through SDPA, SwiGLU and the post-norm block.

Numerics follow the reference op for op (fp32 master weights cast to the compute dtype, RMSNorm and RoPE
in fp32). Where grad is off (40 of the 48 layer applications of a training step) some ops run in place
on fresh temporaries: the same arithmetic, fewer allocations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hrm.model.init import lecun_normal_, trunc_normal_
from hrm.run.memory import FLOAT16_REFUSED


def resolve_forward_dtype(name: str | None, device: torch.device | str | None = None) -> torch.dtype:
    """Compute dtype for a config value (see choose_forward_dtype)."""
    return choose_forward_dtype(name, device)[0]


def choose_forward_dtype(name: str | None, device: torch.device | str | None = None) -> tuple[torch.dtype, str]:
    """(compute dtype, why) for a config value. "auto"/None: bfloat16 on CUDA cards that run it natively
    (compute capability 8.0+), float32 on older cards (no fused bf16 attention: SDPA would fall back to
    math attention and store a [B, heads, S, S] matrix per block) and on the CPU (bf16 matmuls there are an
    order of magnitude slower than fp32). float16 is refused: without loss scaling its gradients underflow."""
    if name == "float16":
        raise ValueError(f"forward_dtype: {FLOAT16_REFUSED}")
    if name not in (None, "auto"):
        dtype = getattr(torch, str(name), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"forward_dtype {name!r} is not a torch floating dtype (use float32, bfloat16 or auto)")
        return dtype, f"{name} (set in the config)"
    dev = torch.device(device) if device is not None else torch.get_default_device()
    if dev.type != "cuda":
        return torch.float32, f"auto: float32 on {dev.type}"
    major, minor = torch.cuda.get_device_capability(dev)
    if major >= 8:
        return torch.bfloat16, f"auto: bfloat16 (compute capability {major}.{minor} runs it natively)"
    return torch.float32, (
        f"auto: float32 (compute capability {major}.{minor} < 8.0 has no native bfloat16; "
        "set model.forward_dtype=bfloat16 to force it)"
    )


class CastedLinear(nn.Module):
    """Linear with an fp32 weight cast to the input dtype at use; LeCun truncated-normal init."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(lecun_normal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table stored fp32, looked up in `cast_to`; truncated-normal init with `init_std`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x·(mean(x²)+eps)^(-1/2) over the last dim, in fp32, no gain (the reference's functional norm)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.square().mean(-1, keepdim=True)
    return (h * torch.rsqrt(variance + eps)).to(dtype)


def add_norm(h: torch.Tensor, update: torch.Tensor, eps: float) -> torch.Tensor:
    """rms_norm(h + update). Without grad, `update` (a fresh layer output) is reused as the buffer:
    the same arithmetic (addition commutes exactly; mul by rsqrt in place), two fewer allocations."""
    if torch.is_grad_enabled():
        return rms_norm(h + update, eps)
    x = update.add_(h)
    if x.dtype != torch.float32:
        return rms_norm(x, eps)
    variance = x.square().mean(-1, keepdim=True)
    return x.mul_(variance.add_(eps).rsqrt_())


class RotaryEmbedding(nn.Module):
    """RoPE tables (NeoX rotate-half layout, table = [freqs, freqs]) for positions 0..max_positions-1.

    cos_cached/sin_cached [S, D] are the reference's non-persistent buffers. cos_heads/sin_heads are the
    same expanded over the `n_heads` rotated heads ([S, n, D], contiguous: broadcasting over a middle dim
    is slow on CPU), with the rotate-half sign folded into sin: R(x)·sin = [x2, x1]·[−sin_a, sin_b] exactly.
    """

    def __init__(self, dim: int, max_positions: int, base: float, n_heads: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        t = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        self.cos_cached = nn.Buffer(cos, persistent=False)
        self.sin_cached = nn.Buffer(sin, persistent=False)
        half = dim // 2
        sin_signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        self.cos_heads = nn.Buffer(cos.unsqueeze(1).expand(max_positions, n_heads, dim).contiguous(), persistent=False)
        self.sin_heads = nn.Buffer(
            sin_signed.unsqueeze(1).expand(max_positions, n_heads, dim).contiguous(), persistent=False
        )

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos_heads, self.sin_heads


def _traceable(x: torch.Tensor) -> bool:
    """Whether ops must take forms torch.compile traces without a graph break: always off the CPU (a CUDA
    step may be compiled; the eager cost is the same) and whenever Dynamo is tracing."""
    return x.device.type != "cpu" or torch.compiler.is_compiling()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin in fp32, cast back. x: [B, S, n, D]; tables [S, n, D]."""
    dtype = x.dtype
    x = x.to(torch.float32)
    half = x.shape[-1] // 2
    if torch.is_grad_enabled() or _traceable(x):
        swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)  # [x2, x1]
        if torch.is_grad_enabled():
            return (x * cos + swapped * sin_signed).to(dtype)
        # no grad, CUDA or compiling: one fp32 temporary fewer than the sum of two products
        return (x * cos).addcmul_(swapped, sin_signed).to(dtype)
    # CPU eager without grad: write [x2·(−sin_a), x1·sin_b] straight into one buffer (no cat copy), add in
    # place. Dynamo cannot trace `out=` into a non-contiguous view (a graph break per block), hence CPU only.
    out = x * cos
    rot = torch.empty_like(out)
    torch.mul(x[..., half:], sin_signed[..., :half], out=rot[..., :half])
    torch.mul(x[..., :half], sin_signed[..., half:], out=rot[..., half:])
    return out.add_(rot).to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention: fused qkv [all q heads | all k heads | all v heads], RoPE on q,k,
    SDPA with scale 1/√head_dim, o_proj. No biases."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim, self.num_heads = head_dim, num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * num_heads * head_dim, bias=False)
        self.o_proj = CastedLinear(num_heads * head_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.num_heads
        qkv = self.qkv_proj(x).view(b, s, 3 * h, self.head_dim)  # [B, S, 3H, D]
        if rope is not None:
            qk = apply_rope(qkv[:, :, : 2 * h], *rope)  # q and k rotated together
        else:
            qk = qkv[:, :, : 2 * h]
        q, k, v = qk[:, :, :h], qk[:, :, h:], qkv[:, :, 2 * h :]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(b, s, h * self.head_dim))  # [B,H,S,D] → [B,S,H·D]


class SwiGLU(nn.Module):
    """down(silu(gate) ⊙ up) with a fused gate_up projection (first half gate, second half up)."""

    def __init__(self, hidden_size: int, inner: int) -> None:
        super().__init__()
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inner, bias=False)
        self.down_proj = CastedLinear(inner, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(gate) * up)
        # out-of-place silu (reads the strided half, writes contiguous) then in-place mul: same values,
        # faster on CPU than silu in place on the strided view
        return self.down_proj(F.silu(gate).mul_(up))


class Block(nn.Module):
    """Post-norm transformer block: h ← norm(h + attn(h)); h ← norm(h + mlp(h))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_inner: int, eps: float) -> None:
        super().__init__()
        self.self_attn = Attention(hidden_size, hidden_size // num_heads, num_heads)
        self.mlp = SwiGLU(hidden_size, mlp_inner)
        self.norm_eps = eps

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        h = add_norm(h, self.self_attn(h, rope), self.norm_eps)
        return add_norm(h, self.mlp(h), self.norm_eps)


class SequenceMLPBlock(nn.Module):
    """TRM's `mlp_t` block (post-norm): a SwiGLU across the positions instead of attention, its residual
    norm taken across the positions (the transposed layout), then the hidden SwiGLU. For fixed-size grids;
    it takes the rope argument of Block's interface and ignores it (no position encoding needed)."""

    def __init__(self, seq_len: int, seq_inner: int, hidden_size: int, inner: int, eps: float) -> None:
        super().__init__()
        self.mlp_t = SwiGLU(seq_len, seq_inner)
        self.mlp = SwiGLU(hidden_size, inner)
        self.norm_eps = eps

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        t = h.transpose(1, 2)  # [B, d, S], a view
        # Not add_norm's in-place form, with or without grad: the official TRM's `t + mlp_t(t)` takes t's
        # memory layout ([B, S, d]), so the norm reduces over a strided dim and the result transposes back to
        # a contiguous [B, S, d]. Summing into the MLP's contiguous output rounds the norm differently and
        # feeds the next matmul a strided input (5e-8 relative after one step, chaotic after ten;
        # bench/trm_reference.py).
        h = rms_norm(t + self.mlp_t(t), self.norm_eps).transpose(1, 2)  # [B, S, d]
        return add_norm(h, self.mlp(h), self.norm_eps)


class ReasoningModule(nn.Module):
    """One level (H or L): z ← z + injection, then its blocks in sequence."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, z: torch.Tensor, injection: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        z = z + injection
        for layer in self.layers:
            z = layer(z, rope)
        return z
