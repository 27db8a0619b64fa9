"""Fused float32 CPU kernels (numba) for the element-wise work of a block: SwiGLU, add+RMSNorm, RoPE with
the head split, softmax — each forward and backward, each one pass over its rows.

Why: on CPU the block's matmuls run near the machine's matmul peak, and what keeps a training step from
it is the element-wise work between them — torch's `exp` (and so `silu` and `softmax`) costs ~0.5 ns an
element on the 2-core EPYC, and every unfused op is another pass over a tensor and another allocation.
Here the exponential is a Cephes-style polynomial (≤ 2 ulp against float64, checked in
tests/test_fused_block.py) that the compiler vectorises, and each kernel reads and writes its data once.

Every kernel splits its outer loop (rows) across threads and keeps each row's arithmetic in one thread,
so results do not depend on the thread count. Kernels compile on first use (a few seconds) and are
cached on disk. All arrays are C-contiguous float32 numpy views of torch tensors (no copies).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


def _share_torch_openmp() -> None:
    """Run these kernels on torch's own OpenMP runtime.

    numba's OpenMP layer links the system libgomp, torch wheels ship their own copy: two thread pools
    that each spin for a while after a parallel region, so on a small machine every kernel between two
    matmuls fought torch's spinning threads (kernels 2-4x slower in a training step). Making torch's
    libgomp global before numba starts its threads binds numba's OpenMP calls to it: one pool.
    """
    lib = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    if sys.platform.startswith("linux") and lib.exists():
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


_share_torch_openmp()

# Fast-math without reassociation for the exponential (Cody–Waite reduction must stay as written);
# reductions (row sums, maxima) add `reassoc` so that they vectorise.
_FM = {"nnan", "ninf", "nsz", "contract", "arcp"}
_FM_REDUCE = _FM | {"reassoc"}
_PARALLEL = dict(parallel=True, cache=True, nogil=True)


@intrinsic
def _bits_to_f32(typingctx, bits):  # noqa: ARG001 - numba intrinsic signature
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(fastmath=_FM, cache=True)
def _exp(x):
    """expf: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial, 2^n through the exponent bits.
    Arguments are clamped to [-87, 88] (no overflow to inf; e^-87 ≈ 1.6e-38 stands in for smaller)."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    return p * _bits_to_f32((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(fastmath=_FM, **_PARALLEL)
def exp(x, out):
    """out = e^x elementwise over a 1-D array (exposed for the accuracy test)."""
    for i in prange(x.shape[0]):
        out[i] = _exp(x[i])


# --- SwiGLU: h = silu(gate) ⊙ up with gu = [gate | up] -------------------------------------------------
@njit(fastmath=_FM, **_PARALLEL)
def silu_mul(gu, out):
    """out[m] = silu(gu[m, :I]) * gu[m, I:]  (gu [M, 2I], out [M, I])."""
    rows, inner = out.shape
    for m in prange(rows):
        for j in range(inner):
            g = gu[m, j]
            out[m, j] = g / (np.float32(1.0) + _exp(-g)) * gu[m, inner + j]


@njit(fastmath=_FM, **_PARALLEL)
def silu_mul_backward(gu, dh, dgu):
    """Gradients of h = silu(g)·u: dgu[:, :I] = dh·u·σ(g)·(1 + g·(1 − σ(g))), dgu[:, I:] = dh·silu(g)."""
    rows, inner = dh.shape
    one = np.float32(1.0)
    for m in prange(rows):
        for j in range(inner):
            g = gu[m, j]
            u = gu[m, inner + j]
            s = one / (one + _exp(-g))
            d = dh[m, j]
            dgu[m, j] = d * u * s * (one + g * (one - s))
            dgu[m, inner + j] = d * g * s


# --- residual add + RMSNorm (no gain) ---------------------------------------------------------------------
@njit(fastmath=_FM_REDUCE, **_PARALLEL)
def add_rms_norm(h, u, out, rstd, eps):
    """out = (h + u)·rstd with rstd = (mean((h + u)²) + eps)^(-1/2) per row; `out` may be `u`."""
    rows, d = h.shape
    inv_d = np.float32(1.0 / d)
    for m in prange(rows):
        ss = np.float32(0.0)
        for j in range(d):
            s = h[m, j] + u[m, j]
            out[m, j] = s
            ss += s * s
        r = np.float32(1.0) / np.sqrt(ss * inv_d + np.float32(eps))
        rstd[m] = r
        for j in range(d):
            out[m, j] *= r


@njit(fastmath=_FM_REDUCE, **_PARALLEL)
def rms_norm_backward(y, rstd, dy, dx):
    """dx = rstd·(dy − y·mean(dy·y)) for y = x·rstd; `dx` may be `dy`."""
    rows, d = y.shape
    inv_d = np.float32(1.0 / d)
    for m in prange(rows):
        t = np.float32(0.0)
        for j in range(d):
            t += dy[m, j] * y[m, j]
        t *= inv_d
        r = rstd[m]
        for j in range(d):
            dx[m, j] = r * (dy[m, j] - y[m, j] * t)


# --- RoPE on q and k, with the [B, S, heads, D] → [B, heads, S, D] split --------------------------------
@njit(fastmath=_FM, **_PARALLEL)
def rope_split(qkv, cos, sin_signed, rotate, q, k, v):
    """qkv [B, S, 3H, D] → q, k, v [B, H, S, D]; q and k rotated (NeoX rotate-half) when `rotate`.

    sin_signed is the table with the rotate-half sign folded in ([−sin, sin] over the two halves), so
    out[:half] = x1·cos + x2·sin_signed[:half] and out[half:] = x2·cos + x1·sin_signed[half:]."""
    batch, seq, three_h, dim = qkv.shape
    heads = three_h // 3
    half = dim // 2
    for row in prange(batch * seq):
        b = row // seq
        s = row % seq
        for h in range(heads):
            for j in range(dim):
                v[b, h, s, j] = qkv[b, s, 2 * heads + h, j]
            for which in range(2):
                src = qkv[b, s, which * heads + h]
                dst = q[b, h, s] if which == 0 else k[b, h, s]
                if rotate:
                    for j in range(half):
                        dst[j] = src[j] * cos[s, j] + src[half + j] * sin_signed[s, j]
                        dst[half + j] = src[half + j] * cos[s, half + j] + src[j] * sin_signed[s, half + j]
                else:
                    for j in range(dim):
                        dst[j] = src[j]


@njit(fastmath=_FM, **_PARALLEL)
def rope_merge_backward(dq, dk, dv, cos, sin_signed, rotate, dqkv):
    """The transpose of rope_split: dq, dk (un-rotated) and dv [B, H, S, D] into dqkv [B, S, 3H, D].

    Written out like rope_split rather than sharing a helper with it: the shared-helper version did not
    vectorise as well (the kernel ran 2x slower)."""
    batch, heads, seq, dim = dq.shape
    half = dim // 2
    for row in prange(batch * seq):
        b = row // seq
        s = row % seq
        for h in range(heads):
            for j in range(dim):
                dqkv[b, s, 2 * heads + h, j] = dv[b, h, s, j]
            for which in range(2):
                src = dq[b, h, s] if which == 0 else dk[b, h, s]
                dst = dqkv[b, s, which * heads + h]
                if rotate:
                    for j in range(half):
                        dst[j] = src[j] * cos[s, j] + src[half + j] * sin_signed[s, half + j]
                        dst[half + j] = src[half + j] * cos[s, half + j] + src[j] * sin_signed[s, j]
                else:
                    for j in range(dim):
                        dst[j] = src[j]


# --- softmax over the rows of attention scores ------------------------------------------------------------
@njit(fastmath=_FM_REDUCE, **_PARALLEL)
def softmax_(scores, scale):
    """In place: each row x ← softmax(scale·x) (scores [R, N])."""
    rows, n = scores.shape
    for i in prange(rows):
        mx = scores[i, 0]
        for j in range(1, n):
            mx = max(mx, scores[i, j])
        total = np.float32(0.0)
        for j in range(n):
            e = _exp((scores[i, j] - mx) * scale)
            scores[i, j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(n):
            scores[i, j] *= inv


@njit(fastmath=_FM_REDUCE, **_PARALLEL)
def softmax_backward_(probs, dprobs, scale):
    """In place: dprobs ← scale·p⊙(dp − Σ p⊙dp), the gradient w.r.t. the unscaled scores."""
    rows, n = probs.shape
    for i in prange(rows):
        t = np.float32(0.0)
        for j in range(n):
            t += probs[i, j] * dprobs[i, j]
        for j in range(n):
            dprobs[i, j] = scale * probs[i, j] * (dprobs[i, j] - t)
