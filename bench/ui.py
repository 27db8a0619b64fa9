"""hrm-tui in a real terminal (tmux): time to first paint, time to attach to a 200,000-line events
file, time until the runs list shows 20 runs of 200,000 lines each with their right states, and the
app's CPU share and RSS while a writer appends 20 events per second.

    python bench/ui.py [--lines 200000] [--runs 20] [--seconds 30]

Targets (issues #6, #14): first paint < 1.5 s, attach < 2 s, runs list < 2 s, CPU < 10 % of one
core, RSS < 200 MB. The machine's load is printed with the figures: on a shared machine they move.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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


def wait_screen(text: str | re.Pattern[str], timeout: float = 60.0, absent: bool = False) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        shown = tmux("capture-pane", "-p", "-t", SESSION)
        if (text.search(shown) is not None if isinstance(text, re.Pattern) else text in shown) != absent:
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"{text!r} never appeared:\n{tmux('capture-pane', '-p', '-t', SESSION)}")


def stop_app() -> None:
    tmux("kill-session", "-t", SESSION)
    time.sleep(0.3)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))  # as hrm.run.events.EventWriter writes


# The fields of each kind of event as a long real run writes them (values fixed but plausible).
_TRAIN = dict(lr=1e-4, lm_loss=1.0, q_halt_loss=0.1, q_continue_loss=0.1, accuracy=0.5, exact_accuracy=0.1)
_TRAIN |= dict(q_halt_accuracy=0.8, act_steps_mean=4.0, halted_frac=0.3, examples_per_s=400.0, step_time_s=0.1)
_TRAIN |= dict(grad_norm=1.0, count=1)
_SYSTEM = dict(gpus=[], nvml="none", cpu_percent=50.0, host_mem_used=1e9, host_mem_total=8e9)
_SAMPLE = {"input": [1] * 81, "prediction": [2] * 81, "label": [2] * 81}
_EVAL = dict(loss=1.0, accuracy=0.5, exact_accuracy=0.1, act_steps_hist=[1] * 16, samples=[_SAMPLE] * 8)


def write_big_run(run: Path, lines: int) -> None:
    """A run whose events file holds `lines` lines: train every step, system every 10, eval (with
    samples) every 1000, as a long real run looks."""
    run.mkdir(parents=True)
    t0 = 1_764_057_600.0
    head = {"v": 1, "t": t0, "kind": "run", "step": 0, "task": "sudoku", "grid": [9, 9], "total_steps": 10**6}
    with open(run / "events.jsonl", "w") as f:
        f.write(_dumps({**head, "resumed_from": None}) + "\n")
        n, step = 1, 0
        while n < lines:
            step += 1
            ev = {"v": 1, "t": t0 + step * 0.1, "step": step}
            loss = 2 * math.exp(-step / 50000) + 0.1
            f.write(_dumps({**ev, "kind": "train", "loss": loss, "epoch": step / 100, **_TRAIN}) + "\n")
            n += 1
            if step % 10 == 0:
                f.write(_dumps({**ev, "kind": "system", **_SYSTEM}) + "\n")
                n += 1
            if step % 1000 == 0:
                f.write(_dumps({**ev, "kind": "eval", **_EVAL}) + "\n")
                n += 1


# The states of the runs list bench, in turn: (state recorded last, trainer alive, state.json written).
# Half the runs predate state.json: the list reads them by scanning events.jsonl backwards, and the
# `died` ones are the worst case (their only status event is near the start of the file).
LIST_STATES = [
    ("paused", True, True),
    ("stopped", False, False),
    ("finished", False, True),
    ("running", False, False),  # a killed trainer: shown `died`
    ("failed", False, True),
    ("paused", True, False),
    ("running", True, True),
    ("running", False, True),  # died, with state.json
]


def write_runs(root: Path, base: Path, n: int, holder: int) -> dict[str, tuple[str, int]]:
    """`n` runs under root, each a copy of `base` (a long history) ending in one of LIST_STATES;
    returns the (state shown, step) each row must show."""
    from hrm.run.lock import write_pidfile
    from hrm.run.status import StateFile

    last_step = sum(1 for line in open(base, "rb") if b'"kind":"train"' in line)
    expected = {}
    for i in range(n):
        state, alive, with_file = LIST_STATES[i % len(LIST_STATES)]
        run = root / f"run-{i:02d}"
        run.mkdir(parents=True)
        shutil.copyfile(base, run / "events.jsonl")
        t = 1_764_057_600.0 + last_step * 0.1
        with open(run / "events.jsonl", "a") as f:
            if state != "running":
                f.write(_dumps({"v": 1, "t": t, "kind": "status", "step": last_step, "state": state}) + "\n")
            for k in range(300 if state == "paused" else 0):  # a paused run keeps sampling the host
                f.write(_dumps({"v": 1, "t": t + k, "kind": "system", "step": last_step, "gpus": []}) + "\n")
        if with_file:
            StateFile(run, total_steps=10**6).set(state, last_step)
        if alive:
            write_pidfile(run, pid=holder)
        expected[run.name] = ("died" if state == "running" and not alive else state, last_step)
    return expected


def _all_rows(expected: dict[str, tuple[str, int]]) -> bool:
    text = tmux("capture-pane", "-p", "-t", SESSION)
    return all(_row_ok(text, name, state, step) for name, (state, step) in expected.items())


def _row_ok(text: str, name: str, state: str, step: int) -> bool:
    for line in text.splitlines():
        words = line.replace("│", " ").split()
        if name in words and state in words and f"{step:,}" in words:
            return True
    return False


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
    p.add_argument("--runs", type=int, default=20)
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
        # The whole history is in once the step axis starts at the first steps (thinned: 1 in a few;
        # the preview starts near the end).
        results["full_history_s"] = wait_screen(re.compile(rf"step [1-9] +{last_step:,}▲")) - t0
        results["full_history_cpu_s"] = sum(psutil.Process(pid).cpu_times()[:2])
        results["attached_rss_mb"] = psutil.Process(pid).memory_info().rss / 2**20
        stop_app()

        # 3. the runs list: --runs runs of --lines lines each, every row at its right state and step.
        listed = tmp / "list"
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        try:
            expected = write_runs(listed, big / "events.jsonl", args.runs, holder.pid)
            from hrm_tui import runs as runs_mod

            t, c = time.perf_counter(), time.process_time()
            infos = runs_mod.list_runs(listed)
            results["list_runs_call_s"] = time.perf_counter() - t
            results["list_runs_call_cpu_s"] = time.process_time() - c
            got = {i.name: (i.label, i.step) for i in infos}
            assert got == expected, f"runs list read wrong states: {got} != {expected}"
            t0, pid = start_app(["--runs-root", str(listed)], tmp)
            deadline = time.perf_counter() + 60
            while not _all_rows(expected) and time.perf_counter() < deadline:
                time.sleep(0.01)
            results["runs_list_s"] = time.perf_counter() - t0
            results["runs_list_cpu_s"] = sum(psutil.Process(pid).cpu_times()[:2])
            if not _all_rows(expected):
                raise TimeoutError(f"rows never right:\n{tmux('capture-pane', '-p', '-t', SESSION)}")
            stop_app()
        finally:
            holder.kill()
            holder.wait()
            shutil.rmtree(listed, ignore_errors=True)

        # 4. a live run appending 20 events/s: the app's CPU share and memory.
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
        "runs_list_s": 2.0,
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
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
