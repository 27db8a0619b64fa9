"""Data generation benchmark: generated `extreme` Sudokus and hard 30x30 mazes beside the real sets.

    .venv/bin/python bench/data.py [--sudoku N] [--mazes N] [--seed S] [--workers W] [--json PATH]

Sudoku: generation throughput, then the guess-count rating (SOURCES.md procedure) of every puzzle
after one random symmetry (digit relabel, band/row and stack/column shuffles, transpose p=0.5), for
the generated set and each real collection in ../shared/data, with the same code and the same
symmetry seeds. The rating is the compiled one (hrm.data.sudoku_fast.rate), which tests check equals
hrm.data.sudoku_solver.rate; it rates the real collections in seconds instead of minutes. The kernels
are compiled (or loaded from numba's cache) before the clock starts. Maze: hrm.data.maze.maze_benchmark
(throughput and path-length distribution beside ../shared/data/maze-30x30-hard-1k).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from hrm.data.augment import random_symmetry
from hrm.data.sudoku import rating_stats
from hrm.data.sudoku_fast import rate, warm_up
from hrm.data.sudoku_gen import generate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SUDOKU = {
    "sudoku-extreme-train-1k": "sudoku-extreme-train-1k/sudoku_extreme_train1k.hrm.csv",
    "magictour top1465": "tdoku-magictour-top1465/magictour_top1465.hrm.csv",
    "forum_hardest_1106": "tdoku-forum-hardest-1106/forum_hardest_1106.hrm.csv",
    "norvig top95": "norvig-top95/top95.hrm.csv",
    "nikoli_100": "sakana-nikoli-100/nikoli_100.hrm.csv",
}


def _read(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[0 if c in ".0" else int(c) for c in r["question"]] for r in rows], dtype=np.uint8)


def symmetric_ratings(puzzles: np.ndarray, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [rate(random_symmetry(p, rng)) for p in puzzles]


def _row(name: str, stats: dict, seconds: float) -> str:
    return (
        f"{name:26s} {stats['n']:6d} {stats['min']:6d} {stats['p10']:7d} {stats['median']:8g} {stats['p90']:7d} "
        f"{stats['max']:8d} {stats['zero_guess_fraction']:6.3f} {seconds:7.1f}s"
    )


def sudoku_bench(n: int, seed: int, workers: int | None, sym_seeds: list[int]) -> dict:
    warm_up()  # a fresh checkout compiles here once (~20 s); the workers then load the cache
    t0 = time.perf_counter()
    puzzles, _ = generate(
        n, "extreme", seed, workers=workers, progress=lambda k: print(f"\r  generated {k}/{n}", end="", flush=True)
    )
    gen_s = time.perf_counter() - t0
    w = workers or min(os.cpu_count() or 1, 8)  # generate()'s default for n >= 32
    print(
        f"\nextreme: {n} puzzles in {gen_s:.1f}s ({n / gen_s * 60:.0f}/min, workers={w}, "
        f"{n / gen_s * 60 / w:.0f}/min per worker)"
    )
    sets = {"generated extreme": puzzles}
    for name, rel in REAL_SUDOKU.items():
        if (SHARED / rel).is_file():
            sets[name] = _read(SHARED / rel)
    result: dict = {
        "n": n,
        "workers": w,
        "seconds": round(gen_s, 1),
        "per_minute": round(n / gen_s * 60, 1),
        "ratings": {},
    }
    for s in sym_seeds:
        print(f"\nrating after one random symmetry (seed {s})")
        print(
            f"{'set':26s} {'n':>6s} {'min':>6s} {'p10':>7s} {'median':>8s} {'p90':>7s} {'max':>8s} {'zero':>6s}  rate time"
        )
        for name, arr in sets.items():
            t = time.perf_counter()
            stats = rating_stats(symmetric_ratings(arr, s))
            print(_row(name, stats, time.perf_counter() - t), flush=True)
            result["ratings"].setdefault(name, {})[s] = stats
    return result


def maze_bench(n: int, seed: int) -> dict:
    from hrm.data.maze import maze_benchmark

    real = SHARED / "maze-30x30-hard-1k" / "npy"
    out = maze_benchmark(n, level="hard", size=30, seed=seed, real_dir=real if real.is_dir() else None)
    print(f"\nmazes: {n} hard 30x30 in {out['seconds']}s ({out['mazes_per_s']}/s)")
    keys = ("moves_min", "moves_p10", "moves_median", "moves_p90", "moves_max", "moves_mean", "wall_frac_median")
    print(f"{'set':12s} " + " ".join(f"{k[6:] if k.startswith('moves_') else k:>9s}" for k in keys))
    rows = {"generated": out["ours"], **{f"real {k}": v for k, v in out.get("real", {}).items()}}
    for name, st in rows.items():
        print(f"{name:12s} " + " ".join(f"{st[k]:9g}" for k in keys))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sudoku", type=int, default=1000, help="extreme Sudokus to generate (0 skips)")
    ap.add_argument("--mazes", type=int, default=1000, help="hard 30x30 mazes to generate (0 skips)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="generator processes (default: all cores)")
    ap.add_argument("--sym-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    report: dict = {"machine": f"{os.cpu_count()} cores"}
    if args.sudoku:
        report["sudoku"] = sudoku_bench(args.sudoku, args.seed, args.workers, args.sym_seeds)
    if args.mazes:
        report["maze"] = maze_bench(args.mazes, args.seed)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
