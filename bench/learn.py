"""Does recursion pay on 2 CPU cores? Train the recursive CPU presets (HRM and TRM with cycles and ACT on)
beside the one-pass baseline of the same task, for the same minutes of training each, with the real trainer
(`python -m hrm.train`), and print held-out accuracy on the cells that matter — Sudoku: blanks; mazes: path
cells (recall) — and exact accuracy every few minutes, then the final table with each run's eval halting
histogram (the segment at which the model's own Q head would halt, 1..halt_max_steps).

Everything comes from the trainers' own events.jsonl: `changed_accuracy`, `exact_accuracy`, `act_steps_hist`
of the `eval` events; a run's minutes are the time it spent in state `running` (its `status` events) less the
time its evaluations took (their `seconds`), so the dataset build, pauses and evals do not count: a recursive
model's eval runs every segment and costs more, which says nothing about how fast it learns.

    python bench/learn.py                                   # Sudoku and mazes, 3 presets each, side by side
    python bench/learn.py --tasks sudoku --minutes 10 --mode alternate --slice 1
    python bench/learn.py --presets sudoku-cpu,trm-sudoku-cpu --minutes 5
    python bench/learn.py --report runs/bench-learn/trm-sudoku-cpu-*   # the table of runs already made

--mode parallel (default) runs all presets at once, one thread each (on 2 cores, 3 runs share them: compare
only runs made together). --mode alternate keeps one trainer stepping at a time and pauses the others
(`pause`/`resume` commands), switching every --slice minutes of training, and starts each trainer only once
the one before it is stepping or paused: fair on a busy machine, and never two trainers stepping at once.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.run.control import send_command  # noqa: E402  (torch-free)
from hrm.run.events import EventTailer  # noqa: E402
from hrm.run.layout import EVENTS_FILE  # noqa: E402

PRESETS = {
    "sudoku": ("sudoku-cpu", "sudoku-think-cpu", "trm-sudoku-cpu"),
    "maze": ("maze-cpu", "maze-think-cpu", "trm-maze-cpu"),
}
TARGETS = {"sudoku": (0.95, 0.50), "maze": (0.90, 0.50)}
METRIC = {"sudoku": "blanks", "maze": "path"}
STEPPING = ("running", "paused")


class Follower:
    """One run's curve, built from its events alone (so synthetic event files test it)."""

    def __init__(self, preset: str, run_dir: Path) -> None:
        self.preset, self.run_dir = preset, run_dir
        self.task = "sudoku" if "maze" not in preset else "maze"  # until the run event says
        self.one_pass: bool | None = None
        self.state = "starting"
        self.running_s = 0.0  # closed intervals in state running
        self.eval_s = 0.0  # time spent evaluating (inside those intervals)
        self.since: float | None = None  # start of the open running interval
        self.last_t: float | None = None
        self.rows: list[dict[str, Any]] = []
        self.tail = EventTailer(run_dir / EVENTS_FILE)

    def minutes(self, now: float | None = None) -> float:
        """Training minutes so far; `now` (epoch seconds) extends an open running interval."""
        open_s = 0.0
        if self.since is not None:
            open_s = max(0.0, (now if now is not None else self.last_t or self.since) - self.since)
        return max(0.0, self.running_s + open_s - self.eval_s) / 60

    def feed(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take new events; returns the eval rows they added."""
        new = []
        for e in events:
            t = e.get("t")
            if isinstance(t, (int, float)):
                self.last_t = float(t)
            kind = e.get("kind")
            if kind == "run":
                self.task = e.get("task") or self.task
                m = (e.get("config") or {}).get("model") or {}
                self.one_pass = m.get("halt_max_steps") == 1 and m.get("H_cycles") == m.get("L_cycles") == 1
            elif kind == "status":
                self._status(str(e.get("state")), self.last_t)
            elif kind == "eval":
                self.eval_s += float(e.get("seconds") or 0.0)
                row = {
                    "minutes": self.minutes(),
                    "step": e.get("step"),
                    "changed_accuracy": e.get("changed_accuracy"),
                    "exact_accuracy": e.get("exact_accuracy"),
                    "act_steps_hist": e.get("act_steps_hist") or [],
                }
                self.rows.append(row)
                new.append(row)
        return new

    def _status(self, state: str, t: float | None) -> None:
        if self.since is not None and t is not None:
            self.running_s += max(0.0, t - self.since)
        self.since = t if state == "running" else None
        self.state = state

    def poll(self) -> list[dict[str, Any]]:
        return self.feed(self.tail.read())

    @property
    def last(self) -> dict[str, Any]:
        return self.rows[-1] if self.rows else {}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def mean_steps(hist: list[int]) -> str:
    n = sum(hist)
    return f"{sum((i + 1) * c for i, c in enumerate(hist)) / n:.2f}" if n else "-"


def hist_text(hist: list[int]) -> str:
    """`1:12 2:40 6:204` — the non-empty bins of the eval halting histogram (1-based segment)."""
    return " ".join(f"{i + 1}:{c}" for i, c in enumerate(hist) if c) or "-"


def table(followers: list[Follower]) -> str:
    """The latest eval of every run, with its halting histogram and, per task, exact minus the one-pass run's."""
    base = {f.task: f.last.get("exact_accuracy") for f in followers if f.one_pass and f.rows}
    head = f"{'preset':18} {'task':6} {'min':>5} {'step':>6} {'cells':>7} {'exact':>7} {'vs 1-pass':>9} {'segs':>5}"
    lines = [head + "  eval halting (segment:count)"]
    for f in followers:
        r = f.last
        ex, b = r.get("exact_accuracy"), base.get(f.task)
        delta = "-" if f.one_pass or ex is None or b is None else f"{100 * (ex - b):+.1f}"
        lines.append(
            f"{f.preset:18} {f.task:6} {f.minutes():5.1f} {r.get('step', '-')!s:>6} "
            f"{pct(r.get('changed_accuracy')):>7} {pct(ex):>7} {delta:>9} {mean_steps(r.get('act_steps_hist', [])):>5}"
            f"  {hist_text(r.get('act_steps_hist', []))}"
        )
    return "\n".join(lines)


def summary(followers: list[Follower]) -> str:
    """Per run: the final figures against the issue's targets (cells: blanks / path recall)."""
    out = []
    for f in followers:
        r, (need_cells, need_exact) = f.last, TARGETS[f.task]
        ok = (r.get("changed_accuracy") or 0) >= need_cells and (r.get("exact_accuracy") or 0) >= need_exact
        out.append(
            f"{f.preset:18} {METRIC[f.task]} {pct(r.get('changed_accuracy'))} exact {pct(r.get('exact_accuracy'))}"
            f" at step {r.get('step', '-')} after {f.minutes():.1f} min: target {'met' if ok else 'NOT met'}"
            f"  [{f.run_dir}]"
        )
    return "\n".join(out)


def report(run_dirs: list[Path]) -> list[Follower]:
    """Followers of finished runs (their preset from config.yaml's run event)."""
    out = []
    for d in run_dirs:
        f = Follower(d.name, d)
        events = f.tail.read()
        run = next((e for e in events if e.get("kind") == "run"), {})
        f.preset = ((run.get("config") or {}).get("run") or {}).get("preset") or d.name
        f.feed(events)
        out.append(f)
    return out


def machine_line() -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count() or 0} CPU cores, {os.uname().nodename}, load average (1/5/15 min) {load}"


def start(preset: str, overrides: list[str], root: Path, threads: int) -> tuple[subprocess.Popen[bytes], Follower]:
    run_dir = root / f"{preset}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "hrm.train", preset, "--run-dir", str(run_dir), *overrides]
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(run_dir / "bench-stdout.log", "wb") as log:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"started {' '.join(cmd[2:])}", flush=True)
    return p, Follower(preset, run_dir)


def bench(args: argparse.Namespace, presets: list[str]) -> list[Follower]:
    pending = list(presets)
    procs: list[tuple[subprocess.Popen[bytes], Follower]] = []
    if args.mode == "parallel":
        procs, pending = [start(p, args.set, args.runs_root, args.threads) for p in presets], []
    followers = [f for _, f in procs]
    done: set[Path] = set()  # runs told to finish (final eval + stop)
    active = 0  # alternate mode: the one trainer allowed to step
    slice_end = args.slice
    next_print = time.monotonic() + args.every * 60
    try:
        while pending or any(p.poll() is None for p, _ in procs):
            now = time.time()
            if pending and all(_settled(p, f, i == active) for i, (p, f) in enumerate(procs)):
                procs.append(start(pending.pop(0), args.set, args.runs_root, args.threads))
                followers.append(procs[-1][1])
            for i, (p, f) in enumerate(procs):
                f.poll()
                if p.poll() is not None or f.run_dir in done:
                    continue
                if args.mode == "alternate" and f.state == "running" and i != active:
                    _command(f, "pause")
                if f.minutes(now) >= args.minutes:
                    done.add(f.run_dir)
                    _command(f, "eval")
                    _command(f, "stop")
            if args.mode == "alternate":
                active, slice_end = _rotate(procs, done, active, slice_end, args.slice, now)
            if time.monotonic() >= next_print:
                next_print += args.every * 60
                print(f"\n{datetime.now(timezone.utc):%H:%M:%S} UTC\n{table(followers)}", flush=True)
            time.sleep(1.0)
        for f in followers:
            f.poll()
    finally:
        for p, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(120)
    return followers


def _settled(p: subprocess.Popen[bytes], f: Follower, active: bool) -> bool:
    """Alternate mode: ended, paused, or the one run allowed to step (so the next one may start)."""
    return p.poll() is not None or f.state == "paused" or (active and f.state in STEPPING)


def _rotate(
    procs: list[tuple[subprocess.Popen[bytes], Follower]],
    done: set[Path],
    active: int,
    slice_end: float,
    n: float,
    now: float,
) -> tuple[int, float]:
    """Alternate mode: after `n` training minutes of the active run (or when it is done), resume the next."""
    f = procs[active][1]
    if f.run_dir not in done and procs[active][0].poll() is None and f.minutes(now) < slice_end:
        return active, slice_end
    # only runs that can step now: one still starting would leave the machine idle until it is up
    left = [i for i, (p, g) in enumerate(procs) if g.run_dir not in done and p.poll() is None and g.state in STEPPING]
    if not left:
        return active, slice_end
    nxt = min(left, key=lambda i: (procs[i][1].minutes(now), i))  # the one furthest behind
    if nxt != active and f.run_dir not in done and procs[active][0].poll() is None:
        _command(f, "pause")
    g = procs[nxt][1]
    if g.state == "paused":
        _command(g, "resume")
    return nxt, g.minutes(now) + n


def _command(f: Follower, cmd: str) -> None:
    try:
        send_command(f.run_dir, cmd, timeout=600)
    except Exception as exc:  # a trainer that just ended cannot answer: the loop sees it exit
        print(f"{f.preset}: {cmd} not delivered ({exc})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="training minutes per run (time in state running)")
    ap.add_argument("--tasks", default="sudoku,maze", help="sudoku, maze or both: their presets (PRESETS)")
    ap.add_argument("--presets", help="comma-separated presets instead of --tasks' (one-pass ones are the baseline)")
    ap.add_argument("--mode", choices=("parallel", "alternate"), default="parallel")
    ap.add_argument("--slice", type=float, default=2.0, help="alternate mode: training minutes per turn")
    ap.add_argument("--every", type=float, default=3.0, help="print the table every N wall-clock minutes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--runs-root", type=Path, default=REPO / "runs" / "bench-learn")
    # On a machine shared with other jobs, OpenMP threads that spin-wait for a busy core make a step
    # ~8x slower (measured: 5 s vs 0.6 s per step); one thread per trainer avoids that. 0 = torch's default.
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each trainer (0: torch default)")
    ap.add_argument("--report", type=Path, nargs="+", metavar="RUN_DIR", help="only print the table of these runs")
    ap.add_argument("--json", type=Path, help="also write the curves here")
    args = ap.parse_args(argv)
    if args.report:
        missing = [d for d in args.report if not (d / EVENTS_FILE).is_file()]
        if missing:
            print(f"learn.py: no {EVENTS_FILE} in {missing[0]}: give run directories of the trainer", file=sys.stderr)
            return 2
        followers = report(args.report)
    else:
        presets = args.presets.split(",") if args.presets else [p for t in args.tasks.split(",") for p in PRESETS[t]]
        print(machine_line(), flush=True)
        followers = bench(args, presets)
    print(f"\n== final ({machine_line()})\n{table(followers)}\n\n{summary(followers)}", flush=True)
    if args.json:
        curves = [{"preset": f.preset, "task": f.task, "run_dir": str(f.run_dir), "curve": f.rows} for f in followers]
        args.json.write_text(json.dumps(curves, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
