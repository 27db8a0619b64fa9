"""Training-step throughput and MFU of HRM-ACT-v1 (a benchmark, not a test).

For seq 81 (Sudoku: vocab 11, one puzzle identifier, puzzle_emb_ndim = hidden, 64-wide heads) and each
hidden size × batch size, time full training steps: the train-mode ACT forward (including the second,
no-grad forward for the Q target), the backward of (loss / batch), and both optimizer steps
(CastedSparseEmbeddingSignSGD_Distributed on the puzzle embedding, then AdamATan2), as the trainer does.

FLOP count (model FLOPs from the shapes, `hrm.model.config.flops_per_example`):
  * one block application costs, per token, 2·(its weight count) for the qkv / o / gate_up / down matmuls
    plus 4·S·hidden for the attention score and value matmuls (S = 82: 81 cells + the puzzle position);
  * a segment applies H_cycles·(L_cycles·L_layers + H_layers) = 24 blocks (16 without grad + the last L and
    H update, 8, with grad), plus lm_head on every position and q_head on position 0;
  * the Q-target forward applies another 24 blocks (+ q_head; lm_head is skipped, its output is unused);
  * backward ≈ 2× the forward of the 8 gradient-carrying blocks and the heads (dX and dW matmuls).
  Element-wise work (norms, RoPE, softmax, SiLU) and the optimizers count zero FLOPs: they are overhead.

Modes: `eager` is what the trainer runs (the plain torch ops, on CPU and CUDA alike); `compile` (--compile)
the same step torch.compile'd. (The fused C block is gone: on a quiet machine it was only 1.07–1.09× faster.)

Peak on CPU: torch.mm of 2048×2048 float32 matrices repeated for a few seconds, measured in the same
process, before every timed run; MFU = achieved FLOP/s / the best peak of the run, and 'paired' / the
peak of the same moment. The machine is shared, so every number is the best of several repeats (the
least-disturbed one). On CUDA (bench/gpu_peak.py): 8192² bf16 matmuls with one sync per timing
window (smaller ones, or a sync after each, leave a card like the H100 far below its rate and would
overstate MFU ~2×), and MFU(sheet) against the datasheet's dense bf16 figure when the card is known;
no CPU-time columns (a GPU step's CPU time says nothing about the GPU).

    python bench/step.py                          # eager, CPU, the table of the issue
    python bench/step.py --compile                # also torch.compile'd (opt-in)
    python bench/step.py --cuda                   # bf16 on the GPU at the paper config, batch 768
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_peak import cuda_matmul_peak, datasheet_tflops

from hrm.model.config import HRMConfig, flops_per_example
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead
from hrm.optim.adam_atan2 import AdamATan2
from hrm.optim.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from hrm.train.host_alloc import keep_freed_memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float, n: int = 2048) -> tuple[float, float]:
    """Best (wall, CPU-time) FLOP/s of n×n matmuls over ~0.3 s windows within `seconds`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    _sync(device)
    best_wall = best_cpu = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        reps, (w0, c0) = 0, _clocks()
        while True:
            torch.mm(a, b, out=out)
            reps += 1
            _sync(device)
            if time.perf_counter() - w0 > 0.3:
                break
        w1, c1 = _clocks()
        best_wall = max(best_wall, 2 * n**3 * reps / (w1 - w0))
        best_cpu = max(best_cpu, 2 * n**3 * reps / max(c1 - c0, 1e-9))
    return best_wall, best_cpu


def build(hidden: int, batch: int, device: torch.device, dtype: str, seed: int = 0, world_size: int = 1):
    """Model, loss head, both optimizers and a random batch of `batch` rows (one rank's share)."""
    cfg = HRMConfig(
        batch_size=batch,
        seq_len=81,
        vocab_size=11,
        puzzle_emb_ndim=hidden,
        num_puzzle_identifiers=1,
        hidden_size=hidden,
        num_heads=max(1, hidden // 64),
        forward_dtype=dtype,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    head.train()
    sparse = CastedSparseEmbeddingSignSGD_Distributed(
        head.model.puzzle_emb.buffers(), world_size=world_size, lr=1e-4, weight_decay=0.1
    )
    adam = AdamATan2(head.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    data = dict(
        inputs=torch.randint(1, 11, (batch, 81), generator=g, dtype=torch.int32),
        labels=torch.randint(2, 11, (batch, 81), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(batch, dtype=torch.int32),
    )
    data = {k: v.to(device) for k, v in data.items()}
    return cfg, head, (sparse, adam), data


def make_step(head, optimizers, data, batch: int, compiled: bool, after_backward=None):
    """One training step; `batch` is the global batch (the loss scale), `after_backward` e.g. the
    gradient all-reduce of data-parallel ranks."""
    fwd = torch.compile(head, dynamic=False) if compiled else head
    state = {"carry": head.initial_carry(data)}

    def step() -> None:
        carry, loss, _metrics, _, _ = fwd(state["carry"], data)
        (loss / batch).backward()
        if after_backward is not None:
            after_backward()
        for opt in optimizers:  # sparse SignSGD first, then AdamATan2 (the reference order)
            opt.step()
            opt.zero_grad()
        state["carry"] = carry

    return step


def time_steps(
    step, device: torch.device, steps: int, repeats: int, warmup: int, peak, min_seconds: float = 0.0
) -> dict[str, float]:
    """Best wall and CPU seconds per step over `repeats` runs of `steps` steps (more runs, up to 10×, while
    the timed steps total under `min_seconds`: short configurations get as many chances at a quiet
    moment as long ones); before each run the matmul peak is measured again (`peak()` → (wall, cpu)
    FLOP/s), so each run also gives a *paired* ratio to the peak of the same moment (the load of a
    shared machine drifts between seconds)."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = dict(
        wall=float("inf"),
        cpu=float("inf"),
        peak_wall=0.0,
        peak_cpu=0.0,
        paired_wall=float("inf"),
        paired_cpu=float("inf"),
    )
    timed, done = 0.0, 0
    while done < repeats or (timed < min_seconds and done < 10 * repeats):
        done += 1
        pw, pc = peak()
        w0, c0 = _clocks()
        for _ in range(steps):
            step()
        _sync(device)
        w1, c1 = _clocks()
        wall, cpu = (w1 - w0) / steps, (c1 - c0) / steps
        timed += w1 - w0
        out["wall"], out["cpu"] = min(out["wall"], wall), min(out["cpu"], cpu)
        out["peak_wall"], out["peak_cpu"] = max(out["peak_wall"], pw), max(out["peak_cpu"], pc)
        # seconds per step × peak FLOP/s of the same moment: smaller is better
        out["paired_wall"] = min(out["paired_wall"], wall * pw)
        out["paired_cpu"] = min(out["paired_cpu"], cpu * pc)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--steps", type=int, default=2, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=4, help="timed repeats per configuration (best is kept)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=20.0,
        help="keep adding timed repeats (up to 10× --repeats) until the timed steps total this long",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-seconds", type=float, default=1.0, help="matmul peak measured before every timed run")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (opt-in)")
    p.add_argument("--cuda", action="store_true", help="GPU, bf16, paper config: hidden 512, batch 768")
    p.add_argument("--cuda-batch", type=int, nargs="+", default=[768], help="batch sizes timed with --cuda")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda else "cpu")
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does on CPU
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        hiddens, batches, dtype, mm_dtype = [512], args.cuda_batch, "bfloat16", torch.bfloat16
    else:
        hiddens, batches, dtype, mm_dtype = args.hidden, args.batch, "float32", torch.float32
    name = torch.cuda.get_device_name() if args.cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; torch {torch.__version__}; compute {dtype}; best of {args.repeats}+ runs of {args.steps} steps "
        f"(more while a configuration has been timed under {args.min_seconds:g} s)"
    )
    modes = ["eager"] + (["compile"] if args.compile else [])
    cuda = device.type == "cuda"
    sheet_tflops = datasheet_tflops(name) if cuda else None
    sheet = sheet_tflops * 1e12 if sheet_tflops else None
    peak_wall = peak_cpu = 0.0
    rows = []
    extra = f"{'MFU(sheet)':>11}" if cuda else f"{'cpu s':>8}{'MFU(cpu)':>9}{'paired':>8}"
    print(f"{'mode':<8}{'hidden':>7}{'batch':>6}{'step s':>8}{'ex/s':>7}{'GFLOP/s':>9}{'MFU':>7}{'paired':>8}{extra}")

    def peak() -> tuple[float, float]:
        if cuda:  # the card's rate; CPU time is not measured on a GPU
            return cuda_matmul_peak(device, args.peak_seconds), float("nan")
        return matmul_peak(device, mm_dtype, args.peak_seconds)

    for mode in modes:
        for hidden in hiddens:
            for batch in batches:
                cfg, head, opts, data = build(hidden, batch, device, dtype)
                step = make_step(head, opts, data, batch, compiled=mode == "compile")
                warmup = args.warmup + (2 if mode == "compile" else 0)
                r = time_steps(step, device, args.steps, args.repeats, warmup, peak, args.min_seconds)
                peak_wall, peak_cpu = max(peak_wall, r["peak_wall"]), max(peak_cpu, r["peak_cpu"])
                flop = flops_per_example(cfg, train=True) * batch
                fw, fpw = flop / r["wall"], flop / r["paired_wall"]
                rows.append((mode, hidden, batch, batch / r["wall"], fw, fpw, flop / r["cpu"], flop / r["paired_cpu"]))
                tail = (
                    (f"{fw / sheet:>11.1%}" if sheet else f"{'-':>11}")
                    if cuda
                    else f"{r['cpu']:>8.2f}{flop / r['cpu'] / peak_cpu:>9.1%}{flop / r['paired_cpu']:>8.1%}"
                )
                print(
                    f"{mode:<8}{hidden:>7}{batch:>6}{r['wall']:>8.2f}{batch / r['wall']:>7.1f}"
                    f"{fw / 1e9:>9.1f}{fw / peak_wall:>7.1%}{fpw:>8.1%}{tail}",
                    flush=True,
                )
    if cuda:
        print(
            f"\npeak (bfloat16, 8192² mm, one sync per window, best of the run): {peak_wall / 1e12:.1f} TFLOP/s; "
            + (
                f"datasheet (dense bf16, {name}): {sheet_tflops:.0f} TFLOP/s"
                if sheet
                else f"no datasheet figure for {name}"
            )
        )
        print(
            "MFU: ÷ the measured peak; paired: ÷ the peak measured just before that run; MFU(sheet): ÷ the datasheet."
        )
    else:
        print(
            f"\npeak ({mm_dtype}, 2048² mm, best window of the run): {peak_wall / 1e9:.1f} GFLOP/s wall, "
            f"{peak_cpu / 1e9:.1f} GFLOP per CPU-second"
        )
        print(
            "MFU: best step FLOP/s ÷ best peak of the whole run (conservative). paired: per timed run, ÷ the peak\n"
            "measured just before it (best run kept). (cpu): CPU seconds of this process instead of wall seconds,\n"
            "which removes the time other processes held the cores (exact with --threads 1)."
        )
    print("\nfinal (MFU, paired" + (", MFU(sheet)):" if cuda else ", MFU(cpu), paired(cpu)):"))
    for mode, hidden, batch, exs, fw, fpw, fc, fpc in rows:
        tail = (f"{fw / sheet:6.1%}" if sheet else "     -") if cuda else f"{fc / peak_cpu:6.1%} {fpc:6.1%}"
        print(
            f"  {mode:<8} hidden {hidden:>4} batch {batch:>4}: {exs:6.1f} ex/s  {fw / 1e9:6.1f} GFLOP/s  "
            f"{fw / peak_wall:6.1%} {fpw:6.1%} {tail}"
        )


if __name__ == "__main__":
    main()
