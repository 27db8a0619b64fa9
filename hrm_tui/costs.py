"""Rough cost of a preset before it runs: memory and time per step (no torch, no dataset).

Time: FLOPs per step (hrm.run.config.describe) over a sustained throughput. For the CPU that is
measured here once (a few float32 numpy matmuls, ~50 ms) at an efficiency typical of small
transformer steps; for CUDA a nominal figure. Shown with "≈": it tells presets apart, nothing more.
"""

from __future__ import annotations

import functools
import time
from typing import Any

CPU_EFFICIENCY = 0.3  # share of the matmul peak a small HRM step reaches on CPU
CUDA_FLOPS = 1.5e14  # sustained bf16 on a current datacenter GPU (H100-class, ~30-40 % of peak)


@functools.cache
def cpu_flops() -> float:
    """This machine's float32 matmul throughput (FLOP/s), measured once."""
    import numpy as np

    n = 384
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up (thread pool, caches)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.05:
        a @ a
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def estimate(info: dict[str, Any]) -> tuple[str, str]:
    """("≥N MiB", "≈T s") for a describe() result."""
    gpus = max(1, int(info.get("gpus") or 1))
    cuda = info.get("device") == "cuda"
    flops = float(info.get("flops_per_step") or 0.0)
    rate = CUDA_FLOPS * gpus if cuda else cpu_flops() * CPU_EFFICIENCY
    secs = flops / rate if flops else None
    params = int(info.get("num_params") or 0)
    # weights + grads + two Adam moments (fp32), plus the activations of one segment's graph
    batch = int(info.get("global_batch_size") or 1) / gpus
    hidden = int(info.get("hidden_size") or 0)
    layers = int(info.get("layers") or 0)
    per_value = 2 if cuda else 4  # bf16 on CUDA, fp32 on CPU; ~12 saved tensors per layer and token
    acts = batch * int(info.get("seq_len") or 0) * hidden * layers * 12 * per_value
    mem = params * 16 + acts
    step = "?" if secs is None else (f"{secs:.2f} s" if secs < 10 else f"{secs:.0f} s")
    return f"≥{mem / 2**20:,.0f} MiB", f"≈{step}"
