"""`make gpu-check`: verify a GPU box in under 10 minutes on one GPU, ending with one table.

1. the CUDA-marked tests (tests/test_cuda.py: bf16 against fp32, real NVML fields in `system` events,
   a compiled step without graph breaks, one host sync per step);
2. for each paper preset: `hrm-train --find-batch` (the largest per-GPU batch that fits, by real
   steps), then a STEPS-step run at that batch on a small dataset of the preset's shapes (generated:
   the puzzle count and Sudoku rating do not change a step's cost, and the full sets take minutes);
3. `bench/step.py --cuda` (MFU against the measured 8192² bf16 peak and the datasheet);
4. with two GPUs or more: a 2-rank torchrun (NCCL) run of the tiny preset.

    python bench/gpu_check.py              # everything (about 10 minutes on an H100)
    python bench/gpu_check.py --dry-run    # the plan, nothing run (works without a GPU)
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.run.events import read_events  # noqa: E402

PY = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
# Small datasets with the presets' shapes: the check times the GPU, not the puzzle generator.
PRESETS: dict[str, tuple[list[str], int]] = {  # preset -> (data overrides, training examples they give)
    "sudoku-extreme-1k": (["data.level=medium", "data.train=200", "data.num_aug=24", "data.test=100"], 5000),
    "maze-hard-1k": (["data.train=600", "data.test=100"], 600),
}
FIND_BATCH = re.compile(r"with a \d+% margin: (\d+)")


@dataclass
class Check:
    name: str
    command: Callable[[dict[str, str]], list[str]]  # from what earlier checks found (e.g. a batch size)
    timeout_s: float
    figure: Callable[[str, dict[str, str]], str]  # one line for the table, from the output; may raise
    skip: str | None = None


@dataclass
class Result:
    name: str
    status: str  # pass | FAIL | timeout | skipped (not applicable here) | no time (budget spent)
    seconds: float
    figure: str


def _tests_figure(out: str, _ctx: dict[str, str]) -> str:
    m = re.findall(r"\d+ (?:passed|failed|skipped|error)", out)
    return ", ".join(m) or out.strip().splitlines()[-1]


def _find_batch(preset: str, cap: int) -> Callable[[str, dict[str, str]], str]:
    def figure(out: str, ctx: dict[str, str]) -> str:
        m = FIND_BATCH.search(out)
        if not m:
            raise ValueError("no batch in the output of --find-batch")
        ctx[f"batch:{preset}"] = str(min(int(m.group(1)), cap))
        return f"fits {m.group(1)} per GPU" + (f" (run at {cap}: the check's data)" if int(m.group(1)) > cap else "")

    return figure


def _run_figure(run_dir: Path) -> Callable[[str, dict[str, str]], str]:
    def figure(_out: str, _ctx: dict[str, str]) -> str:
        evs = read_events(run_dir / "events.jsonl")
        state = [e for e in evs if e["kind"] == "status"][-1]
        if state["state"] != "finished":
            raise ValueError(f"run ended {state['state']}: {state.get('error') or state.get('reason')}")
        train = [e for e in evs if e["kind"] == "train"]
        late = [e["step_time_s"] for e in train[len(train) // 2 :] if e.get("step_time_s")]
        peaks = [g.get("torch_peak") for e in evs if e["kind"] == "system" for g in e.get("gpus", [])]
        peak = max((p for p in peaks if p), default=None)
        step_s = sorted(late)[len(late) // 2] if late else float("nan")
        mem = f", torch peak {peak / 2**30:.1f} GiB" if peak else ""
        return f"{len(train)} steps, {step_s:.3f} s/step (median, 2nd half){mem}, loss {train[-1]['loss']:.3f}"

    return figure


def _bench_figure(out: str, _ctx: dict[str, str]) -> str:
    peak = re.search(r"peak \(bfloat16.*?: ([\d.]+) TFLOP/s; (.*)", out)
    row = re.search(r"eager\s+hidden\s+512 batch\s+\d+:\s+([\d.]+) ex/s\s+([\d.]+) GFLOP/s\s+([\d.]+%)", out)
    if not (peak and row):
        raise ValueError("no result line from bench/step.py")
    return f"{row.group(1)} ex/s, MFU {row.group(3)} of {peak.group(1)} TFLOP/s measured; {peak.group(2)}"


def plan(gpus: int, steps: int, work: Path) -> list[Check]:
    checks = [
        Check(
            "cuda tests",
            lambda _c: [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/test_cuda.py"],
            240,
            _tests_figure,
        )
    ]
    for preset, (data, cap) in PRESETS.items():
        common = [preset, "train.gpus=1", "train.device=cuda"]
        checks.append(
            Check(
                f"find-batch {preset}",
                lambda _c, common=common: [PY, "-m", "hrm.train", "--find-batch", *common],
                150,
                _find_batch(preset, cap),
            )
        )
        run_dir = work / preset
        checks.append(
            Check(
                f"{steps} steps {preset}",
                lambda c, common=common, data=data, preset=preset, run_dir=run_dir: [
                    PY,
                    "-m",
                    "hrm.train",
                    *common,
                    *data,
                    f"train.global_batch_size={c.get(f'batch:{preset}', '<from find-batch>')}",
                    f"train.total_steps={steps}",
                    f"train.eval_interval={steps}",
                    "train.eval_max_examples=100",
                    "train.checkpoint_interval=null",
                    "--run-dir",
                    str(run_dir),
                ],  # fmt: skip
                240,
                _run_figure(run_dir),
            )
        )
    bench = [
        PY,
        "bench/step.py",
        "--cuda",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--min-seconds",
        "5",
        "--peak-seconds",
        "2",
    ]
    checks.append(Check("bench/step.py --cuda", lambda _c: bench, 150, _bench_figure))
    two = work / "torchrun-2"
    checks.append(
        Check(
            "2-GPU torchrun (NCCL)",
            lambda _c: [
                TORCHRUN,
                "--standalone",
                "--nproc_per_node=2",
                "-m",
                "hrm.train",
                "tiny",
                "train.device=cuda",
                "train.total_steps=40",
                "--run-dir",
                str(two),
            ],  # fmt: skip
            150,
            _run_figure(two),
            skip=None if gpus >= 2 else f"{gpus} GPU visible (needs 2)",
        )
    )
    return checks


def run_check(check: Check, ctx: dict[str, str], timeout_s: float, logs: Path) -> Result:
    if check.skip:
        return Result(check.name, "skipped", 0.0, check.skip)
    cmd = check.command(ctx)
    if any("<from" in a for a in cmd):
        return Result(check.name, "skipped", 0.0, "an earlier check found no batch")
    log = logs / (re.sub(r"[^\w.-]+", "_", check.name) + ".log")
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        out, status = r.stdout + r.stderr, "pass" if r.returncode == 0 else "FAIL"
    except subprocess.TimeoutExpired as e:
        out, status = _text(e.stdout) + _text(e.stderr), "timeout"
    seconds = time.monotonic() - t0
    log.write_text(f"$ {shlex.join(cmd)}\n{out}")
    try:
        figure = check.figure(out, ctx) if status == "pass" else _last_line(out)
    except Exception as e:  # the command succeeded but its result is not what the check needs
        status, figure = "FAIL", str(e)
    return Result(check.name, status, seconds, figure)


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _last_line(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def table(results: list[Result], device: str) -> str:
    w = max(len(r.name) for r in results)
    rows = [f"gpu-check on {device}", f"{'check':<{w}}  {'result':<8} {'seconds':>7}  figure"]
    rows += [f"{r.name:<{w}}  {r.status:<8} {r.seconds:>7.0f}  {r.figure}" for r in results]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    p.add_argument("--steps", type=int, default=200, help="training steps per paper preset")
    p.add_argument("--budget-s", type=float, default=570, help="stop starting checks after this long")
    p.add_argument("--gpus", type=int, help="GPUs to plan for (default: what torch sees)")
    p.add_argument("--work", type=Path, default=REPO / "gpu-check", help="run directories and logs")
    args = p.parse_args(argv)
    if args.gpus is None:
        import torch

        args.gpus, device = (
            torch.cuda.device_count(),
            (torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""),
        )
    else:
        device = f"{args.gpus} planned GPU(s)"
    checks = plan(args.gpus, args.steps, args.work)
    if args.dry_run:
        print(f"gpu-check plan for {args.gpus} GPU(s), {args.steps} steps per preset, budget {args.budget_s:g} s:")
        for c in checks:
            what = f"skipped: {c.skip}" if c.skip else shlex.join(c.command({}))
            print(f"  {c.name} (≤{c.timeout_s:g} s): {what}")
        return 0
    if args.gpus < 1:
        print("gpu-check: torch sees no CUDA device; nothing to check (--dry-run shows the plan)", file=sys.stderr)
        return 2
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, str] = {}
    results, end = [], time.monotonic() + args.budget_s
    for c in checks:
        left = end - time.monotonic()
        if left < 20 and not c.skip:
            results.append(Result(c.name, "no time", 0.0, f"not started: the {args.budget_s:g} s budget is spent"))
            continue
        results.append(run_check(c, ctx, min(c.timeout_s, left), logs))
        print(f"{results[-1].name}: {results[-1].status} ({results[-1].seconds:.0f} s)", flush=True)
    print()
    print(table(results, device))
    print(f"logs: {logs}")
    return 0 if all(r.status in ("pass", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
