"""torchrun support in a handful of functions: detect the launcher's environment, start the
process group (gloo on CPU, NCCL on CUDA), reduce gradients and metrics, move the ACT carry
between ranks, and tell which rank died when a collective fails.

Without torchrun (no WORLD_SIZE in the environment) everything here degrades to no-ops so the
single-process trainer pays nothing."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# A dead peer usually breaks gloo's TCP connections at once; this bounds the rest (a peer that
# hangs, or a lost host), so a failed run is reported well within a minute.
DEFAULT_TIMEOUT_S = float(os.environ.get("HRM_DIST_TIMEOUT", "40"))


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    # (hostname, pid) of every rank, gathered at init so a failure can name the dead rank.
    peers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """auto → cuda when available, else cpu; 'cuda' without a GPU is an error naming the fix."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available; set train.device=cpu or auto")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Start the process group when torchrun launched us; otherwise a 1-rank environment."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistEnv(device=pick_device(device_pref, local_rank), peers=[(socket.gethostname(), os.getpid())])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    env = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device, backend=backend)
    peers: list[Any] = [None] * world
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    env.peers = [tuple(p) for p in peers]
    log.info("rank %d/%d on %s (backend %s)", rank, world, device, backend)
    return env


def cleanup(env: DistEnv) -> None:
    if env.is_distributed and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as e:  # a broken group cannot be torn down cleanly; exiting is enough
            log.debug("destroy_process_group failed: %s", e)


def broadcast_object(env: DistEnv, obj: Any, src: int = 0) -> Any:
    if not env.is_distributed:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(env: DistEnv, module: torch.nn.Module) -> None:
    """Parameters and persistent buffers from rank 0, as the reference does after building."""
    if not env.is_distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_grads(env: DistEnv, params: list[torch.Tensor]) -> None:
    """SUM gradients over ranks (the loss is already scaled by 1/global_batch), in one flat
    bucket: one collective per step instead of one per tensor."""
    if not env.is_distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off : off + n].view_as(g))
        off += n


def all_reduce_sum(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    if env.is_distributed:
        dist.all_reduce(t)
    return t


def gather_rows(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (dim 0) in rank order; all ranks get the full tensor."""
    if not env.is_distributed:
        return t
    t = t.contiguous()
    # gloo cannot all_gather bool tensors: move through uint8.
    src = t.to(torch.uint8) if t.dtype == torch.bool else t
    parts = [torch.empty_like(src) for _ in range(env.world_size)]
    dist.all_gather(parts, src)
    out = torch.cat(parts, dim=0)
    return out.bool() if t.dtype == torch.bool else out


def local_rows(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a tensor whose dim 0 is the global batch."""
    if not env.is_distributed:
        return t
    n = t.shape[0] // env.world_size
    return t[env.rank * n : (env.rank + 1) * n].clone()


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    if not env.is_distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def dead_ranks(env: DistEnv) -> list[int]:
    """Ranks on this host whose process is gone (remote ranks cannot be checked from here)."""
    host = socket.gethostname()
    dead = []
    for r, (h, pid) in enumerate(env.peers):
        if r == env.rank or h != host:
            continue
        try:
            # A killed child stays a zombie until torchrun's agent reaps it: count that as dead.
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                dead.append(r)
        except psutil.NoSuchProcess:
            dead.append(r)
        except psutil.Error:
            pass
    return dead


def describe_failure(env: DistEnv, err: BaseException) -> str:
    """A one-line reason for the status event when a collective fails."""
    # A killed peer's sockets close a moment before the kernel marks it dead: look again briefly.
    deadline = time.monotonic() + 3.0
    gone = dead_ranks(env)
    while not gone and time.monotonic() < deadline:
        time.sleep(0.1)
        gone = dead_ranks(env)
    if gone:
        who = ", ".join(f"rank {r} (pid {env.peers[r][1]} on {env.peers[r][0]})" for r in gone)
        return f"{who} died; the run cannot continue ({type(err).__name__})"
    remote = sorted({h for h, _ in env.peers} - {socket.gethostname()})
    where = f" (ranks on {', '.join(remote)} cannot be checked from here)" if remote else ""
    return f"a collective operation failed on rank {env.rank}: another rank died or hung{where}: {err}"
