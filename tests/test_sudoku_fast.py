"""The compiled Sudoku kernels (hrm.data.sudoku_fast) against the readable solver and the real data."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from hrm.data import sudoku_fast as F
from hrm.data import sudoku_solver as S
from hrm.data.augment import random_symmetry
from hrm.data.sudoku_gen import _random_grid, _reduce, generate

# (collection CSV, rows checked): every row, except the 17-clue sample whose 5000 rows cost ~30 s
COLLECTIONS = [
    ("sudoku-extreme-train-1k/sudoku_extreme_train1k.hrm.csv", None),
    ("norvig-top95/top95.hrm.csv", None),
    ("norvig-hardest/hardest.hrm.csv", None),
    ("sakana-nikoli-100/nikoli_100.hrm.csv", None),
    ("tdoku-magictour-top1465/magictour_top1465.hrm.csv", None),
    ("tdoku-forum-hardest-1106/forum_hardest_1106.hrm.csv", None),
    ("tdoku-forum-hardest-1905-11plus/forum_hardest_1905_11plus.sample5000.hrm.csv", None),
    ("tdoku-17-clue/17_clue.sample5000.hrm.csv", 300),
]


def _rows(shared: Path, rel: str, limit: int | None = None) -> list[dict]:
    with (shared / rel).open(newline="") as fh:
        return list(csv.DictReader(fh))[:limit]


def _digits(q: str) -> np.ndarray:
    return np.array([0 if ch in ".0" else int(ch) for ch in q], dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    """Load (or compile, on a fresh checkout) the kernels once, outside any single test's time."""
    F.warm_up()


@pytest.mark.slow  # thousands of real puzzles rated twice
@pytest.mark.parametrize("rel,limit", COLLECTIONS)
def test_fast_rating_equals_the_csv_rating_of_every_real_puzzle(shared_data, rel, limit):
    # The CSV rating column is the SOURCES.md guess count (test_sudoku checks the Python rater on it).
    for r in _rows(shared_data, rel, limit):
        assert F.rate(_digits(r["question"])) == int(r["rating"]), (rel, r["source"])


@pytest.mark.slow  # the Python rater on many puzzles
def test_fast_rating_equals_python_rating_under_random_symmetries(shared_data):
    # Capped at 3000 guesses so the Python side stays quick; a capped count is min(true count, cap).
    rng = np.random.default_rng(0)
    checked = 0
    for rel, _ in COLLECTIONS:
        for r in _rows(shared_data, rel, 25):
            p = random_symmetry(_digits(r["question"]), rng)
            assert F.rate(p, limit=3000) == S.rate(p, limit=3000), (rel, r["source"], "".join(map(str, p)))
            checked += 1
    assert checked == 25 * len(COLLECTIONS) - (25 - 12)  # hardest has 12 rows


@pytest.mark.slow  # the Python rater on many puzzles
def test_fast_rating_equals_python_rating_on_generated_puzzles():
    rng = random.Random(5)
    for _ in range(40):
        p = _reduce(_random_grid(rng), rng)
        assert F.rate(p) == S.rate(p)
        for cap in (0, 1, 7):
            assert F.rate(p, limit=cap) == S.rate(p, limit=cap)
    puzzles, _ = generate(3, "extreme", seed=1, workers=1)
    for p in puzzles:
        assert F.rate(p, limit=20_000) == S.rate(p, limit=20_000)


def test_counting_and_solving_agree_with_the_python_solver(shared_data):
    for r in _rows(shared_data, "norvig-top95/top95.hrm.csv", 20):
        p = _digits(r["question"])
        assert F.count_solutions(p) == 1
        assert F.solve(p) == S.solve(p) == [int(c) for c in r["answer"]]
    assert F.count_solutions([0] * 81) == 2 and F.count_solutions([0] * 81, limit=5) == 5
    grid = _random_grid(random.Random(0))
    bad = list(grid)
    bad[0], bad[1] = bad[1], bad[0]
    assert F.count_solutions(bad) == 0 and F.solve(bad) is None
    with pytest.raises(S.InvalidPuzzle):
        F.rate(bad)
    with pytest.raises(S.InvalidPuzzle, match="81 cells"):
        F.rate([0] * 80)


def test_reduce_gives_a_minimal_puzzle_of_the_grid():
    rng = random.Random(3)
    for _ in range(5):
        grid = _random_grid(rng)
        assert S.is_valid_solution(grid)
        puz = _reduce(grid, rng)
        assert S.solutions(puz, 2) == [grid]
        for c in (i for i in range(81) if puz[i]):  # minimal: every given is needed
            q = list(puz)
            q[c] = 0
            assert S.count_solutions(q) == 2
    puz = _reduce(grid, rng, min_clues=40)
    assert sum(1 for v in puz if v) == 40 and S.solutions(puz, 2) == [grid]


@pytest.mark.slow  # generates extreme puzzles in worker processes
def test_extreme_generation_is_unique_seeded_and_worker_independent():
    a = generate(4, "extreme", seed=21, workers=1)
    b = generate(4, "extreme", seed=21, workers=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for p, s in zip(*a):
        assert S.solutions(p, 2) == [s.tolist()]
    assert len({p.tobytes() for p in a[0]}) == 4
