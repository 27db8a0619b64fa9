"""The fused block's C kernels (hrm/model/cpu_block.c): the forward past the qkv projection and the
input-gradient half of the backward, built on first use with the system C compiler and loaded through
ctypes. Imported only where the C path is asked for (`cpu_path`).

Why C: what kept a CPU training step from the matmul peak was the memory traffic between the matmuls.
* Attention: per (sequence, head) two 82×82×64 matmuls and a softmax. As batched MKL calls with element-wise
  kernels between them, q, k, v, the scores and the output streamed through memory (hidden 128, batch
  32: ~7 MiB per block); here one pair's q, kᵀ and scores stay in the core's cache from RoPE to the
  output, which is written straight into the o-projection's input layout.
* Linear layers: the same register tile, against weights packed per call (a transpose of the weight:
  nothing cached that an optimizer step could leave stale), with the element-wise work that follows
  done on rows still in cache: add + RMSNorm after the o and down projections, silu(gate)·up after
  gate_up (gate and up packed side by side, so a tile holds both and the [M, 2I] gate_up output is
  never written without grad). On the 2-core EPYC these tiles ran the block's shapes as fast as MKL.

Used when all of these hold (otherwise `reason()` says which did not): Linux on x86-64, torch reporting an
AVX2 or AVX-512 CPU (`torch.backends.cpu.get_cpu_capability()`: its AVX2 level implies FMA), and a C compiler
(`$CC`, else `cc`) that builds the library. The library runs its OpenMP loops on torch's own libgomp (made
global before the library loads): one thread pool, whose threads each kernel call sizes to
`torch.get_num_threads()`. It is cached per source and flags under $HRM_CACHE_DIR/kernels (default
~/.cache/hrm-tui/kernels); a build is written to a temporary name and renamed, so ranks starting together
never load a half-written file.
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

import torch

SOURCE = Path(__file__).with_name("cpu_block.c")
HEADERS = [Path(__file__).with_name("cpu_tile.h")]  # included by SOURCE: part of the cache key
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared"]
CAPABLE = ("AVX2", "AVX512")  # torch's CPU capability levels that include AVX2 and FMA
_P = ctypes.c_void_p
_I, _F = ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "attention_scratch_floats": (ctypes.c_long, [_I, _I]),
    "attention_forward": (None, [_P, _P, _P, _I, _I, _I, _I, _I, _F, _P, _P, _P, _P, _P, _P, _I]),
    "attention_backward_scratch_floats": (ctypes.c_long, [_I, _I]),
    "attention_backward": (None, [_P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _F, _P, _P, _I]),
    "pack_weight": (None, [_P, _I, _I, _I, _P, _I]),
    "linear": (None, [_P, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _P, _F, _I]),
    "rms_norm_backward": (None, [_P, _P, _P, _I, _I, _I]),
    "exp_floats": (None, [_P, _P, ctypes.c_long]),
}

_lock = threading.Lock()
_state: dict[str, object] = {}
_scratch = threading.local()


def _cache_dir() -> Path:
    root = os.environ.get("HRM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hrm-tui"
    )
    return Path(root) / "kernels"


def _share_torch_openmp() -> None:
    """Make torch's bundled libgomp global before the library loads, so that the library's OpenMP calls
    bind to it even where the system libgomp is another file: two OpenMP pools each spin after a parallel
    region, and on a small machine the kernels between two matmuls then fought torch's spinning threads
    (2-4x slower in a training step, measured with the former numba kernels)."""
    bundled = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    if bundled:
        ctypes.CDLL(str(bundled[0]), mode=ctypes.RTLD_GLOBAL)


def _library_path(compiler: str) -> Path:
    """Where the library for this source, this compiler and these flags is cached."""
    source = b"".join(path.read_bytes() for path in (SOURCE, *HEADERS))
    key = hashlib.sha256(source + " ".join([compiler, *FLAGS]).encode()).hexdigest()[:16]
    return _cache_dir() / f"cpu_block-{key}.so"


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *FLAGS, "-o", partial, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-400:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, argtypes
    return lib


def _load() -> ctypes.CDLL | None:
    """The kernel library, or None with `_state["reason"]` saying why it is not used. A cached file that
    does not load (truncated, foreign) is built again."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib, reason = None, ""
        compiler = os.environ.get("CC") or "cc"
        if not (platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")):
            reason = f"needs Linux on x86-64 (this is {platform.system()} on {platform.machine()})"
        elif torch.backends.cpu.get_cpu_capability() not in CAPABLE:
            reason = f"torch reports CPU capability {torch.backends.cpu.get_cpu_capability()} (the kernels need AVX2)"
        else:
            _share_torch_openmp()
            target = _library_path(compiler)
            try:
                if target.exists():
                    try:
                        lib = _open(target)
                    except (OSError, AttributeError):
                        target.unlink()
                if lib is None and shutil.which(compiler) is None:
                    reason = f"no C compiler ({compiler!r} is not on PATH; set CC)"
                elif lib is None:
                    _compile(compiler, target)
                    lib = _open(target)
            except (OSError, AttributeError, RuntimeError, subprocess.SubprocessError) as exc:
                lib, reason = None, f"building {SOURCE.name} into {target.parent} failed: {exc}"
                if isinstance(exc, OSError):
                    reason += " (set HRM_CACHE_DIR to a writable directory)"
        _state["lib"], _state["reason"] = lib, reason
        return lib


def reason() -> str:
    """Why the C kernels cannot run here ("" when they can; builds them if need be)."""
    _load()
    return str(_state["reason"])


def available() -> bool:
    """True when the library builds and loads here (block sizes aside: `cpu_path.why_not_c`)."""
    return _load() is not None


def _scratch_for(name: str, floats: int) -> torch.Tensor:
    """This thread's scratch buffer `name` of at least `floats` floats (kept: fresh pages cost faults)."""
    buffer = getattr(_scratch, name, None)
    if buffer is None or buffer.numel() < floats:
        with torch.inference_mode(False):
            buffer = torch.empty(floats)
        setattr(_scratch, name, buffer)
    return buffer


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _lib(name: str) -> ctypes.CDLL:
    lib = _load()
    assert lib is not None, f"c_kernels.{name} called where the library is not available: {reason()}"
    return lib


def attention(
    qkv: torch.Tensor,
    batch: int,
    heads: int,
    tables: tuple[torch.Tensor, torch.Tensor, bool],
    scale: float,
    att: torch.Tensor,
    threads: int,
    keep: tuple[torch.Tensor, ...] | None = None,
) -> None:
    """att [B·S, H·D] ← the attention of qkv [B·S, 3·H·D] (RoPE per `tables`: [S, D] cos and sign-folded sin, and whether to rotate; see fused_block._tables), on
    `threads` threads. With `keep` = (q, k, v, probs) ([B, H, S, D] three times and [B·H, S, S]) those are
    filled too, for the backward."""
    lib = _lib("attention")
    for t in (qkv, att, *(keep or ())):
        assert t.is_contiguous() and t.dtype == torch.float32, "the C attention takes contiguous float32 tensors"
    cos, sin, rotate = tables
    seq, dim = qkv.shape[0] // batch, qkv.shape[1] // (3 * heads)
    q, k, v, probs = keep if keep is not None else (None,) * 4
    scratch = _scratch_for("attention", threads * lib.attention_scratch_floats(seq, dim))
    lib.attention_forward(
        _ptr(qkv),
        _ptr(cos),
        _ptr(sin),
        int(rotate),
        batch,
        seq,
        heads,
        dim,
        scale,
        _ptr(att),
        _ptr(q),
        _ptr(k),
        _ptr(v),
        _ptr(probs),
        _ptr(scratch),
        threads,
    )


def attention_backward(
    datt: torch.Tensor,
    kept: tuple[torch.Tensor, ...],
    batch: int,
    heads: int,
    tables: tuple[torch.Tensor, torch.Tensor, bool],
    scale: float,
    dqkv: torch.Tensor,
    threads: int,
) -> None:
    """dqkv [B·S, 3·H·D] ← the gradient of `attention` from datt [B·S, H·D] and what it kept (q, k, v,
    probs)."""
    lib = _lib("attention_backward")
    for t in (datt, dqkv, *kept):
        assert t.is_contiguous() and t.dtype == torch.float32, "the C attention takes contiguous float32 tensors"
    cos, sin, rotate = tables
    seq, dim = datt.shape[0] // batch, datt.shape[1] // heads
    scratch = _scratch_for("attention_backward", threads * lib.attention_backward_scratch_floats(seq, dim))
    lib.attention_backward(
        _ptr(datt),
        *(_ptr(t) for t in kept),
        _ptr(cos),
        _ptr(sin),
        int(rotate),
        batch,
        seq,
        heads,
        dim,
        scale,
        _ptr(dqkv),
        _ptr(scratch),
        threads,
    )


_TAILS = {"plain": 0, "swiglu": 1, "swiglu_backward": 2}
_ENDINGS = {None: 0, "add_norm": 1, "add": 2, "add_norm_backward": 3}


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    threads: int,
    *,
    weight_is: str = "out_in",
    tail: str = "plain",
    ending: str | None = None,
    gu: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    normed: torch.Tensor | None = None,
    rstd: torch.Tensor | None = None,
    eps: float = 0.0,
) -> None:
    """A matmul of x [M, K] with `weight` (x·Wᵀ for W [N, K] "out_in", x·W for W [K, N] "in_out") and what
    follows it, on rows still in cache:

    * tail "plain": out [M, N] ← the product, then `ending` — "add_norm": out ← RMSNorm(residual + out)
      with rstd [M] filled; "add": out ← out + residual; "add_norm_backward": out ← the gradient through
      an RMSNorm whose output was `normed` (rstd given) of the gradient out + residual;
    * tail "swiglu" (W = [gate; up] rows): out [M, N/2] ← silu(gate)·up, gu [M, N] ← gate | up if given;
    * tail "swiglu_backward" (the product is dh [M, N]): out [M, 2N] ← d gate | d up, from gu [M, 2N]."""
    lib = _lib("linear")
    for t in (x, weight, out, gu, residual, normed, rstd):
        assert t is None or (t.is_contiguous() and t.dtype == torch.float32), "contiguous float32 tensors only"
    m, k = x.shape
    n = weight.shape[0] if weight_is == "out_in" else weight.shape[1]
    assert weight.shape[1 if weight_is == "out_in" else 0] == k, "weight does not match x"
    layout = 2 if weight_is == "in_out" else 1 if tail == "swiglu" else 0
    packed = _scratch_for("weight", n * k)
    lib.pack_weight(_ptr(weight), n, k, layout, _ptr(packed), threads)
    lib.linear(
        _ptr(x),
        m,
        k,
        _ptr(packed),
        n,
        _TAILS[tail],
        _ENDINGS[ending],
        _ptr(out),
        _ptr(gu),
        _ptr(residual),
        _ptr(normed),
        _ptr(rstd),
        eps,
        threads,
    )


def rms_norm_backward(y: torch.Tensor, rstd: torch.Tensor, grad: torch.Tensor, threads: int) -> None:
    """In place: grad [M, d] ← the gradient through an RMSNorm whose output was y [M, d] (rstd [M])."""
    lib = _lib("rms_norm_backward")
    for t in (y, rstd, grad):
        assert t.is_contiguous() and t.dtype == torch.float32, "contiguous float32 tensors only"
    lib.rms_norm_backward(_ptr(y), _ptr(rstd), _ptr(grad), y.shape[0], y.shape[1], threads)


def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x of a 1-D float32 tensor through the kernels' exponential (for its accuracy test)."""
    n = x.numel()
    padded = torch.zeros(-(-n // 8) * 8)
    padded[:n] = x
    out = torch.empty_like(padded)
    _lib("exp").exp_floats(_ptr(padded), _ptr(out), padded.numel())
    return out[:n]
