"""Does the batch fit? The memory check at start and `hrm-train --find-batch`.

At start, the closed-form estimate (hrm.run.memory, held to the model's measured saved tensors by
tests/test_memory.py) of one rank's training step is compared with its GPU's memory: over the card the
run is refused (train.memory_check=refuse, the default) or warned about, naming the largest per-GPU
batch that fits; over FIT_MARGIN of it, a warning. `--find-batch` tries real training steps on the GPU
at hand (synthetic puzzles of the task's shape: no dataset needed) and reports the largest per-GPU
batch whose peak stays within FIT_MARGIN of the card.

On the CPU there is nothing to find: memory is rarely what limits a CPU run (time is), host memory is
shared with everything else on the machine and swaps rather than failing, and torch keeps no allocator
statistics there to measure a peak with. The start check only warns when the estimate exceeds the
memory the host has available; `--find-batch` says so and prints the estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from hrm.model.config import HRMConfig
from hrm.run.config import Config
from hrm.run.memory import FIT_MARGIN, MemoryEstimate, estimate, format_bytes

log = logging.getLogger(__name__)


class MemoryPlanError(ValueError):
    """The configured batch cannot fit the device (raised before anything is allocated)."""


def plan(mcfg: HRMConfig, device: torch.device) -> MemoryEstimate:
    """The estimate for the model as built (mcfg.forward_dtype is already resolved for the device)."""
    return estimate(mcfg, mcfg.forward_dtype, device.type)


def check_memory(cfg: Config, mcfg: HRMConfig, device: torch.device, world_size: int) -> None:
    """Log the compute dtype and why; refuse or warn when one rank's step is estimated not to fit its device."""
    from hrm.model.layers import choose_forward_dtype

    log.info("compute dtype %s", choose_forward_dtype(cfg.model.forward_dtype, device)[1])
    if cfg.train.memory_check == "off":
        return
    est = plan(mcfg, device)
    need = est.total(mcfg.batch_size)
    if device.type == "cuda":
        capacity = torch.cuda.get_device_properties(device).total_memory
        where = f"{torch.cuda.get_device_name(device)} ({format_bytes(capacity)})"
    else:
        import psutil

        capacity, where = psutil.virtual_memory().available, "available host memory"
    if need <= FIT_MARGIN * capacity:
        log.info("memory: ≈%s per rank at batch %d of %s", format_bytes(need), mcfg.batch_size, where)
        return
    best = est.largest_batch(capacity)
    if best:
        advice = f"the largest per-GPU batch that fits is {best} (train.global_batch_size={best * world_size})"
        if cfg.train.gpus > world_size:
            advice += (
                f"; or run on the train.gpus={cfg.train.gpus} GPUs the config asks for "
                f"(torchrun --nproc_per_node={cfg.train.gpus} -m hrm.train ..., as hrm-tui launches it)"
            )
        advice += "; or measure it with real steps: hrm-train --find-batch PRESET"
    else:
        advice = "no batch fits: use a smaller model or more memory"
    msg = (
        f"per-GPU batch {mcfg.batch_size} needs ≈{format_bytes(need)} ({mcfg.forward_dtype}), more than "
        f"{'fits in' if need <= capacity else 'the whole of'} {where}; {advice}"
    )
    if device.type == "cuda" and need > capacity and cfg.train.memory_check == "refuse":
        raise MemoryPlanError(msg + " (train.memory_check=warn runs it anyway)")
    log.warning("memory: %s", msg)


def search_batch(trial: Callable[[int], int | None], capacity: int, start: int, margin: float = FIT_MARGIN) -> int:
    """Largest batch whose measured peak (`trial(b)`: bytes, or None when it ran out of memory) stays
    within margin · capacity; 0 if not even 1 does. Peaks grow linearly with the batch, so after two
    measured peaks the next try is where their line meets the limit; before that, halve or double.
    Stops when the largest fit and the smallest miss are neighbours (a handful of tries)."""
    limit = margin * capacity
    lo, hi = 0, None  # largest batch known to fit, smallest known not to
    peaks: dict[int, int] = {}  # every measured peak, over the limit or not (out of memory: none)
    b = max(1, start)
    for _ in range(16):
        peak = trial(b)
        if peak is not None:
            peaks[b] = peak
        if peak is not None and peak <= limit:
            lo = b
        else:
            hi = b
        if hi is not None and hi - lo <= 1:
            break
        if len(peaks) >= 2:
            (b0, p0), (b1, p1) = sorted(peaks.items())[-2:]
            slope = (p1 - p0) / (b1 - b0)
            guess = b1 + int((limit - p1) // slope) if slope > 0 else 2 * b1
        elif hi is None:
            guess = 2 * lo
        else:
            guess = (lo + hi) // 2 if lo else b // 2
        b = max(lo + 1, guess if hi is None else min(guess, hi - 1))
    return lo


def _synthetic_batch(mcfg: HRMConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random puzzles of the task's shape: the step's memory does not depend on the tokens."""
    g = torch.Generator().manual_seed(0)
    shape = (batch, mcfg.seq_len)
    return {
        "inputs": torch.randint(0, mcfg.vocab_size, shape, generator=g, dtype=torch.int32).to(device),
        "labels": torch.randint(1, mcfg.vocab_size, shape, generator=g, dtype=torch.int32).to(device),
        "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32).to(device),
    }


def run_steps(cfg: Config, mcfg: HRMConfig, batch: int, device: torch.device, steps: int = 2) -> None:
    """`steps` real training steps at per-rank `batch` as the trainer takes them (carry kept, loss /
    batch backward, both optimizers), on synthetic puzzles."""
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
    from hrm.model.losses import ACTLossHead
    from hrm.optim.container import optimizer_set_from_config

    mb = HRMConfig.from_dict(mcfg.to_dict(), batch_size=batch)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(mb), loss_type=cfg.model.loss_type).to(device).train()
    optim = optimizer_set_from_config(head, cfg.optim, total_steps=steps, world_size=1)
    data = _synthetic_batch(mb, batch, device)
    carry = head.initial_carry(data)
    for step in range(1, steps + 1):
        carry, loss, *_ = head(carry=carry, batch=data)
        (loss / batch).backward()
        optim.step(step)
        optim.zero_grad()


def cuda_trial(cfg: Config, mcfg: HRMConfig, device: torch.device) -> Callable[[int], int | None]:
    """trial(batch) → the device memory in use at the step's peak (bytes), None when it ran out."""
    import gc

    def trial(batch: int) -> int | None:
        gc.collect()
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        outside = total - free - torch.cuda.memory_reserved(device)  # CUDA context, other processes
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run_steps(cfg, mcfg, batch, device)
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            log.info("batch %d: out of memory", batch)
            return None
        finally:
            gc.collect()
            torch.cuda.empty_cache()
        peak = outside + torch.cuda.max_memory_reserved(device)
        log.info("batch %d: peak %s of %s", batch, format_bytes(peak), format_bytes(total))
        return peak

    return trial


def find_batch(cfg: Config, mcfg: HRMConfig, device: torch.device) -> tuple[int, str]:
    """(largest per-GPU batch that fits with the margin, a report line); on the CPU (0, why not)."""
    est = plan(mcfg, device)
    if device.type != "cuda":
        return 0, (
            f"nothing to find on {device.type}: a CPU run is limited by time, not memory, and torch keeps no "
            f"peak statistics there. Estimate at per-rank batch {mcfg.batch_size}: "
            f"≈{format_bytes(est.total(mcfg.batch_size))} of host memory."
        )
    capacity = torch.cuda.get_device_properties(device).total_memory
    start = max(1, est.largest_batch(capacity))
    best = search_batch(cuda_trial(cfg, mcfg, device), capacity, start)
    name = torch.cuda.get_device_name(device)
    if not best:
        return 0, f"not even batch 1 fits {name} ({format_bytes(capacity)}) with a {1 - FIT_MARGIN:.0%} margin"
    gpus = cfg.train.gpus
    return best, (
        f"largest per-GPU batch that fits {name} ({format_bytes(capacity)}) with a {1 - FIT_MARGIN:.0%} margin: "
        f"{best} (estimate before trying: {start}); on {gpus} GPU{'s' if gpus > 1 else ''}: "
        f"train.global_batch_size={best * gpus} (scale optim.lr by √(new/old batch), as the reference's "
        "one-GPU recipe does)"
    )


def model_for(cfg: Config, device: torch.device) -> HRMConfig:
    """The model a run of `cfg` builds on `device`, sized from the task (no dataset needed)."""
    from hrm.model.layers import choose_forward_dtype
    from hrm.run.config import model_shape

    shape = model_shape(cfg)
    dtype, why = choose_forward_dtype(cfg.model.forward_dtype, device)
    log.info("compute dtype %s", why)
    return HRMConfig.from_dict(
        cfg.model.hrm_fields(),
        batch_size=max(1, cfg.train.global_batch_size // cfg.train.gpus),
        seq_len=shape.seq_len,
        vocab_size=shape.vocab_size,
        forward_dtype=str(dtype).removeprefix("torch."),
    )


def find_batch_main(cfg: Config) -> int:
    """`hrm-train --find-batch PRESET [overrides]`: prints the report; 0 when a batch was found (or on
    the CPU, where there is nothing to find), 1 when nothing fits, 2 when there is no such device."""
    from hrm.train.distributed import pick_device

    try:
        device = pick_device(cfg.train.device)
    except RuntimeError as e:
        print(f"hrm-train: {e}")
        return 2
    best, report = find_batch(cfg, model_for(cfg, device), device)
    print(f"hrm-train: {report}")
    return 0 if best or device.type != "cuda" else 1
