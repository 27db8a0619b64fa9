"""Rough cost of a preset before it runs: memory per GPU and time per step (no torch, no dataset).

Time: FLOPs per step (hrm.run.config.describe) over a sustained throughput. For the CPU that is
measured here once per app start: the best of a few float32 matmuls small enough to stay on one
thread, timed in that thread's own CPU time, so a busy machine (other processes taking the cores)
does not move it; times the cores we may use, at an efficiency typical of small transformer steps
(calibrated on sudoku-cpu: about 0.15-0.25 s a step on 2 quiet cores). For CUDA a nominal figure.
Shown with "≈": it tells presets apart, nothing more.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from hrm.run.memory import FIT_MARGIN, format_bytes

CPU_EFFICIENCY = 0.6  # share of the per-core matmul peak × cores a small HRM step reaches on CPU
CUDA_FLOPS = 1.5e14  # sustained bf16 on a current datacenter GPU (H100-class, ~30-40 % of peak)
_PROBE_N = 64  # below BLAS's threading threshold: the matmul runs in the calling thread
_PROBE_TRIALS = 5
_PROBE_CPU_S = 0.01  # thread CPU time per trial


@functools.cache
def cpu_core_flops() -> float:
    """One core's float32 matmul throughput (FLOP/s): the best of a few trials, in thread CPU time."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((_PROBE_N, _PROBE_N), dtype=np.float32)
    a @ a  # warm-up (caches, BLAS dispatch)
    best = 0.0
    for _ in range(_PROBE_TRIALS):
        reps, c0 = 0, time.thread_time()
        while (used := time.thread_time() - c0) < _PROBE_CPU_S:
            a @ a
            reps += 1
        best = max(best, 2 * _PROBE_N**3 * reps / used)
    return best


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_flops() -> float:
    """The sustained float32 throughput a CPU run gets on this machine's cores (FLOP/s)."""
    return cpu_core_flops() * cpu_cores() * CPU_EFFICIENCY


@functools.cache
def local_gpu_memory() -> int | None:
    """Memory of the smallest GPU a run started here would get (NVML, as CUDA_VISIBLE_DEVICES selects
    them; a MIG instance's own memory); None when NVML sees none. Read once per app start."""
    from hrm.run.sysmon import SystemSampler

    try:
        sampler = SystemSampler()
        try:
            gpus = sampler.sample_once()["gpus"]
        finally:
            sampler.stop()
    except Exception:  # no NVML, no driver, no psutil: the picker just shows no verdict
        return None
    totals = [g["mem_total"] for g in gpus if g.get("ours") and isinstance(g.get("mem_total"), int)]
    return min(totals) if totals else None


def estimate(info: dict[str, Any], gpu_mem_total: int | None = None) -> tuple[str, str]:
    """("≈N GiB/GPU", "≈T s") for a describe() result. Memory is hrm.run.memory's estimate for the per-rank
    batch (activations measured from the model's saved tensors, parameters, gradients, optimizer state,
    and on CUDA the runtime); with the card's memory known it also says whether that fits."""
    gpus = max(1, int(info.get("gpus") or 1))
    cuda = info.get("device") == "cuda"
    flops = float(info.get("flops_per_step") or 0.0)
    rate = CUDA_FLOPS * gpus if cuda else cpu_flops()
    secs = flops / rate if flops else None
    mem_bytes = info.get("mem_per_rank")
    if not isinstance(mem_bytes, int | float):
        return "?", f"≈{step_text(secs)}"
    gpu = info.get("device") != "cpu"  # describe() plans `auto` for the GPU
    mem = f"≈{format_bytes(mem_bytes)}" + ("/GPU" if gpu else "")
    if gpu and gpu_mem_total:
        mem += " ✓" if mem_bytes <= FIT_MARGIN * gpu_mem_total else f" ✗ > {format_bytes(gpu_mem_total)}"
    return mem, f"≈{step_text(secs)}"


def step_text(secs: float | None) -> str:
    if secs is None:
        return "?"
    if secs < 0.1:
        return f"{max(secs * 1000, 1):.0f} ms"
    return f"{secs:.2f} s" if secs < 10 else f"{secs:.0f} s"
