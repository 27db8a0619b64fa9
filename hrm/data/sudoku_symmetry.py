"""The Sudoku generator's symmetry kernel (numba): the transforms of `hrm.data.augment` numbered by one
integer. The generator rates every `extreme` candidate under several random symmetries: one
`getrandbits(62)` and one compiled call instead of seven permutation draws and a Python loop. Kept apart
from augment.py so that augmenting a dataset (from the reference CSVs, say) never imports numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _take(pool, n, code):
    """Remove and return pool[code % n] (a step of decoding a permutation from a number)."""
    k = code % n
    v = pool[k]
    pool[k : n - 1] = pool[k + 1 : n].copy()
    return v


@njit(cache=True)
def numbered_transform(puz, code, out):
    """`puz` (int64[81]) under the symmetry numbered `code` >= 0, into `out`. The number is read in mixed
    radix: digit permutation, transpose, band order, rows per band, stack order, columns per stack (the
    transforms of hrm.data.augment); one 62-bit draw covers all 9!*2*6^8 ~ 2^40 of them near-uniformly."""
    pool = np.arange(1, 10)
    digits = np.zeros(10, np.int64)
    for d in range(1, 10):
        digits[d] = _take(pool, 10 - d, code)
        code //= 10 - d
    transpose = code & 1
    code >>= 1
    lines = np.empty((2, 9), np.int64)  # new row r / column c takes old row / column lines[., .]
    for a in range(2):
        groups = np.arange(3)
        for g in range(3):
            block = _take(groups, 3 - g, code)
            code //= 3 - g
            inner = np.arange(3)
            for r in range(3):
                lines[a, g * 3 + r] = block * 3 + _take(inner, 3 - r, code)
                code //= 3 - r
    for k in range(81):
        src = lines[0, k // 9] * 9 + lines[1, k % 9]
        if transpose:
            src = (src % 9) * 9 + src // 9
        out[k] = digits[puz[src]]
