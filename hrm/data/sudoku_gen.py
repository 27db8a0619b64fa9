"""Sudoku generation with exactly one solution, at a chosen difficulty.

Every puzzle starts from a random complete grid and keeps only givens of that grid, so its label is
that grid; uniqueness is checked by exhaustive search. Searches and ratings run in compiled kernels
(sudoku_fast, numba, ~100x the pure-Python solver); sudoku_solver is the readable definition that
tests hold them to.

`extreme` must be as hard as Sudoku-Extreme under the guess-count rating *after a random symmetry*
(real sample: median 318.5/315/337.5 for symmetry seeds 1/2/3). Random minimal puzzles rate about
30. Hill-climbing the rating of one labelling only learns its tie-breaks, and climbing
symmetry-invariant proxies reached medians of 75-190 (D2 report), so `extreme` is rejection
sampling: a random minimal puzzle is kept when its geometric-mean rating over k = 12 random
symmetries is at least 380. Most candidates are dropped after one cheap rating (the running mean
falls e^1.5 below the threshold); about 1 in 300 is kept, mostly 21-24 givens. Twelve symmetries
estimate a puzzle's labelling-free hardness better than four: on one pool of 86k candidates, k = 4
with threshold 550 (the previous recipe) kept 253 with fresh-symmetry medians 370/369/372, k = 12
with 380 kept 324 with 471/438/460. A candidate costs ~0.7 ms of CPU: grid 60 us, reduction to a
minimal puzzle 500 us, ratings 140 us (each symmetry is one 62-bit draw, sudoku_symmetry.numbered_transform).
Measured with bench/data.py on this 2-core VM while two other CPU-bound processes ran (load ~3):
1 worker, 1,000 puzzles in 293 s = 205/min per core, fresh-symmetry medians 408/448.5/433 (n = 1000)
against the real sample's 318.5/315/337.5; 2 workers, 300 in 99 s = 181/min (4 busy processes on 2
cores). Quiet machine, 2 workers: 1,000 in 90 s (670/min). The pure-Python generator made 12-14/min
on 2 cores.
Each puzzle has its own RNG seeded from (seed, level, index), so the output does not depend on the
number of worker processes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import random
from collections.abc import Callable

import numpy as np

from hrm.data import sudoku_fast as F
from hrm.data.sudoku_symmetry import numbered_transform

log = logging.getLogger(__name__)

# Level recipes. blanks: default (min, max) blank cells; extreme: symmetries per estimate, geometric-mean
# rating threshold, per-rating guess cap (see the module docstring for how k and threshold were chosen).
LEVELS: dict[str, dict] = {
    "easy": {"blanks": (30, 40)},
    "medium": {"blanks": (45, 54)},
    "extreme": {"k": 12, "threshold": 380.0, "cap": 50_000},
}
MAX_ATTEMPTS = 20_000  # per puzzle, before giving up on an impossible blanks/min_rating request


class GenerationError(RuntimeError):
    """The requested puzzles cannot be produced (e.g. blanks/min_rating out of reach)."""


def _random_grid(rng: random.Random) -> list[int]:
    """A random complete grid: 11 random consistent givens, then the first solution of a search."""
    out = np.empty(81, dtype=np.int64)
    while True:
        cells = np.array(rng.sample(range(81), 11), dtype=np.int64)
        if F.fill_grid(cells, np.array([rng.getrandbits(32) for _ in range(11)], dtype=np.int64), out):
            return out.tolist()


def _reduce(puz: list[int], rng: random.Random, min_clues: int = 0) -> list[int]:
    """Remove givens in random order while the solution stays unique, down to `min_clues`."""
    order = [i for i in range(81) if puz[i]]
    rng.shuffle(order)
    out = np.array(puz, dtype=np.int64)
    F.reduce_in_place(out, np.array(order, dtype=np.int64), min_clues)
    return out.tolist()


def symmetric_hardness(
    puz: list[int], rng: random.Random, k: int, cap: int, give_up_below: float | None = None
) -> float:
    """Geometric-mean rating over `k` random symmetries (each rating capped at `cap`).

    With `give_up_below`, stops early (returning the mean so far) once the running mean falls far
    (a factor e^1.5) below it: most candidates are easy, and the rest of their ratings are wasted.
    """
    arr = np.array(puz, dtype=np.int64)
    sym = np.empty(81, dtype=np.int64)
    total = 0.0
    for j in range(1, k + 1):
        numbered_transform(arr, rng.getrandbits(62), sym)  # one draw = one random symmetry
        total += math.log1p(F.guesses(sym, cap))
        if give_up_below is not None and total / j < math.log1p(give_up_below) - 1.5:
            return math.expm1(total / j)
    return math.expm1(total / k)


def _make_one(args: tuple) -> tuple[list[int], list[int], int]:
    """Puzzle number `index`: (puzzle, solution, attempts)."""
    index, level, seed, blanks, min_rating = args
    rng = random.Random(f"hrm-sudoku:{seed}:{level}:{index}")
    recipe = LEVELS[level]
    lo, hi = blanks if blanks is not None else recipe.get("blanks", (0, 81))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        grid = _random_grid(rng)
        if level == "extreme":
            puz = _reduce(grid, rng)
            if symmetric_hardness(puz, rng, recipe["k"], recipe["cap"], recipe["threshold"]) < recipe["threshold"]:
                continue
        else:
            puz = _reduce(grid, rng, min_clues=81 - rng.randint(lo, hi))
        nblank = puz.count(0)
        if not lo <= nblank <= hi:
            continue
        if min_rating is not None and F.rate(puz, limit=min_rating) < min_rating:
            continue
        return puz, grid, attempt
    wanted = [f"blanks in [{lo}, {hi}]"] if (lo, hi) != (0, 81) else []
    wanted += [f"rating >= {min_rating}"] if min_rating is not None else []
    wanted += [f"symmetric rating >= {recipe['threshold']:g}"] if level == "extreme" else []
    raise GenerationError(
        f"no {level} puzzle with {' and '.join(wanted)} after {MAX_ATTEMPTS} tries: "
        f"widen --blanks, lower --min-rating or choose an easier --level"
    )


def generate(
    n: int,
    level: str,
    seed: int,
    blanks: tuple[int, int] | None = None,
    min_rating: int | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` puzzles with exactly one solution: (puzzles uint8[n, 81] with 0 = blank, solutions uint8[n, 81]).

    `blanks=(min, max)` bounds the number of blank cells; `min_rating` keeps puzzles whose guess-count
    rating (as stored) is at least that. `progress(k)` is called with the number of puzzles finished.
    Deterministic in (n, level, seed, blanks, min_rating), whatever `workers` is.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown Sudoku level {level!r}: choose one of {', '.join(LEVELS)}")
    if blanks is not None:
        lo, hi = blanks
        if not 0 <= lo <= hi <= 64:
            raise ValueError(
                f"blanks must satisfy 0 <= min <= max <= 64 (a unique Sudoku has >= 17 givens), got {blanks}"
            )
        blanks = (int(lo), int(hi))
    jobs = [(i, level, seed, blanks, min_rating) for i in range(n)]
    puzzles = np.zeros((n, 81), dtype=np.uint8)
    solutions = np.zeros((n, 81), dtype=np.uint8)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if n >= 32 else 1
    if workers <= 1:
        results = map(_make_one, jobs)
        _collect(results, puzzles, solutions, progress)
    else:
        # compile (first run only) here, so the workers load the cache instead of each compiling
        F.warm_up(symmetries="k" in LEVELS[level])
        with mp.get_context("spawn").Pool(workers) as pool:
            _collect(pool.imap(_make_one, jobs, chunksize=1), puzzles, solutions, progress)
    return puzzles, solutions


def _collect(results, puzzles: np.ndarray, solutions: np.ndarray, progress: Callable[[int], None] | None) -> None:
    for i, (puz, sol, _attempts) in enumerate(results):
        puzzles[i] = puz
        solutions[i] = sol
        if progress is not None:
            progress(i + 1)
