"""Training-step MFU of data-parallel ranks on one CPU host (a benchmark, not a test).

On a CPU, one process per core with one thread each (what `torchrun --nproc-per-node 2` gives the
trainer, with OMP_NUM_THREADS=1) avoids OpenMP fork/join on every small op, at the cost of one gradient
all-reduce per step and of running the optimizers on every rank. Whether that beats one process with
two threads is what this measures (on the 2-core VM, quiet, best of 3: 69.8/109.5/99.4 GFLOP/s at
hidden 128/256/512 against 69.5/101.4/114.8 for bench/step.py in the same window: a wash at 128, +8 %
at 256, -13 % at 512). It times exactly the trainer's data-parallel step: each of N ranks takes global_batch/N rows, runs
the ACT forward (both forwards), the backward of loss/global_batch, the bucketed SUM all-reduce of
the gradients (`hrm.train.distributed.all_reduce_grads`, gloo), SignSGD with its all-gather path and
AdamATan2 — and reports the global FLOP/s against the same fp32 2048² `torch.mm` peak as
bench/step.py (measured with all cores in this process, before every configuration).

FLOPs are counted as in bench/step.py (`flops_per_example(cfg, train=True)` × global batch).

    python bench/step_ddp.py                      # 2 ranks × 1 thread, hidden 128/256/512, batch 32
    python bench/step_ddp.py --compile            # torch.compile'd forward in each rank
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step import build, make_step, matmul_peak  # noqa: E402

from hrm.model.config import flops_per_example  # noqa: E402
from hrm.train import distributed as D  # noqa: E402
from hrm.train.host_alloc import keep_freed_memory  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int, world: int, port: int, hidden: int, batch: int, args: argparse.Namespace, out: mp.Queue
) -> None:
    torch.set_num_threads(args.threads_per_rank)
    keep_freed_memory()  # as the trainer does on CPU
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    env = D.DistEnv(rank=rank, world_size=world, backend="gloo")
    _cfg, head, opts, data = build(hidden, batch // world, torch.device("cpu"), "float32", world_size=world)
    params = [p for p in head.parameters() if p.requires_grad]
    step = make_step(
        head, opts, data, batch, compiled=args.compile, after_backward=lambda: D.all_reduce_grads(env, params)
    )
    for _ in range(args.warmup + (2 if args.compile else 0)):
        step()
    best_wall = best_cpu = float("inf")
    for _ in range(args.repeats):
        dist.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        dist.barrier()
        best_wall = min(best_wall, (time.perf_counter() - w0) / args.steps)
        best_cpu = min(best_cpu, (time.process_time() - c0) / args.steps)
    if rank == 0:
        out.put((best_wall, best_cpu))
    dist.destroy_process_group()


def run_config(hidden: int, batch: int, args: argparse.Namespace) -> tuple[float, float]:
    """Best (wall, rank-0 CPU) seconds per global step of `args.procs` ranks."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_main, args=(r, args.procs, port, hidden, batch, args, out))
        for port in [_free_port()]
        for r in range(args.procs)
    ]
    for p in procs:
        p.start()
    try:
        result = out.get(timeout=3600)
    finally:
        for p in procs:
            p.join(120)
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--batch", type=int, nargs="+", default=[32])
    p.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="ranks (default: one per core)")
    p.add_argument("--threads-per-rank", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-seconds", type=float, default=2.0)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()

    print(
        f"CPU, {args.procs} ranks × {args.threads_per_rank} thread(s), gloo; torch {torch.__version__}; "
        f"{'compiled' if args.compile else 'eager'}; best of {args.repeats}×{args.steps} steps"
    )
    print(f"{'hidden':>7}{'batch':>6}{'step s':>8}{'ex/s':>7}{'GFLOP/s':>9}{'MFU':>7}{'paired':>8}")
    best_peak, rows = 0.0, []
    for hidden in args.hidden:
        for batch in args.batch:
            peak_now, _ = matmul_peak(torch.device("cpu"), torch.float32, args.peak_seconds)
            best_peak = max(best_peak, peak_now)
            wall, _cpu = run_config(hidden, batch, args)
            cfg, *_ = build(hidden, batch, torch.device("cpu"), "float32")
            flop = flops_per_example(cfg, train=True) * batch
            rows.append((hidden, batch, wall, flop))
            print(
                f"{hidden:>7}{batch:>6}{wall:>8.2f}{batch / wall:>7.1f}{flop / wall / 1e9:>9.1f}"
                f"{flop / wall / best_peak:>7.1%}{flop / wall / peak_now:>8.1%}",
                flush=True,
            )
    print(
        f"\npeak (float32, 2048² mm, {torch.get_num_threads()} threads, best window of the run): "
        f"{best_peak / 1e9:.1f} GFLOP/s"
    )
    print("final MFU (÷ best peak of the whole run):")
    for hidden, batch, wall, flop in rows:
        print(
            f"  hidden {hidden:>4} batch {batch:>4}: {batch / wall:6.1f} ex/s  {flop / wall / 1e9:6.1f} GFLOP/s  "
            f"{flop / wall / best_peak:6.1%}"
        )


if __name__ == "__main__":
    main()
