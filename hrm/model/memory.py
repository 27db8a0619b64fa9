"""Training-step memory of HRM-ACT-v1, measured with the model itself on meta tensors.

The model is built on the meta device (no data, no compute: paper shapes cost a fraction of a second)
and one training step runs as the trainer runs it — ACT loss head forward (the 1-step-gradient segment
and, in train mode, the no-grad Q-target segment), backward — under two instruments:

* `torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd keeps for the backward; counted
  once per storage (a view such as v of the fused qkv output keeps the whole storage alive);
* a dispatch mode that counts every storage an op allocates until it is freed and keeps the peak
  (saved tensors, no-grad temporaries, the carry, parameter gradients).

Attention is measured through the fused kernel a GPU runs (flash: q, k, v, out and a float32
log-sum-exp per head and position are saved; no S×S matrix). On meta tensors SDPA would pick the math
kernel, so `fused_attention` routes it to the CPU flash op, whose saved set and output layout are
those of the CUDA flash kernel.

Two batch sizes give the per-example and the fixed part (both are exactly linear in the batch).
`hrm.run.memory` restates the result in closed form for code that must not import torch (the app, the
config); tests/test_memory.py checks that the two agree on tiny and paper shapes.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from hrm.model.config import HRMConfig


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one training step at a given per-rank batch."""

    saved: int  # tensors autograd keeps for the backward (per storage)
    peak: int  # peak of everything the step allocates (saved + temporaries + new carry + grads)
    carry_in: int  # the carry the step starts from (alive throughout, allocated by the previous step)
    state: int  # parameters, buffers, and the optimizer's two fp32 moments per parameter


@dataclass(frozen=True)
class MemoryEstimate:
    """Linear in the per-rank batch: total(B) = fixed + B · per_example."""

    saved_per_example: int
    per_example: int  # peak activations + carry per example
    fixed: int  # state + the batch-independent part of the peak (weight casts, gradients)

    def total(self, batch: int) -> int:
        return self.fixed + batch * self.per_example


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of storages created by ops while they live; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._seen:
                continue
            self._seen.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def reset_peak(self) -> None:
        self.peak = self.live


def _flash_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """SDPA through the flash kernel's op (see the module docstring)."""
    original: Callable[..., torch.Tensor] = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_sdpa  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _meta_batch(cfg: HRMConfig, batch: int) -> dict[str, torch.Tensor]:
    def ids(*shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.int32, device="meta")

    return {
        "inputs": ids(batch, cfg.seq_len),
        "labels": ids(batch, cfg.seq_len),
        "puzzle_identifiers": ids(batch),
    }


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s._cdata] = s.nbytes()
    return sum(seen.values())


def measure_step(cfg: HRMConfig, batch: int, loss_type: str = "stablemax_cross_entropy") -> StepMemory:
    """One training step of `cfg` (forward_dtype = the compute dtype) at per-rank `batch`, on meta tensors."""
    from hrm.model.factory import build_model
    from hrm.model.hrm_act import carry_state_dict
    from hrm.model.losses import ACTLossHead

    cfg = type(cfg).from_dict(cfg.to_dict(), batch_size=batch)
    with torch.device("meta"):
        head = ACTLossHead(build_model(cfg), loss_type=loss_type).train()
    params = list(head.parameters())
    state = _storage_bytes(params + list(head.buffers())) + 2 * sum(p.numel() * 4 for p in params)
    data = _meta_batch(cfg, batch)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with fused_attention(), _LiveBytes() as live:
        carry = head.initial_carry(data)
        carry, loss, *_ = head(carry=carry, batch=data)  # the step before: leaves a carry and grads
        (loss / batch).backward()
        del loss
        for p in params:  # the optimizer's zero_grad(set_to_none=True): this step allocates its own
            p.grad = None
        carry_in = _storage_bytes(list(carry_state_dict(carry).values()))
        live.reset_peak()
        start = live.live
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            carry, loss, *_ = head(carry=carry, batch=data)
        saved_bytes = _storage_bytes(saved) - _storage_bytes([t for t in saved if _is_state(t, head)])
        saved.clear()
        (loss / batch).backward()
        peak = live.peak - start
    return StepMemory(saved=saved_bytes, peak=peak, carry_in=carry_in, state=state)


def _is_state(t: torch.Tensor, head: torch.nn.Module) -> bool:
    """A saved tensor that is a parameter or buffer itself (already counted as state)."""
    key = t.untyped_storage()._cdata
    return any(p.untyped_storage()._cdata == key for p in (*head.parameters(), *head.buffers()))


def measured_total(cfg: HRMConfig, batch: int, loss_type: str = "stablemax_cross_entropy") -> int:
    """Peak bytes of training `cfg` at per-rank `batch`: state + the carry it starts from + the step's peak
    (no CUDA runtime: that is the device's, not the model's)."""
    m = measure_step(cfg, batch, loss_type)
    return m.state + m.carry_in + m.peak


def estimate(
    cfg: HRMConfig, loss_type: str = "stablemax_cross_entropy", batches: tuple[int, int] = (64, 128)
) -> MemoryEstimate:
    """fixed + B · per_example from two measured batches (large enough that activations set the peak)."""
    lo, hi = (measure_step(cfg, b, loss_type) for b in batches)
    span = batches[1] - batches[0]
    per_example = ((hi.peak + hi.carry_in) - (lo.peak + lo.carry_in)) // span
    return MemoryEstimate(
        saved_per_example=(hi.saved - lo.saved) // span,
        per_example=per_example,
        fixed=lo.state + lo.peak + lo.carry_in - batches[0] * per_example,
    )
