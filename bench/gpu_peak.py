"""The peak a GPU step is measured against: the card's dense bf16 matmul rate, measured (8192² matmuls,
one host sync per timing window, so the figure is the card's and not the launch overhead's) and, when
the device name is known, the datasheet's figure beside it. Used by bench/step.py --cuda and
bench/gpu_check.py."""

from __future__ import annotations

import time

import torch

# Dense (no 2:4 sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched in this order
# against torch.cuda.get_device_name() (upper-cased): the first key contained in the name wins.
DATASHEET_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),  # SXM4 and PCIe alike
    ("A30", 165.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
)


def datasheet_tflops(name: str) -> float | None:
    """The datasheet's dense bf16 TFLOP/s for a device name, or None for a card not in the table
    (or one without bf16 tensor cores: V100, T4)."""
    upper = name.upper()
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in upper:
            return tflops
    return None


def cuda_matmul_peak(device: torch.device, seconds: float = 3.0, n: int = 8192, window_s: float = 0.25) -> float:
    """Best FLOP/s of n×n bf16 matmuls over windows of ~window_s: each window queues its matmuls and
    syncs once at its end (a sync per 8192² matmul would add ~10 µs to ~1.1 ms of work)."""
    dtype = torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):  # clocks up, cuBLAS picks its kernel
        torch.mm(a, b, out=out)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)
    torch.cuda.synchronize(device)
    reps = max(4, int(window_s / max(time.perf_counter() - t0, 1e-6)))
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.cuda.synchronize(device)
        w0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - w0))
    return best
