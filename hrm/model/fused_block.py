"""The post-norm block on CPU float32 in the C kernels of `c_kernels`, with a hand-written backward.

Same arithmetic as `layers.Block` (HRM-SPEC §1.2): qkv → RoPE → softmax(q·kᵀ/√D)·v → o_proj → add+norm →
gate_up → silu(gate)·up → down → add+norm. What differs is how it is computed on CPU:

* the qkv projection is one MKL matmul; past it the forward runs in the C kernels (attention per
  (sequence, head) pair in cache; the o, gate_up and down projections with their add+RMSNorm and SwiGLU
  endings fused);
* the softmax probabilities are kept for the backward instead of recomputed;
* the backward is written out (one autograd node per block instead of ~30): its input gradients,
  RMSNorm gradients and attention in the C kernels, the weight gradients on MKL, reusing the forward's
  normalised activations and gate/up values.

Results equal the plain ops to float32 rounding (not bitwise: the exponential and the summation order
differ; tests/test_fused_block.py bounds the difference). `layers.Block` calls it where `applies` says so
(`cpu_path`: model.cpu_kernels, the CPU, the compiler, the sizes); CUDA, other dtypes and torch.compile
keep the plain ops.
"""

from __future__ import annotations

import weakref

import torch

from hrm.model import block_arena, cpu_path

_NO_TABLE = torch.zeros(1, 1)


def applies(x: torch.Tensor, head_dim: int, inner: int) -> bool:
    """True when this block (activation x, head size, SwiGLU width) runs the C kernels: a CPU float32
    activation outside torch.compile, and `cpu_path` allowing C for these sizes (model.cpu_kernels=c where
    that is impossible raises: the trainer refuses such a config before building the model)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    why = cpu_path.why_not_c(head_dim, x.shape[-1], inner)
    if why and cpu_path.mode() == "c":
        raise cpu_path.CpuKernelsUnavailable(f"model.cpu_kernels=c but the C kernels cannot run: {why}")
    return not why


_TABLES: dict[int, tuple[weakref.ref, int, torch.Tensor, torch.Tensor]] = {}


def _tables(rope: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """[S, D] cos and sign-folded sin from the per-head tables RotaryEmbedding hands the blocks. Made once
    per table (the same buffers come back on every call); a table that died, or was written to, is
    made again."""
    if rope is None:
        return _NO_TABLE, _NO_TABLE, False
    cos, sin = rope
    got = _TABLES.get(id(cos))
    if got is None or got[0]() is not cos or got[1] != cos._version + sin._version:
        if len(_TABLES) >= 8:
            _TABLES.clear()
        with torch.inference_mode(False):
            got = _TABLES[id(cos)] = (
                weakref.ref(cos),
                cos._version + sin._version,
                cos[:, 0].detach().clone(memory_format=torch.contiguous_format),
                sin[:, 0].detach().clone(memory_format=torch.contiguous_format),
            )
    return got[2], got[3], True


def _forward(x: torch.Tensor, weights: tuple[torch.Tensor, ...], tables, heads: int, eps: float, keep: bool):
    """Block forward; with `keep` every intermediate is a fresh tensor kept for the backward, without
    it the intermediates live in this thread's arena (`block_arena.views`)."""
    from hrm.model import c_kernels

    w_qkv, w_o, w_gu, w_down = weights
    b, s, d = x.shape
    dim = w_qkv.shape[0] // (3 * heads)
    m, inner = b * s, w_down.shape[1]
    x2 = x.reshape(m, d)
    shapes = block_arena.shapes(b, s, d, heads, dim, inner, keep)
    at = {name: torch.empty(shape) for name, shape in shapes.items()} if keep else block_arena.views(shapes)
    qkv = torch.mm(x2, w_qkv.t(), out=at["qkv"])
    att, h1, act, rstd1, rstd2 = at["att"], at["h1"], at["act"], at["rstd1"], at["rstd2"]
    kept = tuple(at[name] for name in ("q", "k", "v", "probs")) if keep else None
    gu = at["gu"] if keep else None  # without grad silu(gate)·up goes from h1 to act directly
    y = torch.empty(m, d)  # the output: always a fresh tensor
    n = torch.get_num_threads()
    c_kernels.attention(qkv, b, heads, tables, dim**-0.5, att, n, keep=kept)
    c_kernels.linear(att, w_o, h1, n, ending="add_norm", residual=x2, rstd=rstd1, eps=eps)
    c_kernels.linear(h1, w_gu, act, n, tail="swiglu", gu=gu)
    c_kernels.linear(act, w_down, y, n, ending="add_norm", residual=h1, rstd=rstd2, eps=eps)
    q, k, v, probs = kept or (None,) * 4
    return y.view(b, s, d), (x2, q, k, v, probs, att, h1, rstd1, gu, act, y, rstd2)


class _FusedBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_qkv, w_o, w_gu, w_down, tables, heads, eps):
        out, saved = _forward(x, (w_qkv, w_o, w_gu, w_down), tables, heads, eps, keep=True)
        ctx.save_for_backward(*saved, w_qkv, w_o, w_gu, w_down)
        ctx.tables, ctx.heads, ctx.shape = tables, heads, x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from hrm.model import c_kernels

        x2, q, k, v, probs, att, h1, rstd1, gu, act, y, rstd2, w_qkv, w_o, w_gu, w_down = ctx.saved_tensors
        b, s, d = ctx.shape
        heads, dim, m = ctx.heads, q.shape[-1], b * s
        need_x, *need_w = ctx.needs_input_grad[:5]
        n = torch.get_num_threads()

        def times_weight(x: torch.Tensor, w: torch.Tensor, **ending) -> torch.Tensor:
            """x·w for the input gradients (w [out, in] as stored), with the C kernels' `ending`."""
            out = torch.empty(x.shape[0], w.shape[1] if ending.get("tail") != "swiglu_backward" else 2 * w.shape[1])
            c_kernels.linear(x, w, out, n, weight_is="in_out", **ending)
            return out

        ds2 = grad_out.reshape(m, d).clone(memory_format=torch.contiguous_format)  # one copy, ours to overwrite
        c_kernels.rms_norm_backward(y, rstd2, ds2, n)  # d(h1 + mlp)
        d_down = torch.mm(ds2.t(), act) if need_w[3] else None
        dgu = times_weight(ds2, w_down, tail="swiglu_backward", gu=gu)
        d_gu = torch.mm(dgu.t(), h1) if need_w[2] else None
        ds1 = times_weight(dgu, w_gu, ending="add_norm_backward", residual=ds2, normed=h1, rstd=rstd1)  # d(x + attn)
        del dgu
        d_o = torch.mm(ds1.t(), att) if need_w[1] else None
        dqkv = torch.empty(m, 3 * heads * dim)
        c_kernels.attention_backward(times_weight(ds1, w_o), (q, k, v, probs), b, heads, ctx.tables, dim**-0.5, dqkv, n)
        d_qkv = torch.mm(dqkv.t(), x2) if need_w[0] else None
        dx = times_weight(dqkv, w_qkv, ending="add", residual=ds1).view(b, s, d) if need_x else None
        return dx, d_qkv, d_o, d_gu, d_down, None, None, None


def block(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    heads: int,
    eps: float,
) -> torch.Tensor:
    """One block application; x [B, S, d] CPU float32. Builds one autograd node when grad is needed."""
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
        return _FusedBlock.apply(x, *weights, _tables(rope), heads, eps)
    out, _ = _forward(x, weights, _tables(rope), heads, eps, keep=False)
    return out
