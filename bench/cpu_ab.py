"""The C path against the plain torch ops on a preset's CPU training step, alternating in one process (a
benchmark, not a test).

One model, optimizer set and random batch of the preset's shape (`sudoku-cpu` by default); each round times
`--steps` full training steps (the trainer's forward_backward, then both optimizers) on one path, then on
the other (the order swaps every round), after one untimed step on each. A shared machine's load drifts
between seconds, so what counts is the per-round ratio (two neighbouring measurements); the 1-minute load
average is printed with every round. The C path is kept only while it pays: ≥ 1.2× (issue 17).

    python bench/cpu_ab.py                       # sudoku-cpu, torch's default threads, 30 rounds
    python bench/cpu_ab.py --preset maze-cpu --rounds 10 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from hrm.model import cpu_path
from hrm.optim.container import optimizer_set_from_config
from hrm.run.config import load_preset, task_shape
from hrm.train.build import DataInfo, build_head, model_config
from hrm.train.distributed import DistEnv
from hrm.train.host_alloc import keep_freed_memory
from hrm.train.step import forward_backward


def build_step(preset: str):
    """The preset's training step on random data (the trainer's own model builder), and its model config."""
    cfg = load_preset(preset)
    _, vocab, seq_len = task_shape(cfg.data)
    batch = cfg.train.global_batch_size
    env = DistEnv()
    info = DataInfo(Path("."), cfg.data.task, seq_len, vocab, 1, batch, 0, batch, 1.0)
    mcfg = model_config(cfg, info, env)
    head = build_head(cfg, info, env)
    optim = optimizer_set_from_config(head, cfg.optim, total_steps=cfg.train.total_steps or 10_000)
    params: list[torch.Tensor] = [p for p in head.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=torch.randint(1, vocab, (batch, seq_len), generator=g, dtype=torch.int32),
        labels=torch.randint(2, vocab, (batch, seq_len), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(batch, dtype=torch.int32),
    )
    state = {"carry": head.initial_carry(data)}  # type: ignore[operator]  # ACTLossHead's method, seen as nn.Module

    def step() -> None:
        state["carry"] = forward_backward(head, state["carry"], data, batch, env, params, mcfg.halt_max_steps)[0]
        optim.step()
        optim.zero_grad()

    return step, mcfg


def timed(step, steps: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process, all its threads) of `steps` steps after
    one untimed one."""
    step()
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="sudoku-cpu")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=8, help="timed steps per path per round (their median counts)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the trainer does on CPU
    step, mcfg = build_step(args.preset)
    chosen = cpu_path.select(
        "auto", mcfg.head_dim, mcfg.hidden_size, mcfg.mlp_inner, torch.device("cpu"), torch.float32
    )
    print(
        f"{args.preset}: hidden {mcfg.hidden_size}, batch {mcfg.batch_size}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} CPUs; C path: {chosen.describe()}"
    )
    if chosen.path != cpu_path.C:
        raise SystemExit("the C path cannot run here: nothing to compare")
    print(
        f"{'round':>5} {'load1':>6} {'C s':>8} {'plain s':>8} {'ratio':>6} {'C cpu s':>8} {'plain cpu':>9} {'ratio':>6}"
    )
    rows = []
    for r in range(args.rounds):
        order = ("auto", "off") if r % 2 == 0 else ("off", "auto")
        got = {}
        for mode in order:
            with cpu_path.forced(mode):
                got[mode] = timed(step, args.steps)
        (c_wall, c_cpu), (p_wall, p_cpu) = got["auto"], got["off"]
        rows.append((os.getloadavg()[0], c_wall, p_wall, c_cpu, p_cpu))
        print(
            f"{r + 1:>5} {rows[-1][0]:>6.2f} {c_wall:>8.4f} {p_wall:>8.4f} {p_wall / c_wall:>6.2f} "
            f"{c_cpu:>8.4f} {p_cpu:>9.4f} {p_cpu / c_cpu:>6.2f}",
            flush=True,
        )
    summary(rows)


def summary(rows: list[tuple[float, float, float, float, float]]) -> None:
    loads = [row[0] for row in rows]
    print(f"\n{len(rows)} rounds, load1 {min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})")
    for label, c_at, p_at in (("wall", 1, 2), ("CPU", 3, 4)):
        c, plain = [row[c_at] for row in rows], [row[p_at] for row in rows]
        ratios = sorted(row[p_at] / row[c_at] for row in rows)
        q = len(ratios) // 4
        print(
            f"{label}: C median {statistics.median(c):.4f} s (best {min(c):.4f}), plain median "
            f"{statistics.median(plain):.4f} s (best {min(plain):.4f}); per-round ratio median "
            f"{statistics.median(ratios):.2f} (quartiles {ratios[q]:.2f}-{ratios[-1 - q]:.2f}, range "
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}); ratio of bests {min(plain) / min(c):.2f}"
        )


if __name__ == "__main__":
    main()
