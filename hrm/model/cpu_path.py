"""Which path the transformer blocks take on CPU float32: the fused C kernels (`fused_block`) or the plain
torch ops of `layers.Block` (what CUDA, bf16 and torch.compile always run).

`model.cpu_kernels` chooses (config.yaml and every checkpoint record it):
  * auto — the C kernels where they can run, else the plain ops, the log saying why;
  * c    — the C kernels or a refusal to start (the message says why and how to fall back);
  * off  — the plain ops (bitwise the reference's op sequence).
The C kernels can run when torch reports an AVX2 (or AVX-512) CPU, a C compiler builds them (`c_kernels`)
and the head, hidden and SwiGLU sizes are multiples of 16. The two paths agree to float32 rounding, not
bitwise: a resume that changes path is not the uninterrupted run (`resume_mismatch`).

Nothing here loads the compiler machinery: `c_kernels` is imported the first time the C path is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

Mode = Literal["auto", "c", "off"]
MODES: tuple[Mode, ...] = ("auto", "c", "off")
C, PLAIN = "c", "plain"  # the two paths, as checkpoints record them

_mode: Mode = "auto"


class CpuKernelsUnavailable(RuntimeError):
    """model.cpu_kernels=c where the C kernels cannot run."""


@dataclass(frozen=True)
class BlockPath:
    """The path a model's blocks take in this process, and why not the C kernels when they are not used."""

    path: str  # C or PLAIN
    reason: str = ""

    def describe(self) -> str:
        return "fused, C kernels" if self.path == C else f"plain torch ops ({self.reason})"


_selected: BlockPath | None = None


def use(mode: str) -> None:
    """Set the process's choice (the trainer passes model.cpu_kernels)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"model.cpu_kernels must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode


def mode() -> Mode:
    return _mode


@contextlib.contextmanager
def forced(mode: str) -> Iterator[None]:
    """The choice `mode` inside the block (tests and bench/step.py compare the paths in one process)."""
    before = _mode
    use(mode)
    try:
        yield
    finally:
        use(before)


def why_not_c(head_dim: int, hidden: int, inner: int) -> str:
    """Why blocks of these sizes do not run the C kernels under the current choice ("" when they do)."""
    if _mode == "off":
        return "model.cpu_kernels=off"
    if any(n % 16 for n in (head_dim, hidden, inner)):
        return f"head size {head_dim}, hidden {hidden} and SwiGLU width {inner} are not all multiples of 16"
    from hrm.model import c_kernels

    return c_kernels.reason()


def select(
    mode: str,
    head_dim: int,
    hidden: int,
    inner: int,
    device: torch.device,
    dtype: torch.dtype,
    compiled: bool = False,
) -> BlockPath:
    """Set `mode` and resolve it for one model's sizes, device and compute dtype (`compiled`: the training
    step is torch.compile'd); remembered as the process's path (`selected`, written into checkpoints).
    Raises CpuKernelsUnavailable for an unsatisfiable `c`."""
    global _selected
    if device.type != "cpu" or dtype != torch.float32:
        chosen = BlockPath(PLAIN, f"blocks on {device.type} in {str(dtype).removeprefix('torch.')} use the torch ops")
    else:
        with forced(mode):
            why = why_not_c(head_dim, hidden, inner)
        if why and mode == "c":
            raise CpuKernelsUnavailable(
                f"model.cpu_kernels=c but the C kernels cannot run: {why}; "
                "set model.cpu_kernels=auto (plain torch ops where C cannot run) or off"
            )
        if compiled and not why:  # evaluation, not compiled, still takes the C kernels
            why = "train.compile=true: the compiled training step traces the torch ops"
        chosen = BlockPath(PLAIN, why) if why else BlockPath(C)
    use(mode)
    _selected = chosen
    return chosen


def selected() -> BlockPath | None:
    """The path `select` last chose in this process (None before any)."""
    return _selected


def resume_mismatch(saved: str | None, now: BlockPath) -> str:
    """What to tell the user when a checkpoint written on path `saved` resumes on `now` ("" when the same)."""
    if saved == now.path:
        return ""
    names = {C: "the C kernels", PLAIN: "the plain torch ops"}
    was = names.get(str(saved), "an unrecorded path (written before model.cpu_kernels existed)")
    return (
        f"the checkpoint's blocks ran {was}, this process runs {names[now.path]}"
        + (f" ({now.reason})" if now.reason else "")
        + ": the two agree to float32 rounding, so the resumed run is not bitwise the uninterrupted one"
    )
