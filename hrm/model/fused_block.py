"""The post-norm block on CPU float32 with fused kernels and a hand-written backward.

Same arithmetic as `layers.Block` (HRM-SPEC §1.2): qkv → RoPE → softmax(q·kᵀ/√D)·v → o_proj → add+norm →
gate_up → silu(gate)·up → down → add+norm. What differs is how it is computed on CPU:

* past the qkv projection the forward runs in the C kernels of `c_kernels` where they build (attention
  per (sequence, head) pair in cache; the o, gate_up and down projections with their add+RMSNorm and
  SwiGLU endings fused); otherwise in MKL matmuls with the one-pass numba kernels of `cpu_kernels`
  between them (fast exp, no temporaries), RoPE writing q, k and v straight into the head-major layout
  so that attention is two batched matmuls and an in-place softmax;
* the softmax probabilities are kept for the backward instead of recomputed;
* the backward is written out (one autograd node per block instead of ~30; its input gradients and
  attention in the C kernels where they build, the weight gradients on MKL), reusing the forward's
  normalised activations and gate/up values.

Results equal the plain ops to float32 rounding (not bitwise: the exponential and the summation order
differ; tests/test_fused_block.py bounds the difference). Used by `Block` for CPU float32 tensors unless
HRM_FUSED_CPU=0; CUDA, other dtypes and torch.compile keep the plain ops.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator

import numba
import numpy as np
import torch

from hrm.model import block_arena, c_kernels
from hrm.model import cpu_kernels as K

ENABLED = os.environ.get("HRM_FUSED_CPU", "1") != "0"
_NO_TABLE = np.zeros((1, 1), dtype=np.float32)
_threads = threading.local()


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Turn the fused path on or off inside the block (tests compare it with the plain ops)."""
    global ENABLED
    before, ENABLED = ENABLED, on
    try:
        yield
    finally:
        ENABLED = before


def describe() -> str:
    """Which path CPU float32 blocks take here, for the trainer's log (builds the C kernels if need be)."""
    if not ENABLED:
        return "plain torch ops (HRM_FUSED_CPU=0)"
    why = c_kernels.reason()
    return "fused, C kernels" if not why else f"fused, numba kernels (C kernels not used: {why})"


def applies(x: torch.Tensor) -> bool:
    """True when `x` is a CPU float32 activation and the fused path is on (never under torch.compile)."""
    return ENABLED and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.compiler.is_compiling()


def _a(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _shares_torch_pool() -> bool:
    """True when numba runs on OpenMP (then on torch's own pool, see cpu_kernels). Its other layers
    (workqueue, tbb) start threads of their own that fight torch's spinning OpenMP threads: measured 2x
    slower blocks with workqueue on 2 cores, so the kernels then stay on the calling thread."""
    global _SHARED_POOL
    if _SHARED_POOL is None:
        K.exp(np.zeros(8, np.float32), np.empty(8, np.float32))  # starts numba's threading layer
        _SHARED_POOL = numba.threading_layer() == "omp"
    return _SHARED_POOL


_SHARED_POOL: bool | None = None


def _match_threads() -> None:
    """numba's thread count follows torch's (OMP_NUM_THREADS=1 trainers, torch.set_num_threads)."""
    n = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS) if _shares_torch_pool() else 1
    if getattr(_threads, "n", None) != n:
        numba.set_num_threads(n)
        _threads.n = n


_TABLES: dict[int, tuple[weakref.ref, int, np.ndarray, np.ndarray]] = {}


def _tables(rope: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[np.ndarray, np.ndarray, bool]:
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
        got = _TABLES[id(cos)] = (
            weakref.ref(cos),
            cos._version + sin._version,
            _a(cos[:, 0].contiguous()),
            _a(sin[:, 0].contiguous()),
        )
    return got[2], got[3], True


# Attention runs over groups of about this many (sequence, head) pairs: RoPE, q·kᵀ, softmax and ·v of a
# group stay in cache (64 pairs: 1.7 MiB of probabilities). Hidden 512, batch 32 (256 pairs): the
# attention of a step took 322 ms in groups against 377 ms in one piece (2-core EPYC, same process).
# At hidden 128 (2 heads) a batch of 32 is a single group.
ATTENTION_GROUP = 64


def _attention_in_groups(qkv, at, b: int, heads: int, dim: int, seqs: int, tables, keep: bool) -> None:
    """The numba/MKL attention (where the C kernel is not used): RoPE with the head split, q·kᵀ, softmax
    and ·v, `seqs` sequences at a time, into at["att"]."""
    cos, sin, rotate = tables
    s = qkv.shape[0] // b
    att = at["att"]
    qkv4 = _a(qkv).reshape(b, s, 3 * heads, dim)
    for lo in range(0, b, seqs):
        n = min(b, lo + seqs) - lo
        first = lo if keep else 0  # where this group's sequences sit in q, k, v, probs, att_bmm
        qc, kc, vc = (at[name][first : first + n] for name in ("q", "k", "v"))
        pc, ab = (at[name][first * heads : (first + n) * heads] for name in ("probs", "att_bmm"))
        K.rope_split(qkv4[lo : lo + n], cos, sin, rotate, _a(qc), _a(kc), _a(vc))
        torch.bmm(qc.view(n * heads, s, dim), kc.view(n * heads, s, dim).transpose(1, 2), out=pc)
        K.softmax_(_a(pc).reshape(n * heads * s, s), np.float32(dim**-0.5))
        torch.bmm(pc, vc.view(n * heads, s, dim), out=ab)
        att[lo * s : (lo + n) * s].view(n, s, heads, dim).copy_(ab.view(n, heads, s, dim).transpose(1, 2))


def _forward(x: torch.Tensor, weights: tuple[torch.Tensor, ...], tables, heads: int, eps: float, keep: bool):
    """Block forward; with `keep` every intermediate is a fresh tensor kept for the backward, without
    it the intermediates live in this thread's arena (`block_arena.views`; the attention's are one group's
    worth)."""
    w_qkv, w_o, w_gu, w_down = weights
    b, s, d = x.shape
    dim = w_qkv.shape[0] // (3 * heads)
    m, inner = b * s, w_down.shape[1]
    in_c = c_kernels.applies(dim, d, inner)
    seqs = 0 if in_c else max(1, ATTENTION_GROUP // heads)  # the C kernels need no attention buffers
    x2 = x.reshape(m, d)
    if keep:  # fresh tensors, the whole batch's attention at once (kept for the backward)
        at = {name: torch.empty(shape) for name, shape in block_arena.shapes(b, s, d, heads, dim, inner, b, m).items()}
    else:  # the arena, one attention group's worth of q, k, v, probs, att_bmm
        at = block_arena.views(b, s, d, heads, dim, inner, seqs, 0 if in_c else m)
    qkv = torch.mm(x2, w_qkv.t(), out=at["qkv"])
    att, h1, act, rstd1, rstd2 = at["att"], at["h1"], at["act"], at["rstd1"], at["rstd2"]
    gu = at["gu"] if keep or not in_c else None
    y = torch.empty(m, d)  # the output: always a fresh tensor
    if in_c:
        n = _threads.n
        c_kernels.attention(
            qkv,
            b,
            heads,
            tables,
            dim**-0.5,
            att,
            n,
            keep=tuple(at[name] for name in ("q", "k", "v", "probs")) if keep else None,
        )
        c_kernels.linear(att, w_o, h1, n, ending="add_norm", residual=x2, rstd=rstd1, eps=eps)
        c_kernels.linear(h1, w_gu, act, n, tail="swiglu", gu=gu)
        c_kernels.linear(act, w_down, y, n, ending="add_norm", residual=h1, rstd=rstd2, eps=eps)
    else:
        _attention_in_groups(qkv, at, b, heads, dim, seqs, tables, keep)
        torch.mm(att, w_o.t(), out=h1)
        K.add_rms_norm(_a(x2), _a(h1), _a(h1), _a(rstd1), eps)
        torch.mm(h1, w_gu.t(), out=gu)
        K.silu_mul(_a(gu), _a(act))
        torch.mm(act, w_down.t(), out=y)
        K.add_rms_norm(_a(h1), _a(y), _a(y), _a(rstd2), eps)
    # nothing of the attention is kept without grad
    q, k, v, probs = (at[name] if keep else None for name in ("q", "k", "v", "probs"))
    return y.view(b, s, d), (x2, q, k, v, probs, att, h1, rstd1, gu, act, y, rstd2)


class _FusedBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_qkv, w_o, w_gu, w_down, tables, heads, eps):  # type: ignore[override]
        out, saved = _forward(x, (w_qkv, w_o, w_gu, w_down), tables, heads, eps, keep=True)
        ctx.save_for_backward(*saved, w_qkv, w_o, w_gu, w_down)
        ctx.tables, ctx.heads, ctx.shape = tables, heads, x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        _match_threads()
        x2, q, k, v, probs, att, h1, rstd1, gu, act, y, rstd2, w_qkv, w_o, w_gu, w_down = ctx.saved_tensors
        cos, sin, rotate = ctx.tables
        b, s, d = ctx.shape
        heads = ctx.heads
        dim = q.shape[-1]
        m, bh = b * s, b * heads
        need_x, *need_w = ctx.needs_input_grad[:5]

        in_c, n = c_kernels.applies(dim, d, gu.shape[1] // 2), _threads.n

        def times_weight(x: torch.Tensor, w: torch.Tensor, **ending) -> torch.Tensor:
            """x·w for the input gradients (w [out, in] as stored), with the C kernels' `ending`."""
            out = torch.empty(x.shape[0], w.shape[1] if ending.get("tail") != "swiglu_backward" else 2 * w.shape[1])
            c_kernels.linear(x, w, out, n, weight_is="in_out", **ending)
            return out

        ds2 = grad_out.reshape(m, d).clone(memory_format=torch.contiguous_format)  # one copy, ours to overwrite
        K.rms_norm_backward(_a(y), _a(rstd2), _a(ds2), _a(ds2))  # d(h1 + mlp)
        d_down = torch.mm(ds2.t(), act) if need_w[3] else None
        if in_c:
            dgu = times_weight(ds2, w_down, tail="swiglu_backward", gu=gu)
        else:
            dgu = torch.empty_like(gu)
            K.silu_mul_backward(_a(gu), _a(torch.mm(ds2, w_down)), _a(dgu))
        d_gu = torch.mm(dgu.t(), h1) if need_w[2] else None
        if in_c:  # d(x + attn)
            ds1 = times_weight(dgu, w_gu, ending="add_norm_backward", residual=ds2, normed=h1, rstd=rstd1)
        else:
            ds1 = torch.mm(dgu, w_gu).add_(ds2)
            K.rms_norm_backward(_a(h1), _a(rstd1), _a(ds1), _a(ds1))
        del dgu
        d_o = torch.mm(ds1.t(), att) if need_w[1] else None
        dqkv = torch.empty(m, 3 * heads * dim)
        if in_c:
            c_kernels.attention_backward(
                times_weight(ds1, w_o), (q, k, v, probs), b, heads, ctx.tables, dim**-0.5, dqkv, n
            )
        else:
            datt = torch.mm(ds1, w_o).view(b, s, heads, dim).transpose(1, 2).reshape(bh, s, dim)
            dv = torch.bmm(probs.transpose(1, 2), datt)
            dprobs = torch.bmm(datt, v.view(bh, s, dim).transpose(1, 2))
            K.softmax_backward_(_a(probs).reshape(bh * s, s), _a(dprobs).reshape(bh * s, s), np.float32(dim**-0.5))
            dq = torch.bmm(dprobs, k.view(bh, s, dim))
            dk = torch.bmm(dprobs.transpose(1, 2), q.view(bh, s, dim))
            del dprobs
            K.rope_merge_backward(
                *(_a(t).reshape(b, heads, s, dim) for t in (dq, dk, dv)),
                cos,
                sin,
                rotate,
                _a(dqkv).reshape(b, s, 3 * heads, dim),
            )
        d_qkv = torch.mm(dqkv.t(), x2) if need_w[0] else None
        dx = None
        if need_x:
            dx = (
                times_weight(dqkv, w_qkv, ending="add", residual=ds1) if in_c else torch.mm(dqkv, w_qkv).add_(ds1)
            ).view(b, s, d)
        return dx, d_qkv, d_o, d_gu, d_down, None, None, None


def block(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    heads: int,
    eps: float,
) -> torch.Tensor:
    """One block application; x [B, S, d] CPU float32. Builds one autograd node when grad is needed."""
    _match_threads()
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
        return _FusedBlock.apply(x, *weights, _tables(rope), heads, eps)
    out, _ = _forward(x, weights, _tables(rope), heads, eps, keep=False)
    return out
