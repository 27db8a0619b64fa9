"""The CUDA devices of a run as the system sampler needs them: each rank's device UUID (to find it
in NVML, hrm.run.nvml_devices) and each rank's allocator numbers. Rank 0 samples; the other ranks'
numbers reach it through the collective watch's store (published every second, off the step)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hrm.train.distributed import DistEnv

log = logging.getLogger(__name__)


def device_uuid(dev: torch.device) -> str | None:
    """torch's UUID of a CUDA device (the MIG instance's under MIG); None on CPU or when unknown."""
    if dev.type != "cuda":
        return None
    try:
        return str(torch.cuda.get_device_properties(dev).uuid)
    except Exception as e:  # older torch: no uuid property; the sampler then reads CUDA_VISIBLE_DEVICES
        log.debug("no UUID for %s: %s", dev, e)
        return None


def memory_info(dev: torch.device) -> str:
    """'<allocated> <peak>' bytes of this process on `dev`, as published for rank 0."""
    return f"{torch.cuda.memory_allocated(dev)} {torch.cuda.max_memory_allocated(dev)}"


def sampler_options(env: DistEnv) -> dict[str, Any]:
    """`devices` and `torch_stats` for hrm.run.sysmon.SystemSampler on rank 0: the run's devices only,
    each with the allocator numbers of the rank(s) on it."""
    dev = env.device
    if dev.type != "cuda":
        return {"torch_stats": lambda: {}}  # CPU: torch keeps no allocator statistics; the event says null
    uuids = [u for u in env.device_uuids if u] or None
    ordered = list(dict.fromkeys(uuids)) if uuids else None  # one entry per device, first rank's order

    def torch_stats() -> dict[str, Any]:
        alloc, peak = torch.cuda.memory_allocated(dev), torch.cuda.max_memory_allocated(dev)
        per: dict[str, dict[str, Any]] = {}
        for rank, uuid in enumerate(env.device_uuids):
            if not uuid:
                continue
            text = memory_info(dev) if rank == env.rank else (env.watch.peer_info(rank) if env.watch else None)
            entry = per.setdefault(uuid, {"torch_alloc": None, "torch_peak": None, "ranks": []})
            entry["ranks"].append(rank)
            if text:  # two ranks on one device (tests, oversubscription): their sum
                a, p = (int(x) for x in text.split())
                entry["torch_alloc"] = (entry["torch_alloc"] or 0) + a
                entry["torch_peak"] = (entry["torch_peak"] or 0) + p
        return {"torch_alloc": alloc, "torch_peak": peak, "devices": per}

    return {"devices": ordered, "torch_stats": torch_stats}
