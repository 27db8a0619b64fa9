"""Reference Sudoku augmentation (HRM-SPEC §5.3) in hrm.data.augment, the generator's numbered form of it
(hrm.data.sudoku_symmetry), and numba only where puzzles are generated."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm.data.augment import (
    apply_transform,
    augment,
    augment_all,
    random_symmetry,
    random_transform,
)
from hrm.data.sudoku_gen import _random_grid, _reduce
from hrm.data.sudoku_solver import count_solutions, is_valid_solution, solve
from hrm.data.sudoku_symmetry import numbered_transform


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    grid = _random_grid(rng)
    return np.array(_reduce(grid, rng), dtype=np.uint8), np.array(grid, dtype=np.uint8)


def test_transform_follows_the_spec_draw_order():
    # Replay the draws in the spec's order and build the map by hand: digits, transpose, bands,
    # rows per band, stacks, columns per stack; new (i, j) takes old (row_perm[i], col_perm[j])
    # of the optionally transposed grid.
    for seed in range(6):
        digit_map, src = random_transform(np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        digits = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
        transpose = rng.random() < 0.5
        row_perm = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
        col_perm = np.concatenate([s * 3 + rng.permutation(3) for s in rng.permutation(3)])
        old = np.arange(81).reshape(9, 9)
        if transpose:
            old = old.T
        expect = np.array([[old[row_perm[i], col_perm[j]] for j in range(9)] for i in range(9)]).reshape(81)
        assert np.array_equal(src, expect)
        assert np.array_equal(digit_map, digits) and digit_map[0] == 0


@pytest.mark.slow  # checks every augmented grid of many puzzles
def test_augmentation_preserves_validity_and_uniqueness():
    puzzle, solution = _pair(1)
    group = augment(puzzle, solution, 8, np.random.default_rng(0))
    assert len(group) == 9
    assert np.array_equal(group[0][0], puzzle) and np.array_equal(group[0][1], solution)
    seen = set()
    for p, s in group:
        assert is_valid_solution(s)
        given = p > 0
        assert np.array_equal(p[given], s[given])
        assert given.sum() == (puzzle > 0).sum()
        assert count_solutions(p) == 1 and solve(p) == s.tolist()
        seen.add(p.tobytes())
    assert len(seen) > 1  # copies really differ from the original


def test_augment_all_groups_and_seeding():
    pairs = [_pair(s) for s in range(3)]
    puzzles = np.stack([p for p, _ in pairs])
    solutions = np.stack([s for _, s in pairs])
    a = augment_all(puzzles, solutions, 4, seed=9)
    b = augment_all(puzzles, solutions, 4, seed=9)
    c = augment_all(puzzles, solutions, 4, seed=10)
    assert [len(g) for g in a] == [5, 5, 5]
    for k, g in enumerate(a):
        assert np.array_equal(g[0][0], puzzles[k])  # copy 0 is the original, in its own group
        for _p, s in g:  # every copy keeps its original's solution up to relabelling
            assert sorted(np.bincount(s, minlength=10)[1:]) == [9] * 9
    flat = lambda gs: np.concatenate([np.stack([p for p, _ in g]) for g in gs])  # noqa: E731
    assert np.array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(c))
    assert len(augment_all(puzzles, solutions, 0, seed=0)[0]) == 1


def test_random_symmetry_keeps_validity():
    puzzle, solution = _pair(4)
    rng = np.random.default_rng(3)
    for _ in range(5):
        digit_map, src = random_transform(rng)
        s2 = apply_transform(solution, digit_map, src)
        assert is_valid_solution(s2)
    p2 = random_symmetry(puzzle, np.random.default_rng(5))
    assert count_solutions(p2) == 1 and (p2 > 0).sum() == (puzzle > 0).sum()


def _decode(code: int) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """The documented mixed radix, by hand: digits (Lehmer), transpose, band/rows, stack/columns."""

    def take(pool: list[int]) -> int:
        nonlocal code
        code, k = divmod(code, len(pool))
        return pool.pop(k)

    pool = list(range(1, 10))
    digits = [0] + [take(pool) for _ in range(9)]
    transpose = bool(code & 1)
    code >>= 1
    perms = []
    for _ in range(2):
        groups, perm = [0, 1, 2], []
        for _ in range(3):
            block, inner = take(groups), [0, 1, 2]
            perm += [block * 3 + take(inner) for _ in range(3)]
        perms.append(perm)
    return np.array(digits), transpose, np.array(perms[0]), np.array(perms[1])


@pytest.mark.slow  # numba compiles the transform (~17 s under load)
def test_numbered_transform_is_the_augmentation_family():
    puzzle, solution = _pair(6)
    rng = random.Random(0)
    out = np.empty(81, dtype=np.int64)
    numbered_transform(solution.astype(np.int64), 0, out)
    assert np.array_equal(out, solution)  # number 0 is the identity
    transposed = 0
    for _ in range(200):
        code = rng.getrandbits(62)
        digits, transpose, row_perm, col_perm = _decode(code)
        old = np.arange(81).reshape(9, 9)
        src = (old.T if transpose else old)[row_perm][:, col_perm].reshape(81)
        for grid in (puzzle, solution):
            numbered_transform(grid.astype(np.int64), code, out)
            assert np.array_equal(out, apply_transform(grid, digits, src))
        assert is_valid_solution(out)
        transposed += transpose
    assert 70 < transposed < 130


def test_a_dataset_built_from_csv_with_augmentation_never_imports_numba(tmp_path: Path) -> None:
    # the generator's kernels compile on first use (~20 s): a build that generates nothing must not pay it
    puzzle, solution = _pair(3)
    row = "{},{},{},{}\n"
    for split in ("train", "test"):
        lines = ["source,question,answer,rating\n"] + [
            row.format("s", "".join(str(d) if d else "." for d in puzzle), "".join(map(str, solution)), 0)
        ] * 2
        (tmp_path / f"{split}.csv").write_text("".join(lines))
    probe = (
        "import sys\nfrom hrm.data.sudoku import build_dataset\n"
        f"s = build_dataset({str(tmp_path / 'out')!r}, from_csv={str(tmp_path)!r}, num_aug=2, progress=False)\n"
        "print(s['train_examples'], 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["6", "False"]  # 2 puzzles × (original + 2 augmented copies), no numba
