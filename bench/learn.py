"""Does it learn on 2 CPU cores? Train sudoku-cpu and maze-cpu for N minutes each (wall clock)
with the real trainer (`python -m hrm.train`), and print over time the held-out accuracy on the
cells that matter — Sudoku: blank cells; maze: path cells (recall) — and exact accuracy.

Both are the trainer's own `eval` events: `changed_accuracy` is the accuracy on cells whose label
differs from the input (exactly the Sudoku blanks, and the maze path cells), `exact_accuracy` the
share of puzzles solved whole.

    python bench/learn.py                      # 30 min per task
    python bench/learn.py --minutes 10 --tasks maze --set optim.lr=2e-3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.run.control import send_command  # noqa: E402  (torch-free)
from hrm.run.events import EventTailer  # noqa: E402

TARGETS = {"sudoku": (0.95, 0.50), "maze": (0.90, 0.50)}
METRIC = {"sudoku": "blank acc", "maze": "path recall"}


def run_task(task: str, preset: str, minutes: float, overrides: list[str], root: Path, threads: int) -> dict:
    run_dir = root / f"{preset}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    cmd = [sys.executable, "-m", "hrm.train", preset, "--run-dir", str(run_dir), *overrides]
    print(f"\n== {task}: {' '.join(cmd[2:])}", flush=True)
    run_dir.mkdir(parents=True)
    log = open(run_dir / "bench-stdout.log", "w")
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tail = EventTailer(run_dir / "events.jsonl")
    t_start: float | None = None  # the clock starts when training starts (after the dataset build)
    stopped_at: float | None = None
    curve: list[dict] = []
    last_train: dict = {}
    print(
        f"{'min':>6} {'step':>7} {'train exact':>11} {METRIC[task]:>12} {'eval exact':>10} {'act steps':>9}", flush=True
    )
    try:
        while p.poll() is None:
            for e in tail.read():
                if e["kind"] == "status" and e["state"] == "running" and t_start is None:
                    t_start = time.monotonic()
                elif e["kind"] == "train":
                    last_train = e
                elif e["kind"] == "eval" and t_start is not None:
                    row = {
                        "minutes": ((stopped_at or time.monotonic()) - t_start) / 60,
                        "step": e["step"],
                        "train_exact": last_train.get("exact_accuracy"),
                        "changed_accuracy": e.get("changed_accuracy"),
                        "exact_accuracy": e["exact_accuracy"],
                        "act_steps": e.get("act_steps_hist"),
                    }
                    curve.append(row)
                    print(
                        f"{row['minutes']:6.1f} {row['step']:7d} {_pct(row['train_exact']):>11} "
                        f"{_pct(row['changed_accuracy']):>12} {_pct(row['exact_accuracy']):>10} "
                        f"{_mean_hist(e.get('act_steps_hist')):>9}",
                        flush=True,
                    )
            if t_start is not None and stopped_at is None and time.monotonic() - t_start > minutes * 60:
                stopped_at = time.monotonic()
                send_command(run_dir, "eval", timeout=600)
                send_command(run_dir, "stop", timeout=600)
            time.sleep(1.0)
        for e in tail.read():
            if e["kind"] == "eval":
                curve.append(
                    {
                        "minutes": minutes,
                        "step": e["step"],
                        "changed_accuracy": e.get("changed_accuracy"),
                        "exact_accuracy": e["exact_accuracy"],
                        "train_exact": last_train.get("exact_accuracy"),
                    }
                )
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(120)
    best = max(curve, key=lambda r: (r["exact_accuracy"] or 0, r.get("changed_accuracy") or 0)) if curve else {}
    return {"task": task, "preset": preset, "run_dir": str(run_dir), "curve": curve, "best": best}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mean_hist(h: list[int] | None) -> str:
    if not h or not sum(h):
        return "-"
    return f"{sum((i + 1) * c for i, c in enumerate(h)) / sum(h):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall clock per task")
    ap.add_argument("--tasks", default="sudoku,maze")
    ap.add_argument("--sudoku-preset", default="sudoku-cpu")
    ap.add_argument("--maze-preset", default="maze-cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every task")
    ap.add_argument("--runs-root", type=Path, default=REPO / "runs" / "bench-learn")
    # On a machine shared with other jobs, OpenMP threads that spin-wait for a busy core make a step
    # ~8x slower (measured: 5 s vs 0.6 s per step); one thread per trainer avoids that. 0 = torch's default.
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trainer (0: torch default)")
    ap.add_argument("--json", type=Path, help="also write the curves here")
    args = ap.parse_args()
    results = []
    for task in args.tasks.split(","):
        preset = args.sudoku_preset if task == "sudoku" else args.maze_preset
        results.append(run_task(task, preset, args.minutes, args.set, args.runs_root, args.threads))
    print(f"\n== summary (machine: {os.cpu_count() or 0} CPU cores, {os.uname().nodename})")
    for r in results:
        b = r["best"]
        need_cells, need_exact = TARGETS[r["task"]]
        ok = (b.get("changed_accuracy") or 0) >= need_cells and (b.get("exact_accuracy") or 0) >= need_exact
        print(
            f"{r['task']:7} {METRIC[r['task']]} {_pct(b.get('changed_accuracy'))}  exact {_pct(b.get('exact_accuracy'))}"
            f"  at step {b.get('step')}  ({b.get('minutes', 0):.1f} min)  target {'met' if ok else 'NOT met'}"
            f"  [{r['run_dir']}]"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
