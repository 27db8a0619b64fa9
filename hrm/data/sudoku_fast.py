"""Compiled (numba) Sudoku kernels for the generator: rating, solution counting, reduction, random grids.

sudoku_solver.py stays the readable definition; these kernels do the same work about 100x faster so
that `extreme` generation, which rates and reduces thousands of candidates per minute, is practical.
`rate` here makes exactly the moves of sudoku_solver.rate (same row-major placement of the givens,
same LIFO naked-single propagation over the same sorted peer lists, fewest-candidates cell with the
lowest index, digits ascending), so it returns the same guess count; tests/test_sudoku_fast.py checks
that on the real collections. The searches are iterative: one 81-cell candidate row per depth.

Kernels are compiled on first use (~20 s for all, `warm_up`) and cached on disk (`cache=True`), so
later processes, including the generator's worker processes, load them in under a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from hrm.data.sudoku_solver import PEERS as _PEER_LISTS
from hrm.data.sudoku_solver import UNITS as _UNIT_LISTS
from hrm.data.sudoku_solver import InvalidPuzzle, _as_list

ALL = 0x1FF
# Module-level arrays are frozen into the compiled code as constants.
PEERS = np.array(_PEER_LISTS, dtype=np.int64)  # [81, 20], each row sorted as in sudoku_solver
UNITS = np.array(_UNIT_LISTS, dtype=np.int64)  # [27, 9]
SOLVED, CAPPED, NO_SOLUTION = 0, 1, 2  # rate status


@njit(cache=True)
def _propagate(cand, stack, sp):
    """Naked singles from the placed cells stack[:sp]; False on a contradiction (as sudoku_solver)."""
    while sp > 0:
        sp -= 1
        cell = stack[sp]
        bit = cand[cell]
        for j in range(20):
            p = PEERS[cell, j]
            m = cand[p]
            if m & bit:
                m ^= bit
                if m == 0:
                    return False
                cand[p] = m
                if m & (m - 1) == 0:
                    stack[sp] = p
                    sp += 1
    return True


@njit(cache=True)
def _place_givens(puz, cand, stack):
    """Candidates after placing the givens in row-major order with propagation; False if they clash."""
    cand[:] = ALL
    for i in range(81):
        v = puz[i]
        if v:
            bit = 1 << (v - 1)
            if cand[i] & bit == 0:
                return False
            if cand[i] != bit:
                cand[i] = bit
                stack[0] = i
                if not _propagate(cand, stack, 1):
                    return False
    return True


@njit(cache=True)
def _popcount(m):
    n = 0
    while m:
        m &= m - 1
        n += 1
    return n


@njit(cache=True)
def _choose(cand):
    """The open cell with the fewest candidates (lowest index on ties), or -1 when all are placed."""
    best, best_n = -1, 10
    for i in range(81):
        m = cand[i]
        if m & (m - 1):
            n = _popcount(m)
            if n < best_n:
                best, best_n = i, n
                if n == 2:
                    break
    return best


@njit(cache=True)
def _digits(cand, out):
    for i in range(81):
        m = cand[i]
        d = 1
        while m > 1:
            m >>= 1
            d += 1
        out[i] = d


@njit(cache=True)
def _rate(puz, limit, out):
    """(guesses, status) of the rating DFS; `out` gets the solution when status is SOLVED. limit < 0: none."""
    cands = np.empty((82, 81), np.int32)
    stack = np.empty(96, np.int64)
    cells = np.empty(82, np.int64)
    rem = np.empty(82, np.int32)
    if not _place_givens(puz, cands[0], stack):
        return 0, NO_SOLUTION
    c = _choose(cands[0])
    if c < 0:
        _digits(cands[0], out)
        return 0, SOLVED
    guesses, d = 0, 0
    cells[0], rem[0] = c, cands[0, c]
    while d >= 0:
        if rem[d] == 0:  # every digit of this cell failed: back up
            d -= 1
            continue
        bit = rem[d] & -rem[d]  # lowest remaining digit first
        rem[d] ^= bit
        if guesses == limit:
            return guesses, CAPPED
        guesses += 1
        child = cands[d + 1]
        child[:] = cands[d]
        child[cells[d]] = bit
        stack[0] = cells[d]
        if _propagate(child, stack, 1):
            c = _choose(child)
            if c < 0:
                _digits(child, out)
                return guesses, SOLVED
            d += 1
            cells[d], rem[d] = c, child[c]
    return guesses, NO_SOLUTION


@njit(cache=True)
def _hidden_singles(cand, stack):
    """Place every digit with one spot left in a unit, to a fixpoint; False on a contradiction."""
    changed = True
    while changed:
        changed = False
        for u in range(27):
            once, twice = 0, 0
            for j in range(9):
                m = cand[UNITS[u, j]]
                twice |= once & m
                once |= m
            if once != ALL:
                return False
            only = once & ~twice
            if only == 0:
                continue
            sp = 0
            for j in range(9):
                i = UNITS[u, j]
                m = cand[i]
                if m & only and m & (m - 1):
                    bit = m & only
                    if bit & (bit - 1):
                        return False  # two digits can only go in this one cell
                    cand[i] = bit
                    stack[sp] = i
                    sp += 1
                    changed = True
            if sp and not _propagate(cand, stack, sp):
                return False
    return True


@njit(cache=True)
def _search(cands, limit, out, max_nodes=-1):
    """Solutions of the state cands[0], counted up to `limit` (naked + hidden singles); first one to `out`.

    With max_nodes >= 0 it gives up (returning -1) after that many branches.
    """
    stack = np.empty(96, np.int64)
    cells = np.empty(82, np.int64)
    rem = np.empty(82, np.int32)
    if not _hidden_singles(cands[0], stack):
        return 0
    c = _choose(cands[0])
    if c < 0:
        _digits(cands[0], out)
        return 1
    found, d = 0, 0
    cells[0], rem[0] = c, cands[0, c]
    while d >= 0:
        if rem[d] == 0:
            d -= 1
            continue
        bit = rem[d] & -rem[d]
        rem[d] ^= bit
        if max_nodes == 0:
            return -1
        max_nodes -= 1
        child = cands[d + 1]
        child[:] = cands[d]
        child[cells[d]] = bit
        stack[0] = cells[d]
        if _propagate(child, stack, 1) and _hidden_singles(child, stack):
            c = _choose(child)
            if c < 0:
                if found == 0:
                    _digits(child, out)
                found += 1
                if found >= limit:
                    return found
            else:
                d += 1
                cells[d], rem[d] = c, child[c]
    return found


@njit(cache=True)
def _count(puz, limit, out):
    cands = np.empty((82, 81), np.int32)
    stack = np.empty(96, np.int64)
    if not _place_givens(puz, cands[0], stack):
        return 0
    return _search(cands, limit, out)


@njit(cache=True)
def _unique_without(puz, cell, cands, stack, out):
    """Does the (uniquely solvable) puzzle keep one solution without its given at `cell`?"""
    digit = puz[cell]
    seen = 0
    for j in range(20):
        v = puz[PEERS[cell, j]]
        if v:
            seen |= 1 << (v - 1)
    if seen | (1 << (digit - 1)) == ALL:  # the peers' givens alone force it: the common early case
        return True
    puz[cell] = 0
    _place_givens(puz, cands[0], stack)
    puz[cell] = digit
    m = cands[0, cell] & ~(1 << (digit - 1))  # another solution must put another digit here
    if m == 0:
        return True
    cands[0, cell] = m
    if m & (m - 1) == 0:
        stack[0] = cell
        if not _propagate(cands[0], stack, 1):
            return True
    return _search(cands, 1, out) == 0


@njit(cache=True)
def reduce_in_place(puz, order, min_clues):
    """Remove givens of int64[81] `puz` in `order` while its solution stays unique, down to `min_clues`."""
    cands = np.empty((82, 81), np.int32)
    stack = np.empty(96, np.int64)
    out = np.empty(81, np.int64)
    clues = 0
    for i in range(81):
        clues += puz[i] != 0
    for c in order:
        if clues <= min_clues:
            break
        if puz[c] and _unique_without(puz, c, cands, stack, out):
            puz[c] = 0
            clues -= 1


@njit(cache=True)
def fill_grid(cells, picks, out):
    """Place candidate number picks[k] % (count) at cells[k], then the first solution to `out`; False on a dead end."""
    cands = np.empty((82, 81), np.int32)
    stack = np.empty(96, np.int64)
    cand = cands[0]
    cand[:] = ALL
    for k in range(len(cells)):
        m = cand[cells[k]]
        for _ in range(picks[k] % _popcount(m)):  # drop the lowest bits to reach the chosen candidate
            m &= m - 1
        cand[cells[k]] = m & -m
        stack[0] = cells[k]
        if not _propagate(cand, stack, 1):
            return False
    # a few random givens can leave a hard or dead state: redraw instead of a long search
    return _search(cands, 1, out, 2000) == 1


@njit(cache=True)
def guesses(puz, limit):
    """Guess count of a valid int64[81] puzzle, capped at `limit` (< 0: none); unchecked, for inner loops."""
    return _rate(puz, limit, np.empty(81, np.int64))[0]


def warm_up(symmetries: bool = True) -> None:
    """Compile every kernel now (or load it from the cache), so no timed or tested call pays for it; the
    symmetry kernel only with `symmetries` (the levels that rate under random symmetries)."""
    fill_grid(np.arange(81, dtype=np.int64), np.zeros(81, dtype=np.int64), np.empty(81, np.int64))
    reduce_in_place(np.zeros(81, dtype=np.int64), np.arange(1, dtype=np.int64), 0)
    rate([0] * 81, limit=1)
    count_solutions([0] * 81)
    guesses(np.zeros(81, dtype=np.int64), 1)
    if not symmetries:
        return
    from hrm.data.sudoku_symmetry import numbered_transform  # the generator's other kernel

    numbered_transform(np.zeros(81, dtype=np.int64), 0, np.empty(81, np.int64))


def _array(puzzle: Sequence[int]) -> np.ndarray:
    if isinstance(puzzle, np.ndarray) and puzzle.shape == (81,) and 0 <= puzzle.min() <= puzzle.max() <= 9:
        return puzzle.astype(np.int64)
    return np.array(_as_list(puzzle), dtype=np.int64)


def rate(puzzle: Sequence[int], limit: int | None = None) -> int:
    """sudoku_solver.rate, compiled: the SOURCES.md guess count, capped at `limit` guesses if given."""
    cap = -1 if limit is None else int(limit)
    guesses, status = _rate(_array(puzzle), cap, np.empty(81, np.int64))
    if status == NO_SOLUTION and (cap < 0 or guesses < cap):  # as sudoku_solver: a count at the cap stands
        raise InvalidPuzzle("the puzzle has no solution")
    return int(guesses)


def count_solutions(puzzle: Sequence[int], limit: int = 2) -> int:
    """Number of solutions, counting stops at `limit`."""
    return int(_count(_array(puzzle), int(limit), np.empty(81, np.int64)))


def solve(puzzle: Sequence[int]) -> list[int] | None:
    """One solution or None."""
    out = np.empty(81, np.int64)
    return out.tolist() if _count(_array(puzzle), 1, out) else None
