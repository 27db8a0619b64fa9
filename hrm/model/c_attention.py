"""The block's attention as one C kernel (hrm/model/attention.c), built on first use with the system C
compiler and loaded through ctypes; the numba path of fused_block stays as the fallback.

Why C: per (sequence, head) the attention is two 82×82×64 matmuls and a softmax. Done as batched MKL
calls with the numba kernels between them, each step streams q, k, v, the scores and the output through
memory (hidden 128, batch 32: ~7 MiB per block); here one pair's q, kᵀ and scores stay in the core's
cache from RoPE to the output, which is written straight into the o-projection's input layout.

Used when all of these hold (otherwise `reason()` says which did not): Linux x86-64 with AVX2 and FMA, a
C compiler (`$CC`, else `cc`) that builds the kernel, torch's OpenMP runtime loaded first (one thread
pool, see cpu_kernels), head dimension a multiple of 16, and HRM_C_ATTENTION is not "0". The library is
cached per source and flags under $HRM_CACHE_DIR (default ~/.cache/hrm-tui); a build is written to a
temporary name and renamed, so ranks starting together never load a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from hrm.model import cpu_kernels  # noqa: F401 - loads torch's libgomp first: the kernel shares its pool

SOURCE = Path(__file__).with_name("attention.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared"]
ENABLED = os.environ.get("HRM_C_ATTENTION", "1") != "0"
_P = ctypes.c_void_p
_ARGS = [_P, _P, _P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float,
         _P, _P, _P, _P, _P, _P, ctypes.c_int]

_lock = threading.Lock()
_state: dict[str, object] = {}
_scratch = threading.local()


def _cache_dir() -> Path:
    root = os.environ.get("HRM_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                            os.path.expanduser("~/.cache"), "hrm-tui")
    return Path(root) / "kernels"


def _cpu_has_avx2_fma() -> bool:
    from llvmlite import binding   # numba's LLVM: the host's features without parsing /proc/cpuinfo

    features = binding.get_host_cpu_features()
    return bool(features.get("avx2") and features.get("fma"))


def _build(compiler: str) -> Path:
    """The cached library for this source and these flags, compiled now if it is not there yet."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *FLAGS]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"attention-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE)], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-400:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _load() -> ctypes.CDLL | None:
    """The kernel library, or None with `_state["reason"]` saying why it is not used."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]   # type: ignore[return-value]
        lib, reason = None, ""
        compiler = os.environ.get("CC") or "cc"
        if not (platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")):
            reason = f"needs Linux on x86-64 (this is {platform.system()} on {platform.machine()})"
        elif not _cpu_has_avx2_fma():
            reason = "the CPU has no AVX2/FMA"
        elif shutil.which(compiler) is None:
            reason = f"no C compiler ({compiler!r} is not on PATH; set CC)"
        else:
            try:
                lib = ctypes.CDLL(str(_build(compiler)))
                lib.attention_scratch_floats.restype = ctypes.c_long
                lib.attention_scratch_floats.argtypes = [ctypes.c_int, ctypes.c_int]
                lib.attention_forward.restype = None
                lib.attention_forward.argtypes = _ARGS
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                lib, reason = None, f"building {SOURCE.name} failed: {exc}"
        _state["lib"], _state["reason"] = lib, reason
        return lib


def reason() -> str:
    """Why the C kernel is not used ("" when it is)."""
    if not ENABLED:
        return "HRM_C_ATTENTION=0"
    _load()
    return str(_state["reason"])


def applies(dim: int) -> bool:
    """True when the C kernel will run the attention of heads `dim` wide (a multiple of 16: the RoPE
    halves are whole 8-float vectors)."""
    return ENABLED and dim % 16 == 0 and _load() is not None


def _scratch_for(seq: int, dim: int, threads: int, lib: ctypes.CDLL) -> torch.Tensor:
    key = (seq, dim, threads)
    if getattr(_scratch, "key", None) != key:
        with torch.inference_mode(False):
            _scratch.buffer = torch.empty(threads * lib.attention_scratch_floats(seq, dim))
        _scratch.key = key
    return _scratch.buffer


def _ptr(t: torch.Tensor | np.ndarray | None) -> int | None:
    if t is None:
        return None
    return t.ctypes.data if isinstance(t, np.ndarray) else t.data_ptr()


def forward(qkv: torch.Tensor, batch: int, heads: int, tables: tuple[np.ndarray, np.ndarray, bool], scale: float,
            att: torch.Tensor, threads: int, keep: tuple[torch.Tensor, ...] | None = None) -> None:
    """att [B·S, H·D] ← the attention of qkv [B·S, 3·H·D] (RoPE per `tables`, see fused_block._tables), on
    `threads` threads. With `keep` = (q, k, v, probs) ([B, H, S, D] three times and [B·H, S, S]) those are
    filled too, for the backward."""
    lib = _load()
    assert lib is not None, "c_attention.forward called where applies() is False"
    for t in (qkv, att, *(keep or ())):
        assert t.is_contiguous() and t.dtype == torch.float32, "the C attention takes contiguous float32 tensors"
    cos, sin, rotate = tables
    seq, dim = qkv.shape[0] // batch, qkv.shape[1] // (3 * heads)
    q, k, v, probs = keep if keep is not None else (None,) * 4
    lib.attention_forward(_ptr(qkv), _ptr(cos), _ptr(sin), int(rotate), batch, seq, heads, dim, scale, _ptr(att),
                          _ptr(q), _ptr(k), _ptr(v), _ptr(probs), _ptr(_scratch_for(seq, dim, threads, lib)),
                          threads)
