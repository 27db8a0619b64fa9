"""Maze generation (torch-free).

A maze is a square grid of walls and open cells with one start S and one goal G (HRM-SPEC §5.4).
The real Maze-Hard set looks like i.i.d. random walls (~37 %) with S and G placed anywhere, kept when the
shortest S→G path has at least 109 moves. We sample the same way and make the filter cheap with
bit-parallel BFS: thousands of grids at once in numpy (one machine word per grid row) for the first
filters, then one Python int per grid (one bit per cell) for the survivors. A grid is dropped as soon as
a bound shows it cannot hold a long enough shortest path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from hrm.run.tasks import MAZE_LEVEL_SIZES, MAZE_VOCAB_SIZE

CHARSET = "# SGo"  # token = index + 1; 0 is PAD
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = MAZE_VOCAB_SIZE

# level → (default side, minimum shortest path in moves as a function of side)
# level -> (default side, shortest path in moves per unit of side)
_PATH_PER_SIDE = {"easy": 1.0, "medium": 2.0, "hard": 109 / 30}
LEVELS: dict[str, tuple[int, float]] = {k: (MAZE_LEVEL_SIZES[k], v) for k, v in _PATH_PER_SIDE.items()}
WALL_DENSITY = (0.30, 0.44)  # per-maze density drawn uniformly; the length filter pulls the median to ~37 %


def min_path_moves(level: str, size: int) -> int:
    """Shortest S→G path (moves) a maze of this level must have; hard at 30×30 gives 109 like the real set."""
    if level not in LEVELS:
        raise ValueError(f"unknown maze level {level!r}; choose one of {', '.join(LEVELS)}")
    return math.ceil(round(LEVELS[level][1] * size, 6))


# --- bit-parallel BFS ------------------------------------------------------------------------------------
# Cell (r, c) of a side×side grid is bit (r+1)*W + (c+1) with W = side+2: a frame of wall bits means a
# shift never wraps from one row into the next.


def _open_mask(open_cells: np.ndarray) -> int:
    side = open_cells.shape[0]
    padded = np.zeros((side + 2, side + 2), dtype=bool)
    padded[1:-1, 1:-1] = open_cells
    return int.from_bytes(np.packbits(padded.ravel(), bitorder="little").tobytes(), "little")


def _levels(mask: int, start_bit: int, W: int, stop_after: int | None = None) -> list[int]:
    """BFS frontiers from one cell as bitsets: levels[k] = cells at distance k."""
    seen = frontier = 1 << start_bit
    levels = [frontier]
    while frontier:
        nxt = ((frontier << W) | (frontier >> W) | (frontier << 1) | (frontier >> 1)) & mask & ~seen
        if not nxt:
            break
        seen |= nxt
        levels.append(nxt)
        frontier = nxt
        if stop_after is not None and len(levels) > stop_after:
            break
    return levels


def _bits(x: int) -> np.ndarray:
    """Bit positions set in x (ascending)."""
    raw = np.frombuffer(x.to_bytes((x.bit_length() + 7) // 8 or 1, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little"))


def distances_from(open_cells: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    """Moves from `cell` to every cell over open cells ([side, side] int64; -1 where unreachable), from the
    bit-parallel BFS levels."""
    side = open_cells.shape[0]
    W = side + 2
    dist = np.full((W * W,), -1, dtype=np.int64)
    start = (int(cell[0]) + 1) * W + int(cell[1]) + 1  # a Python int: bit shifts past 64 bits
    for k, level in enumerate(_levels(_open_mask(open_cells), start, W)):
        dist[_bits(level)] = k
    return dist.reshape(W, W)[1:-1, 1:-1]


def _lowest_bit(x: int) -> int:
    return (x & -x).bit_length() - 1


def _pick_bit(x: int, rng: np.random.Generator) -> int:
    b = _bits(x)
    return int(b[rng.integers(len(b))])


# --- batched first filter: many grids at once, one machine word per grid row -----------------------------


def _rows(open_cells: np.ndarray) -> np.ndarray:
    """[B, side, side] bool → [B, side+2] uint32/uint64 row masks (bit c+1 of row r+1 = cell (r, c))."""
    B, side, _ = open_cells.shape
    nbits = 32 if side + 2 <= 32 else 64
    padded = np.zeros((B, side + 2, nbits), dtype=bool)
    padded[:, 1:-1, 1 : side + 1] = open_cells
    return np.packbits(padded, axis=-1, bitorder="little").view(f"<u{nbits // 8}")[..., 0]


def _step(f: np.ndarray, free: np.ndarray) -> np.ndarray:
    """One BFS level for many grids stored as one flat array of row words; `free` (open, unseen) is updated.

    Frontier bits are open cells only, so a ±1 bit shift never leaves its row word, and a ±1 word shift
    that crosses from one grid into the next lands in a frame row, which `free` never holds.
    """
    one = f.dtype.type(1)
    n = (f << one) | (f >> one)
    n[1:] |= f[:-1]
    n[:-1] |= f[1:]
    n &= free
    free ^= n
    return n


def _run(rows: np.ndarray, start: np.ndarray, levels: int) -> np.ndarray:
    """Frontier after `levels` BFS levels ([B, H]; all zero for grids whose BFS ended earlier)."""
    B, H = rows.shape
    f = start.reshape(-1).copy()
    free = rows.reshape(-1) & ~f
    for _ in range(levels):
        f = _step(f, free)
    return f.reshape(B, H)


def _farthest(rows: np.ndarray, start: np.ndarray, done: int) -> np.ndarray:
    """Continue BFS from the frontier `start` (level `done`) until each grid's BFS ends; the last frontiers.

    `rows` must already exclude the cells seen so far (the caller passes the still-free cells)."""
    last = start.copy()
    idx = np.arange(len(rows))
    f, free = start, rows
    while len(idx):
        B, H = f.shape
        flat = f.reshape(-1)
        fr = free.reshape(-1).copy()
        n = _step(flat, fr).reshape(B, H)
        alive = n.any(axis=1)
        dead = ~alive
        if dead.any():  # finished grids leave the batch
            last[idx[dead]] = f[dead]
        idx, f, free = idx[alive], n[alive], fr.reshape(B, H)[alive]
    return last


def _lowest_cell(frontier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, bit) of the lowest set bit of each grid's frontier [B, H]."""
    r = np.argmax(frontier != 0, axis=1)
    x = frontier[np.arange(len(frontier)), r]
    low = x & (~x + frontier.dtype.type(1))
    return r, np.log2(low.astype(np.float64)).astype(np.int64)


def _one_hot(rows: np.ndarray, r: np.ndarray, b: np.ndarray) -> np.ndarray:
    start = np.zeros_like(rows)
    start[np.arange(len(rows)), r] = rows.dtype.type(1) << b.astype(rows.dtype)
    return start


def _long_grids(side: int, min_moves: int, rng: np.random.Generator, batch: int) -> list[tuple[np.ndarray, int]]:
    """(open cells [side, side], u) for the grids out of `batch` random ones whose double-sweep diameter is
    ≥ min_moves; u (bit index, stride side+2) is the far end of the first sweep."""
    p = rng.uniform(*WALL_DENSITY, size=(batch, 1, 1)).astype(np.float32)
    draws = rng.random((batch, side, side), dtype=np.float32)
    open_cells = draws >= p
    rows = _rows(open_cells)
    # start anywhere: the open cell with the largest draw is uniform among the open cells
    flat = np.argmax(draws.reshape(batch, -1), axis=1)
    start = _one_hot(rows, flat // side + 1, flat % side + 1)
    # sweep 1: diameter ≤ 2·eccentricity(start), so grids whose BFS dies before half the length never qualify
    half = (min_moves + 1) // 2
    B, H = rows.shape
    f = start.reshape(-1).copy()
    free = rows.reshape(-1) & ~f
    for _ in range(half):
        f = _step(f, free)
    f, free = f.reshape(B, H), free.reshape(B, H)
    keep = np.flatnonzero(f.any(axis=1))
    r, b = _lowest_cell(_farthest(free[keep], f[keep], half))
    # sweep 2 from the far end u: its eccentricity is the double-sweep diameter estimate
    start2 = _one_hot(rows[keep], r, b)
    alive = _run(rows[keep], start2, min_moves).any(axis=1)
    W = side + 2
    return [(open_cells[keep[j]], int(r[j]) * W + int(b[j])) for j in np.flatnonzero(alive)]


def _to_grid(open_cells: np.ndarray, s: int, g: int) -> np.ndarray:
    W = open_cells.shape[0] + 2
    grid = np.where(open_cells, OPEN, WALL).astype(np.uint8)
    grid[s // W - 1, s % W - 1] = START
    grid[g // W - 1, g % W - 1] = GOAL
    return grid


def _bits_to_rows(x: int, side: int) -> np.ndarray:
    """A bitset of stride side+2 → [side+2] row words (the batched layout)."""
    W = side + 2
    raw = np.frombuffer(x.to_bytes((W * W + 7) // 8, "little"), dtype=np.uint8)
    cells = np.unpackbits(raw, bitorder="little")[: W * W].reshape(W, W)[1:-1, 1:-1].astype(bool)
    return _rows(cells[None])[0]


class _Candidate:
    """A grid with a long double-sweep diameter, and the S draws of its pair tries (see `_choose_pairs`)."""

    def __init__(self, open_cells: np.ndarray, u: int, min_moves: int, rng: np.random.Generator, tries: int):
        self.open_cells, self.W = open_cells, open_cells.shape[0] + 2
        self.mask = mask = _open_mask(open_cells)
        lu = _levels(mask, u, self.W)
        lv = _levels(mask, _lowest_bit(lu[-1]), self.W)
        comp = near_u = near_v = 0
        for k, level in enumerate(lu):
            comp |= level
            if k < min_moves - (len(lu) - 1):
                near_u |= level
        for level in lv[: max(0, min_moves - (len(lv) - 1))]:
            near_v |= level
        # ecc(S) ≤ d(S,u) + ecc(u), the same for v: cells failing either bound, or off u's component, can't be S
        possible = comp & ~near_u & ~near_v
        self.comp = comp
        open_bits = _bits(mask)
        self.n_open = len(open_bits)
        self.draws = open_bits[rng.integers(self.n_open, size=tries)].tolist()
        self.need = (rng.random(tries) * self.n_open).tolist()  # keep S iff its far-cell count exceeds this
        self.cand = sorted({s for s in self.draws if (possible >> s) & 1})


def _far_counts(rows: np.ndarray, comp_rows: np.ndarray, starts: np.ndarray, W: int, min_moves: int) -> np.ndarray:
    """Per start (row i holds its grid's open rows and component rows): how many cells of the component
    lie ≥ min_moves away. One batched BFS for the starts of all grids."""
    f = _one_hot(rows, starts // W, starts % W).reshape(-1)
    free = rows.reshape(-1) & ~f
    for _ in range(min_moves - 1):
        f = _step(f, free)
    return np.bitwise_count(free & comp_rows.reshape(-1)).reshape(len(starts), -1).sum(axis=1)


def _choose_pairs(cands: list[_Candidate], min_moves: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mazes from the candidate grids whose tries found a pair.

    Each try draws S uniformly over open cells and keeps it with probability (#cells ≥ min_moves from S) /
    #open, then G is uniform among those far cells. Per try that is exactly uniform-pair rejection, so grids
    with many far pairs are favoured over grids that barely qualify — as in the real set, where this makes
    the median path 112 moves rather than 109.
    """
    todo = [c for c in cands if c.cand]
    if not todo:
        return []
    side = todo[0].open_cells.shape[0]
    owner = [j for j, c in enumerate(todo) for _ in c.cand]
    grid_rows = _rows(np.stack([c.open_cells for c in todo]))
    comp_rows = np.stack([_bits_to_rows(c.comp, side) for c in todo])
    counts = _far_counts(
        grid_rows[owner], comp_rows[owner], np.array([s for c in todo for s in c.cand]), side + 2, min_moves
    ).tolist()
    out, i = [], 0
    for c in todo:
        far = dict(zip(c.cand, counts[i : i + len(c.cand)]))
        i += len(c.cand)
        for s, t in zip(c.draws, c.need):
            if far.get(s, 0) > t:
                near = 0
                for level in _levels(c.mask, s, c.W, stop_after=min_moves - 1):
                    near |= level
                out.append(_to_grid(c.open_cells, s, _pick_bit(c.comp & ~near, rng)))
                break
    return out


def iter_mazes(
    n: int,
    side: int,
    min_moves: int,
    rng: np.random.Generator,
    batch: int = 2048,
    pair_tries: int = 64,
    give_up_after: int = 30,
) -> Iterator[np.ndarray]:
    """Yield n mazes (token grids [side, side]) whose S→G shortest path has ≥ min_moves moves.

    Batches of random grids grow from 128 to `batch` (small requests stay cheap); gives up (RuntimeError)
    when `give_up_after` batches in a row yield no maze."""
    if not 2 <= side <= 62:
        raise ValueError(f"maze size must be 2..62, got {side}")
    made, idle, size = 0, 0, min(128, batch)
    while made < n and idle < give_up_after:
        idle += 1
        grids = _long_grids(side, min_moves, rng, size)
        size = min(2 * size, batch)
        cands = [_Candidate(oc, u, min_moves, rng, pair_tries) for oc, u in grids]
        for maze in _choose_pairs(cands, min_moves, rng):
            idle = 0
            yield maze
            made += 1
            if made == n:
                return
    if made == n:
        return
    raise RuntimeError(
        f"no {side}×{side} maze with a shortest path ≥ {min_moves} moves in {give_up_after} batches of "
        f"random grids: that is too long for this size; use an easier --level or a larger --size"
    )


def shortest_path_moves(grid: np.ndarray) -> int:
    """BFS distance S→G in moves (−1 when G is unreachable)."""
    side = grid.shape[0]
    W = side + 2
    mask = _open_mask(grid != WALL)
    (sr, sc), (gr, gc) = np.argwhere(grid == START)[0].tolist(), np.argwhere(grid == GOAL)[0].tolist()
    goal = 1 << ((gr + 1) * W + gc + 1)
    for k, level in enumerate(_levels(mask, (sr + 1) * W + sc + 1, W)):
        if level & goal:
            return k
    return -1
