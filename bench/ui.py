"""hrm-tui in a real terminal (tmux): time to first paint, time to attach to a 200,000-line events
file, and the app's CPU share and RSS while a writer appends 20 events per second.

    python bench/ui.py [--lines 200000] [--seconds 30]

Targets (issue #6): first paint < 1.5 s, attach < 2 s, CPU < 10 % of one core, RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SESSION = f"hrm-bench-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def start_app(args: list[str], cwd: Path, size: tuple[int, int] = (160, 48)) -> tuple[float, int]:
    cmd = " ".join([sys.executable, "-m", "hrm_tui", *args])
    t0 = time.perf_counter()
    tmux("new-session", "-d", "-s", SESSION, "-x", str(size[0]), "-y", str(size[1]), "-c", str(cwd), f"exec {cmd}")
    pid = int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}").strip())
    return t0, pid


def wait_screen(text: str, timeout: float = 60.0, absent: bool = False) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (text in tmux("capture-pane", "-p", "-t", SESSION)) != absent:
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"{text!r} never appeared:\n{tmux('capture-pane', '-p', '-t', SESSION)}")


def stop_app() -> None:
    tmux("kill-session", "-t", SESSION)
    time.sleep(0.3)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))  # as hrm.run.events.EventWriter writes


def write_big_run(run: Path, lines: int) -> None:
    """A run whose events file holds `lines` lines: train every step, system every 10, eval and
    checkpoint every 1000 (with samples), as a long real run looks."""
    run.mkdir(parents=True)
    t0 = 1_764_057_600.0
    sample = {"input": [1] * 81, "prediction": [2] * 81, "label": [2] * 81}
    with open(run / "events.jsonl", "w") as f:
        f.write(
            _dumps(
                {
                    "v": 1,
                    "t": t0,
                    "kind": "run",
                    "step": 0,
                    "task": "sudoku",
                    "grid": [9, 9],
                    "total_steps": 10**6,
                    "resumed_from": None,
                }
            )
            + "\n"
        )
        n, step = 1, 0
        while n < lines:
            step += 1
            t = t0 + step * 0.1
            f.write(
                _dumps(
                    {
                        "v": 1,
                        "t": t,
                        "kind": "train",
                        "step": step,
                        "lr": 1e-4,
                        "loss": 2 * math.exp(-step / 50000) + 0.1,
                        "lm_loss": 1.0,
                        "q_halt_loss": 0.1,
                        "q_continue_loss": 0.1,
                        "accuracy": 0.5,
                        "exact_accuracy": 0.1,
                        "q_halt_accuracy": 0.8,
                        "act_steps_mean": 4.0,
                        "halted_frac": 0.3,
                        "examples_per_s": 400.0,
                        "step_time_s": 0.1,
                        "grad_norm": 1.0,
                        "epoch": step / 100,
                        "count": 1,
                    }
                )
                + "\n"
            )
            n += 1
            if step % 10 == 0:
                f.write(
                    _dumps(
                        {
                            "v": 1,
                            "t": t,
                            "kind": "system",
                            "step": step,
                            "gpus": [],
                            "nvml": "none",
                            "cpu_percent": 50.0,
                            "host_mem_used": 1e9,
                            "host_mem_total": 8e9,
                        }
                    )
                    + "\n"
                )
                n += 1
            if step % 1000 == 0:
                f.write(
                    _dumps(
                        {
                            "v": 1,
                            "t": t,
                            "kind": "eval",
                            "step": step,
                            "loss": 1.0,
                            "accuracy": 0.5,
                            "exact_accuracy": 0.1,
                            "act_steps_hist": [1] * 16,
                            "samples": [sample] * 8,
                        }
                    )
                    + "\n"
                )
                n += 1
    return None


def writer_proc(run: Path, rate: float, seconds: float) -> subprocess.Popen:
    code = f"""
import time, math
from pathlib import Path
from hrm.run.events import EventWriter
from hrm.run.lock import write_pidfile
run = Path({str(run)!r})
write_pidfile(run)
w = EventWriter(run / "events.jsonl")
w.write("status", 0, state="running")
step, t_end = 0, time.monotonic() + {seconds}
while time.monotonic() < t_end:
    step += 1
    w.write("train", step, loss=2 * math.exp(-step / 500), accuracy=0.5, exact_accuracy=0.1, lr=1e-4,
            act_steps_mean=4.0, halted_frac=0.3, q_halt_accuracy=0.8, examples_per_s=400.0)
    if step % 20 == 0:
        w.write("system", step, gpus=[], nvml="none", cpu_percent=50.0, host_mem_used=1e9, host_mem_total=8e9)
    time.sleep({1.0 / rate})
w.write("status", step, state="finished")
w.close()
"""
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    if shutil.which("tmux") is None:
        print("bench/ui.py needs tmux", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="hrm-ui-bench-"))
    results: dict[str, float] = {}
    try:
        # 1. first paint: the preset picker of an empty runs root.
        t0, pid = start_app(["--runs-root", str(tmp / "empty")], tmp)
        results["first_paint_s"] = wait_screen("New run") - t0
        results["first_paint_cpu_s"] = sum(psutil.Process(pid).cpu_times()[:2])
        stop_app()

        # 2. attach to a run with a long history.
        big = tmp / "runs" / "big"
        t = time.perf_counter()
        write_big_run(big, args.lines)
        print(
            f"wrote {args.lines:,} lines ({(big / 'events.jsonl').stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t:.1f} s"
        )
        last_step = sum(1 for line in open(big / "events.jsonl") if '"kind":"train"' in line)
        t0, pid = start_app(["attach", str(big)], tmp)
        results["attach_s"] = wait_screen(f"step {last_step:,}") - t0
        results["attach_cpu_s"] = sum(psutil.Process(pid).cpu_times()[:2])
        results["full_history_s"] = wait_screen("loading history", absent=True) - t0
        results["full_history_cpu_s"] = sum(psutil.Process(pid).cpu_times()[:2])
        results["attached_rss_mb"] = psutil.Process(pid).memory_info().rss / 2**20
        stop_app()

        # 3. a live run appending 20 events/s: the app's CPU share and memory.
        live = tmp / "runs" / "live"
        live.mkdir(parents=True)
        writer = writer_proc(live, 20.0, args.seconds + 10)
        t0, pid = start_app(["attach", str(live)], tmp)
        wait_screen("running")
        proc = psutil.Process(pid)
        time.sleep(3.0)  # past start-up
        c0, w0 = sum(proc.cpu_times()[:2]), time.perf_counter()
        rss_peak = 0
        while time.perf_counter() - w0 < args.seconds:
            time.sleep(1.0)
            rss_peak = max(rss_peak, proc.memory_info().rss)
        results["cpu_percent_of_core"] = 100 * (sum(proc.cpu_times()[:2]) - c0) / (time.perf_counter() - w0)
        results["rss_peak_mb"] = rss_peak / 2**20
        stop_app()
        writer.kill()
        writer.wait()
    finally:
        stop_app()
        shutil.rmtree(tmp, ignore_errors=True)
    targets = {
        "first_paint_s": 1.5,
        "attach_s": 2.0,
        "cpu_percent_of_core": 10.0,
        "rss_peak_mb": 200.0,
        "attached_rss_mb": 200.0,
    }
    for k, v in results.items():
        verdict = (
            f"target < {targets[k]:g}   {'ok' if v < targets[k] else 'MISSED'}"
            if k in targets
            else "(process CPU time)"
            if k.endswith("cpu_s")
            else ""
        )
        print(f"{k:22s} {v:8.2f}   {verdict}")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
