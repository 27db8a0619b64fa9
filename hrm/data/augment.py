"""Validity-preserving Sudoku transforms: the reference training augmentation (HRM-SPEC §5.3).

One transform = digit relabelling (a permutation of 1..9, 0 = blank fixed), transpose with p = 0.5,
a shuffle of the 3 bands and of the 3 rows inside each band, the same for stacks/columns. After the
optional transpose, new cell (i, j) takes old cell (row_perm[i], col_perm[j]). The same transform is
applied to a puzzle and its solution. Draws come from an explicit numpy Generator, in the reference's
order (digits, transpose, bands, rows per band, stacks, columns per stack).

The same family compiled and indexed by one integer, for the Sudoku generator's ratings, is
`hrm.data.sudoku_symmetry.numbered_transform` (numba: imported only where puzzles are generated).
"""

from __future__ import annotations

import numpy as np


def random_transform(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(digit_map int[10] with digit_map[0] = 0, src int[81]): new flat cell k takes old cell src[k]."""
    digit_map = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    transpose = bool(rng.random() < 0.5)
    bands = rng.permutation(3)
    row_perm = np.concatenate([b * 3 + rng.permutation(3) for b in bands])
    stacks = rng.permutation(3)
    col_perm = np.concatenate([s * 3 + rng.permutation(3) for s in stacks])
    src = (row_perm[:, None] * 9 + col_perm[None, :]).reshape(81)  # index into the (transposed) grid
    if transpose:  # cell r*9+c of the transposed grid is cell c*9+r of the original
        src = (src % 9) * 9 + src // 9
    return digit_map, src


def apply_transform(grid: np.ndarray, digit_map: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Transform an 81-cell digit grid (0 blank); returns uint8[81]."""
    flat = np.asarray(grid).reshape(81)
    return digit_map[flat[src]].astype(np.uint8)


def random_symmetry(puzzle: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The puzzle under one random validity-preserving transform (for fair rating comparisons)."""
    return apply_transform(puzzle, *random_transform(rng))


def augment(
    puzzle: np.ndarray, solution: np.ndarray, num_aug: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One group: the original (copy 0) then `num_aug` transformed copies, each (puzzle, solution)."""
    group = [(np.asarray(puzzle, dtype=np.uint8).reshape(81), np.asarray(solution, dtype=np.uint8).reshape(81))]
    for _ in range(num_aug):
        digit_map, src = random_transform(rng)
        group.append((apply_transform(puzzle, digit_map, src), apply_transform(solution, digit_map, src)))
    return group


def augment_all(
    puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, seed: int
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Groups for a whole training split (digit grids, 0 blank), seeded."""
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    rng = np.random.default_rng(seed)
    return [augment(p, s, num_aug, rng) for p, s in zip(puzzles, solutions)]
