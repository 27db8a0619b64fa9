"""torchrun support in a handful of functions: detect the launcher's environment, start the
process group (gloo on CPU, NCCL on CUDA), reduce gradients and metrics, move the ACT carry
between ranks, wait for rank 0's own work at a named barrier, and tell which rank died or which
collective hung when one fails (hrm.train.dist_watch reports a hang before NCCL's watchdog aborts).

Without torchrun (no WORLD_SIZE in the environment) everything here degrades to no-ops so the
single-process trainer pays nothing."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
import torch.distributed as dist

from hrm.train import dist_watch
from hrm.train.devices import device_uuid, memory_info
from hrm.train.dist_watch import CollectiveWatch

log = logging.getLogger(__name__)

# The collective timeout comes from train.dist_timeout_s (minutes: ranks finish torch.compile or a
# checkpoint copy at different times); HRM_DIST_TIMEOUT overrides it (the tests' short gloo runs).
TIMEOUT_ENV = "HRM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
# Rank 0's own work (building a paper dataset, writing a ~2 GB checkpoint) is waited for at a barrier
# of a separate gloo group with this timeout, not the collective one: a slow disk is not a hang.
RANK0_WORK_TIMEOUT_S = 4 * 3600.0


def collective_timeout(configured: float | None = None) -> float:
    """HRM_DIST_TIMEOUT if set, else the configured seconds, else DEFAULT_TIMEOUT_S."""
    env = os.environ.get(TIMEOUT_ENV)
    if env:
        return float(env)
    return float(configured) if configured else DEFAULT_TIMEOUT_S


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    # (hostname, pid) of every rank, gathered at init so a failure can name the dead rank.
    peers: list[tuple[str, int]] = field(default_factory=list)
    # UUID of every rank's CUDA device (None on CPU), gathered at init for the system sampler.
    device_uuids: list[str | None] = field(default_factory=list)
    watch: CollectiveWatch | None = None
    barrier_group: Any = None  # gloo group for waiting on rank 0's own work

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """auto → cuda when available, else cpu; 'cuda' without a GPU is an error naming the fix.
    LOCAL_RANK modulo the visible devices: under one-GPU-per-task binding (SLURM --gpus-per-task=1)
    every rank sees one device, cuda:0, whatever its local rank."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available; set train.device=cpu or auto")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto", timeout_s: float | None = None) -> DistEnv:
    """Start the process group when torchrun launched us; otherwise a 1-rank environment.
    timeout_s: train.dist_timeout_s (see collective_timeout)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = pick_device(device_pref, local_rank)
        return DistEnv(device=device, peers=[(socket.gethostname(), os.getpid())], device_uuids=[device_uuid(device)])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = collective_timeout(timeout_s)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    env = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device, backend=backend)
    env.barrier_group = dist.new_group(
        backend="gloo", timeout=datetime.timedelta(seconds=max(timeout, RANK0_WORK_TIMEOUT_S))
    )
    env.watch = CollectiveWatch(rank, world, timeout, store=_watch_store()).start()
    if device.type == "cuda":
        env.watch.make_probe = _cuda_probe
        env.watch.info = lambda: memory_info(device)
    dist_watch.set_active(env.watch)
    peers: list[Any] = [None] * world
    with env.watch.waiting("start-up all-gather"):
        dist.all_gather_object(peers, (socket.gethostname(), os.getpid(), device_uuid(device)))
    env.peers = [(h, pid) for h, pid, _ in peers]
    env.device_uuids = [u for _, _, u in peers]
    log.info("rank %d/%d on %s (backend %s, collective timeout %g s)", rank, world, device, backend, timeout)
    return env


def _cuda_probe() -> Callable[[], bool]:
    """An event on the current stream, after the collective just issued (the stream waits for NCCL's)."""
    ev = torch.cuda.Event()
    ev.record()
    return ev.query


def _watch_store() -> Any:
    """The launcher's key-value store under our own prefix, where ranks publish their waits."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return dist.PrefixStore("hrm-collective-watch/", _get_default_store())
    except Exception as e:  # a private torch API: without it the report names only this rank
        log.debug("no store for the collective watch: %s", e)
        return None


def watch_reports_to(env: DistEnv, write_failed: Callable[[str], None], step: Callable[[], int]) -> None:
    """Where the watch reports a hung collective: every rank logs it; rank 0 also writes it as the run's
    `failed` status (`write_failed`), before NCCL's watchdog can abort the process."""
    if env.watch is None:
        return

    def report(msg: str) -> None:
        log.error("%s", msg)
        if env.is_main:
            write_failed(msg)

    env.watch.report, env.watch.step = report, step


@contextmanager
def waiting(env: DistEnv, name: str, blocking: bool | None = None) -> Iterator[None]:
    """Mark a collective for the watch (a no-op without ranks). On gloo the call blocks; on NCCL it
    returns at once and the mark stays until it completes on the device or a host sync (`_sync`);
    object collectives block on every backend (blocking=True)."""
    if env.watch is None:
        yield
        return
    with dist_watch.collective(name, blocking=env.backend != "nccl" if blocking is None else blocking):
        yield


def barrier_after_rank0(env: DistEnv, name: str) -> None:
    """Every rank calls this after work only rank 0 does (dataset build, checkpoint write): the others
    wait here, at a barrier named in the log and in any failure, with the rank-0 work timeout."""
    if not env.is_distributed:
        return
    t0 = time.monotonic()
    # gloo group: blocking on every backend
    with dist_watch.collective(f"barrier '{name}'", blocking=True, timeout_s=RANK0_WORK_TIMEOUT_S):
        dist.barrier(group=env.barrier_group)
    waited = time.monotonic() - t0
    if not env.is_main and waited > 1.0:
        log.info("rank %d waited %.1f s at barrier '%s' for rank 0", env.rank, waited, name)


def cleanup(env: DistEnv) -> None:
    if env.watch is not None:
        env.watch.stop()
        dist_watch.set_active(None)
    if env.is_distributed and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as e:  # a broken group cannot be torn down cleanly; exiting is enough
            log.debug("destroy_process_group failed: %s", e)


def broadcast_object(env: DistEnv, obj: Any, src: int = 0) -> Any:
    if not env.is_distributed:
        return obj
    box = [obj if env.rank == src else None]
    with waiting(env, "broadcast", blocking=True):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(env: DistEnv, module: torch.nn.Module) -> None:
    """Parameters and persistent buffers from rank 0, as the reference does after building."""
    if not env.is_distributed:
        return
    with torch.no_grad(), waiting(env, "weights broadcast"):
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)
        _sync(env)


def all_reduce_grads(env: DistEnv, params: list[torch.Tensor]) -> None:
    """SUM gradients over ranks (the loss is already scaled by 1/global_batch), in one flat
    bucket: one collective per step instead of one per tensor."""
    if not env.is_distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    with waiting(env, "gradient all-reduce"):
        dist.all_reduce(flat)
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off : off + n].view_as(g))
        off += n


def _sync(env: DistEnv) -> None:
    """Wait for the device (NCCL collectives complete there), then clear the watch's mark."""
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    if env.watch is not None:
        env.watch.synced()


def all_reduce_sum(env: DistEnv, t: torch.Tensor, name: str = "metrics all-reduce") -> torch.Tensor:
    """SUM over ranks. With ranks, the result comes back on the host: that copy is where an NCCL
    collective is waited for, so the watch covers it (callers' own `.cpu()` is then a no-op)."""
    if env.is_distributed:
        with waiting(env, name):
            dist.all_reduce(t)
        t = t.cpu()  # waits for the collective: everything issued before it has completed too
        if env.watch is not None:
            env.watch.synced()
    return t


def gather_rows_to_main(env: DistEnv, t: torch.Tensor, name: str = "gather") -> torch.Tensor | None:
    """Every rank's rows (dim 0) in rank order, on rank 0's host only (None elsewhere): a checkpoint's
    carry needs no copy on the ranks that do not write it (~3 GB per rank for 8-GPU maze)."""
    if not env.is_distributed:
        return t.cpu()
    t = t.contiguous()
    src = t.to(torch.uint8) if t.dtype == torch.bool else t  # gloo has no bool collectives
    parts = [torch.empty_like(src) for _ in range(env.world_size)] if env.is_main else None
    with waiting(env, name):
        dist.gather(src, parts, dst=0)
        _sync(env)
    if parts is None:
        return None
    out = torch.cat([p.cpu() for p in parts], dim=0)
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
    with waiting(env, "object all-gather", blocking=True):
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
    """A one-line reason for the status event when a collective fails (the watch's report when it
    saw the collective hang: it names the collective and the late rank)."""
    if env.watch is not None and env.watch.fired:
        return env.watch.fired
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
