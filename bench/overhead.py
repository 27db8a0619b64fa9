"""What watching and steering cost the training loop, measured in one process:

1. step overhead — the trainer's step (events every step, control-socket polling, the system
   sampler thread, the per-step reduction and finite check) against a bare step (forward,
   backward, optimizer) on the same model and batches, interleaved in blocks so the machine's
   load drifts alike for both; target < 2 %.
2. checkpoint stall — how long the loop is held by a checkpoint at the paper model size
   (hidden 512, 4+4 layers, 27M parameters) while the file is written in the background;
   target < 0.2 s.

    python bench/overhead.py [--preset maze-cpu] [--blocks 6] [--block-steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from hrm.model.losses import METRIC_KEYS  # noqa: E402
from hrm.run.config import load_preset  # noqa: E402
from hrm.train import distributed as D  # noqa: E402
from hrm.train.session import Session  # noqa: E402
from hrm.train.step import StepTensors, pack, unpack  # noqa: E402
from hrm.train.trainer import Trainer  # noqa: E402

PAPER = [
    "model.hidden_size=512",
    "model.num_heads=8",
    "model.H_layers=4",
    "model.L_layers=4",
    "model.H_cycles=2",
    "model.L_cycles=2",
    "model.puzzle_emb_ndim=512",
]


def open_session(preset: str, overrides: list[str], run_dir: Path) -> Session:
    cfg = load_preset(
        preset,
        ["train.total_steps=1000000", "train.eval_interval=1000000", "train.checkpoint_interval=1000000", *overrides],
    )
    return Session.open(cfg, run_dir, D.init_distributed("cpu"))


def bare_step(s: Session, carry, batch):
    carry, loss, _metrics, _o, _h = s.head(carry=carry, batch=batch, return_keys=())
    (loss / s.cfg.train.global_batch_size).backward()
    s.optim.step(1)
    return carry


def step_overhead(preset: str, blocks: int, block_steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = open_session(preset, [], Path(tmp) / "run")
        try:
            t = Trainer(s)
            s.status("running")
            batches = [s.loader.next_batch()[1] for _ in range(block_steps)]
            carry = s.head.initial_carry(batches[0])
            for b in batches[:3]:  # warm-up: allocator, first-call paths
                carry = bare_step(s, carry, b)
                t._train_one()
            # CPU time of this process (all its threads: the sampler and the event writer count
            # against the trainer) is what the extra work costs; wall time on a shared machine
            # mostly measures the neighbours. Both are reported.
            bare, full, bare_w, full_w = [], [], [], []
            for _ in range(blocks):
                c0, w0 = time.process_time(), time.perf_counter()
                for b in batches:
                    carry = bare_step(s, carry, b)
                bare.append((time.process_time() - c0) / block_steps)
                bare_w.append((time.perf_counter() - w0) / block_steps)
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(block_steps):
                    t._train_one()  # loads its own batches: same shapes, same model
                full.append((time.process_time() - c0) / block_steps)
                full_w.append((time.perf_counter() - w0) / block_steps)
            # The trainer's own per-step work, timed alone over many repetitions (precise where
            # the block comparison above is noisy): control poll, flag/metric packing and the
            # host sync, the train event.
            loss = torch.tensor(1.0, dtype=torch.float64)
            metrics = {k: torch.tensor(1.0) for k in METRIC_KEYS}
            hms = s.parts.mcfg.halt_max_steps
            tensors = StepTensors(
                loss, metrics, loss, torch.ones(2, dtype=torch.float64), torch.ones(hms if hms > 1 else 0)
            )
            reps = 2000
            c0 = time.process_time()
            for i in range(reps):
                vec = pack(s.env, tensors, loss, s.steering.local_flags())
                res = unpack(D.all_reduce_sum(s.env, vec), 64)
                s.steering.decide(res.flags)
                s.event(
                    "train",
                    i,
                    **dict(res.metrics, lr=1e-3, grad_norm=1.0, step_time_s=1.0, examples_per_s=1.0, epoch=0.0),
                )
                s.events_tick()
            own = (time.process_time() - c0) / reps
        finally:
            s.close()
    print(
        f"trainer bookkeeping alone: {own * 1e3:.3f} ms CPU per step = {100 * own / statistics.median(bare):.3f} % "
        f"of a bare step (the system sampler thread wakes every 1.5 s; its CPU time is in the block numbers)"
    )
    for name, b_, f_ in (("CPU", bare, full), ("wall", bare_w, full_w)):
        b, f = statistics.median(b_), statistics.median(f_)
        print(
            f"{name} time per step, {preset} (median of {blocks} blocks x {block_steps} steps): "
            f"bare {b * 1e3:.1f} ms, trainer {f * 1e3:.1f} ms, overhead {100 * (f - b) / b:+.2f} % (target < 2 %)"
        )
        print("  per-block bare/trainer ms: " + "  ".join(f"{x * 1e3:.0f}/{y * 1e3:.0f}" for x, y in zip(b_, f_)))


def checkpoint_stall(preset: str, saves: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = open_session(preset, [*PAPER, "train.global_batch_size=2"], Path(tmp) / "run")
        try:
            n = sum(p.numel() for p in s.head.parameters())
            t = Trainer(s)
            t._train_one()  # optimizer state exists from here on
            stalls, writes = [], []
            for _ in range(saves):
                t._ckpt_step = -1
                t0 = time.perf_counter()
                t.save_checkpoint(wait=False)
                stalls.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                s.wait_writes()
                writes.append(time.perf_counter() - t0 + stalls[-1])
                t.step += 1
            size = max(p.stat().st_size for p in (Path(tmp) / "run" / "checkpoints").glob("step-*.pt"))
        finally:
            s.close()
    print(
        f"checkpoint at paper size ({n / 1e6:.1f}M params, {size / 2**20:.0f} MiB file): loop stall "
        f"first {stalls[0]:.3f} s, then median {statistics.median(stalls[1:] or stalls):.3f} s "
        f"(target < 0.2 s); background write {statistics.median(writes):.2f} s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="maze-cpu")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--block-steps", type=int, default=5)
    ap.add_argument("--saves", type=int, default=4)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    step_overhead(args.preset, args.blocks, args.block_steps)
    checkpoint_stall(args.preset, args.saves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
