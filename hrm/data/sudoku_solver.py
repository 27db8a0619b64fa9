"""Sudoku solving, counting and the guess-count rating (pure Python bitmasks).

Grids are 81 cells in row-major order, 0 = blank, 1..9 = digit (any int sequence or numpy array).
Internally every cell holds a 9-bit candidate mask (bit d-1 = digit d); a cell whose mask has one bit
is placed. Search nodes copy the 81-int list, which is cheaper in CPython than undoing changes.

The rating is the one of ../shared/data/SOURCES.md "Rating procedure": naked-single propagation only,
branch on the empty cell with the fewest candidates (ties: lowest index), digits ascending, each
tentative placement one guess, stop at the first complete grid. The result of naked-single
propagation (a fixpoint or a contradiction) does not depend on the order of placements, so placing
all givens and propagating once equals placing them one by one in row-major order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALL = 0x1FF
_BIT = [0] + [1 << (d - 1) for d in range(1, 10)]  # digit -> mask bit
_DIGIT = {1 << (d - 1): d for d in range(1, 10)}  # single-bit mask -> digit
_POP = [bin(m).count("1") for m in range(512)]
# Branching key: candidate count for open cells, 10 (never chosen) for placed ones.
_KEY = [p if p >= 2 else 10 for p in _POP]
_BITS = [[1 << d for d in range(9) if m >> d & 1] for m in range(512)]  # ascending digits

ROWS = [[r * 9 + c for c in range(9)] for r in range(9)]
COLS = [[r * 9 + c for r in range(9)] for c in range(9)]
BOXES = [[(br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
UNITS = ROWS + COLS + BOXES
PEERS: list[tuple[int, ...]] = [tuple(sorted({p for u in UNITS if i in u for p in u} - {i})) for i in range(81)]
_CELL_UNITS = [tuple(u for u in UNITS if i in u) for i in range(81)]


class InvalidPuzzle(ValueError):
    """The givens contradict each other (two equal digits in a row, column or box) or a value is out of range."""


def _propagate(cand: list[int], stack: list[int]) -> bool:
    """Naked-single propagation from the placed cells in `stack`; False on a contradiction."""
    peers = PEERS
    while stack:
        cell = stack.pop()
        bit = cand[cell]
        for p in peers[cell]:
            m = cand[p]
            if m & bit:
                m ^= bit
                if not m:
                    return False
                cand[p] = m
                if not m & (m - 1):
                    stack.append(p)
    return True


def initial_candidates(puzzle: Sequence[int]) -> list[int] | None:
    """Candidate masks after placing the givens with propagation; None if the givens contradict."""
    cand = [ALL] * 81
    stack: list[int] = []
    for i, v in enumerate(_as_list(puzzle)):
        if v:
            bit = _BIT[v]
            if not cand[i] & bit:
                return None
            if cand[i] != bit:
                cand[i] = bit
                stack.append(i)
                if not _propagate(cand, stack):
                    return None
    return cand


def _as_list(puzzle: Sequence[int]) -> list[int]:
    vals = puzzle.tolist() if isinstance(puzzle, np.ndarray) else list(puzzle)
    if len(vals) != 81:
        raise InvalidPuzzle(f"a Sudoku has 81 cells, got {len(vals)}")
    for v in vals:
        if not 0 <= v <= 9:
            raise InvalidPuzzle(f"cell values must be 0 (blank) or 1..9, got {v}")
    return [int(v) for v in vals]


def _grid(cand: list[int]) -> list[int]:
    return [_DIGIT[m] for m in cand]


class _Capped(Exception):
    pass


def rate(puzzle: Sequence[int], limit: int | None = None) -> int:
    """Guess count of the SOURCES.md rating procedure. Raises InvalidPuzzle if it has no solution.

    With `limit`, the search stops once it has made `limit` guesses and returns `limit`.
    """
    guesses, grid = rate_and_solve(puzzle, limit)
    if grid is None and (limit is None or guesses < limit):
        raise InvalidPuzzle("the puzzle has no solution")
    return guesses


def rate_and_solve(puzzle: Sequence[int], limit: int | None = None) -> tuple[int, list[int] | None]:
    """(guesses, first solution found or None) of the rating DFS (None also when capped at `limit`)."""
    cand = initial_candidates(puzzle)
    if cand is None:
        return 0, None
    counter = [0, limit if limit is not None else -1]
    try:
        grid = _rate_dfs(cand, counter)
    except _Capped:
        return counter[0], None
    return counter[0], grid


def _rate_dfs(cand: list[int], counter: list[int]) -> list[int] | None:
    keys = list(map(_KEY.__getitem__, cand))
    k = min(keys)
    if k == 10:
        return _grid(cand)
    cell = keys.index(k)
    for bit in _BITS[cand[cell]]:
        if counter[0] == counter[1]:
            raise _Capped
        counter[0] += 1
        child = cand[:]
        child[cell] = bit
        if _propagate(child, [cell]):
            grid = _rate_dfs(child, counter)
            if grid is not None:
                return grid
    return None


def _hidden_singles(cand: list[int], stack: list[int]) -> bool:
    """Place every digit that has one spot left in a unit (repeat to a fixpoint); False on contradiction."""
    changed = True
    while changed:
        changed = False
        for unit in UNITS:
            once = twice = 0
            for i in unit:
                m = cand[i]
                twice |= once & m
                once |= m
            if once != ALL:
                return False
            only = once & ~twice
            if not only:
                continue
            for i in unit:
                m = cand[i]
                if m & only and m & (m - 1):
                    bit = m & only
                    if bit & (bit - 1):
                        return False  # two digits can only go in this one cell
                    cand[i] = bit
                    stack.append(i)
                    changed = True
            if changed and not _propagate(cand, stack):
                return False
    return True


def _count_dfs(cand: list[int], limit: int, found: list[list[int]]) -> None:
    if not _hidden_singles(cand, []):
        return
    keys = list(map(_KEY.__getitem__, cand))
    k = min(keys)
    if k == 10:
        found.append(_grid(cand))
        return
    cell = keys.index(k)
    for bit in _BITS[cand[cell]]:
        child = cand[:]
        child[cell] = bit
        if _propagate(child, [cell]):
            _count_dfs(child, limit, found)
            if len(found) >= limit:
                return


def solutions(puzzle: Sequence[int], limit: int = 2) -> list[list[int]]:
    """Up to `limit` solutions (naked + hidden singles, fewest-candidates branching)."""
    cand = initial_candidates(puzzle)
    if cand is None:
        return []
    found: list[list[int]] = []
    _count_dfs(cand, limit, found)
    return found


def count_solutions(puzzle: Sequence[int], limit: int = 2) -> int:
    """Number of solutions, counting stops at `limit` (so 2 means 'two or more')."""
    return len(solutions(puzzle, limit))


def solve(puzzle: Sequence[int]) -> list[int] | None:
    """One solution or None."""
    found = solutions(puzzle, 1)
    return found[0] if found else None


def is_valid_solution(grid: Sequence[int]) -> bool:
    """Every row, column and box holds 1..9 once."""
    g = _as_list(grid)
    return all(sorted(g[i] for i in unit) == list(range(1, 10)) for unit in UNITS)
