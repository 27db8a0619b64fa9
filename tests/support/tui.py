"""Fixed run directories for the app's tests and bench, and the one allowed fake: an NVML backend.

`write_run` writes an events file the way the trainer's EventWriter does (same writer, fixed clock),
so the app reads exactly the bytes a real run would produce. `FakeNvml` stands in for hardware we do
not have: it reports fixed, plausible devices and can mark fields unreadable (None), never more.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

T0 = 1_764_057_600.0  # 2025-11-25 08:00:00 UTC: fixed, so no wall clock leaks into snapshots

SUDOKU_SOLUTION = [
    5,
    3,
    4,
    6,
    7,
    8,
    9,
    1,
    2,
    6,
    7,
    2,
    1,
    9,
    5,
    3,
    4,
    8,
    1,
    9,
    8,
    3,
    4,
    2,
    5,
    6,
    7,
    8,
    5,
    9,
    7,
    6,
    1,
    4,
    2,
    3,
    4,
    2,
    6,
    8,
    5,
    3,
    7,
    9,
    1,
    7,
    1,
    3,
    9,
    2,
    4,
    8,
    5,
    6,
    9,
    6,
    1,
    5,
    3,
    7,
    2,
    8,
    4,
    2,
    8,
    7,
    4,
    1,
    9,
    6,
    3,
    5,
    3,
    4,
    5,
    2,
    8,
    6,
    1,
    7,
    9,
]


def sudoku_sample(blanks_every: int = 3, wrong: tuple[int, ...] = (4, 40)) -> dict[str, list[int]]:
    label = [d + 1 for d in SUDOKU_SOLUTION]
    inp = [1 if i % blanks_every == 1 else tok for i, tok in enumerate(label)]
    pred = list(label)
    for i in wrong:  # cells 4 and 40 are blanks (i % 3 == 1): wrong answers there
        pred[i] = 2 + (label[i] - 2 + 1) % 9
    return {"input": inp, "prediction": pred, "label": label}


def with_segments(sample: dict[str, Any], n: int = 4, halt: int = 3) -> dict[str, Any]:
    """The sample as the trainer records it for "watch it think": the prediction after each of `n`
    ACT segments (segment k has the first k/n of the final answer's non-input cells filled, the rest
    still blank), the Q logits per segment, and the segment where the Q-head would halt."""
    final, inp = sample["prediction"], sample["input"]
    todo = [i for i, t in enumerate(inp) if final[i] != t]
    segments = []
    for k in range(1, n + 1):
        pred = list(inp)
        for i in todo[: len(todo) * k // n]:
            pred[i] = final[i]
        segments.append({"pred": pred, "q_halt": -2.0 + k, "q_continue": 0.5})
    return {**sample, "segments": segments, "halt_segment": halt}


def maze_sample(side: int = 7) -> dict[str, list[int]]:
    grid = [[1] * side for _ in range(side)]
    for r in range(1, side - 1):
        for c in range(1, side - 1):
            grid[r][c] = 2
    grid[3][2] = grid[3][3] = 1
    inp = [v for row in grid for v in row]
    start, goal = 1 * side + 1, 5 * side + 5
    inp[start], inp[goal] = 3, 4
    label, pred = list(inp), list(inp)
    for i in (2 * side + 1, 3 * side + 1, 4 * side + 1, 5 * side + 1, 5 * side + 2, 5 * side + 3, 5 * side + 4):
        label[i] = 5
    for i in (1 * side + 2, 1 * side + 3, 1 * side + 4, 2 * side + 4, 3 * side + 4, 4 * side + 4, 4 * side + 5):
        pred[i] = 5
    return {"input": inp, "prediction": pred, "label": label}


def _line(kind: str, step: int, t: float, **fields: Any) -> str:
    return json.dumps({"v": 1, "t": t, "kind": kind, "step": step, **fields}, separators=(",", ":"))


def run_events(
    steps: int = 400,
    *,
    task: str = "sudoku",
    total: int = 1000,
    eval_every: int = 100,
    status: str | None = "running",
    t0: float = T0,
    dt: float = 0.5,
) -> list[str]:
    """Lines of a plausible run: run, status, train every step, system every 4 steps, evals with
    samples and halting histograms, checkpoints, a warning."""
    grid = [9, 9] if task == "sudoku" else [7, 7]
    out = [
        _line(
            "run",
            0,
            t0,
            config={"model": {"halt_max_steps": 8, "hidden_size": 128}, "data": {"task": task}},
            task=task,
            grid=grid,
            vocab_size=11 if task == "sudoku" else 6,
            num_params=1_234_567,
            devices=["cuda:0"],
            world_size=1,
            dataset={"path": "/data/x", "train_examples": 1000, "test_examples": 200},
            total_steps=total,
            resumed_from=None,
        ),
        _line("status", 0, t0, state="starting"),
        _line("status", 0, t0 + 0.1, state="running"),
    ]
    nvml = FakeNvml()
    system = fixed_sampler(nvml)
    for s in range(1, steps + 1):
        t = t0 + s * dt
        loss = 2.3 * math.exp(-s / 150) + 0.1
        acc = 1 - 0.9 * math.exp(-s / 200)
        out.append(
            _line(
                "train",
                s,
                t,
                lr=1e-4,
                loss=loss,
                lm_loss=loss * 0.9,
                q_halt_loss=0.05,
                q_continue_loss=0.02,
                accuracy=acc,
                changed_accuracy=acc**2,
                exact_accuracy=acc**8,
                q_halt_accuracy=0.8,
                act_steps_mean=2 + 3 * (1 - math.exp(-s / 100)),
                halted_frac=0.4,
                examples_per_s=412.0,
                step_time_s=dt,
                grad_norm=1.0,
                param_norm=300.0 + s / 10,
                act_steps_hist=[0, 1, 2, 3, 2, 0, 0, 0],
                epoch=s / 10,
                count=1,
            )
        )
        if s % 4 == 0:
            nvml.util = 40 + (s * 7) % 60
            out.append(
                _line(
                    "system",
                    s,
                    t,
                    **{
                        **system(),
                        "torch_alloc": 12_884_901_888,
                        "torch_peak": 14_173_392_076,
                        "proc_cpu_percent": 180.0 + s % 7,  # the trainer's own, moving so tests can tell
                        "proc_rss": 1_500_000_000 + s * 1000,
                    },
                )
            )
        if s % eval_every == 0:
            puzzle = sudoku_sample() if task == "sudoku" else maze_sample()
            ex = min(0.95, s / 500)
            out.append(
                _line(
                    "eval",
                    s,
                    t + 0.2,
                    loss=loss * 1.1,
                    accuracy=acc * 0.98,
                    changed_accuracy=min(1.0, ex + 0.1),
                    exact_accuracy=ex,
                    q_halt_accuracy=0.85,
                    act_steps_hist=[0, 5, 20, 40, 25, 10, 3, 1],
                    samples=[with_segments(puzzle), sudoku_sample(wrong=()) if task == "sudoku" else puzzle],
                    split="test",
                    num_examples=200,
                )
            )
            out.append(
                _line("checkpoint", s, t + 0.5, path=f"checkpoints/step-{s:08d}.pt", size=5_200_000, seconds=0.4)
            )
        if s == 250:
            out.append(_line("log", s, t, level="warning", message="grad norm spiked to 12.3 (clipped)"))
    if status:
        out.append(
            _line(
                "status",
                steps,
                t0 + steps * dt + 1,
                state=status,
                **({"error": "CUDA out of memory: lower train.global_batch_size"} if status == "failed" else {}),
            )
        )
    return out


def write_run(root: Path, name: str, lines: list[str], log: str = "") -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    if log:
        (run / "trainer.log").write_text(log)
    return run


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """pynvml's call names and units (bytes, percent, °C, milliwatts) for `gpus` fixed devices, for
    hrm.run.sysmon.SystemSampler(nvml=...). Fields named in `missing` raise as an unsupported
    query does on a real driver; `util` can be changed between samples (a moving sparkline)."""

    def __init__(self, gpus: int = 1, util: int = 97, missing: tuple[str, ...] = ()) -> None:
        self.count, self.util, self.missing = gpus, util, missing

    def _check(self, field: str) -> None:
        if field in self.missing:
            raise FakeNvmlError("Not Supported")

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        self._check("gpu_util")
        return type("Util", (), {"gpu": self.util, "memory": 30})()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        self._check("mem")
        return type("Mem", (), {"used": 15_140_000_000 + h * 10**9, "total": 85_899_345_920, "free": 0})()

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._check("temp_c")
        return 71 + h

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._check("power_w")
        return 412_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000


class NoNvml:
    """pynvml on a machine without the driver: nvmlInit fails as the real one does."""

    def nvmlInit(self) -> None:
        raise FakeNvmlError("NVML Shared Library Not Found")


# Host numbers pinned so the machine running the tests does not leak into snapshots.
FIXED_HOST = {
    "cpu_percent": 34.0,
    "rss": 3_000_000_000,
    "host_mem_used": 13_207_024_435,
    "host_mem_total": 137_438_953_472,
}


def fixed_sampler(nvml: Any) -> Any:
    """The app's sampler (hrm.run.sysmon over the given NVML module) with the host pinned."""
    from hrm.run.sysmon import SystemSampler

    sysmon = SystemSampler(nvml=nvml)

    def sample() -> dict[str, Any]:
        return {**sysmon.sample_once(), **FIXED_HOST}

    return sample
