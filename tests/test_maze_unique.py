"""`data.unique_path`: generated mazes whose label is the only shortest S→G path (exact = solved)."""

from __future__ import annotations

from collections import deque

import numpy as np

from hrm.data.cache import ensure_dataset
from hrm.data.maze import GOAL, OPEN, PATH, START, WALL, bfs_label, generate, min_path_moves
from hrm.run.recipes import recipe_key


def shortest_paths(grid: np.ndarray) -> tuple[int, int]:
    """(moves, number of distinct shortest S→G paths), counted independently of the code under test."""
    side = grid.shape[0]
    s = tuple(np.argwhere(grid == START)[0])
    g = tuple(np.argwhere(grid == GOAL)[0])
    dist, count = {s: 0}, {s: 1}
    queue = deque([s])
    while queue:
        r, c = queue.popleft()
        for y in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= y[0] < side and 0 <= y[1] < side and grid[y] != WALL:
                if y not in dist:
                    dist[y], count[y] = dist[(r, c)] + 1, 0
                    queue.append(y)
                if dist[y] == dist[(r, c)] + 1:
                    count[y] += count[(r, c)]
    return dist[g], count[g]


def test_unique_path_mazes_have_one_shortest_path_and_keep_the_label():
    plain = generate(40, level="medium", size=11, seed=5)
    unique = generate(40, level="medium", size=11, seed=5, unique_path=True)
    assert sum(shortest_paths(q)[1] > 1 for q, _ in plain) > 30  # ties are the rule without the option
    for (q0, a0), (q1, a1) in zip(plain, unique):
        moves, n = shortest_paths(q1)
        assert n == 1
        assert moves == shortest_paths(q0)[0] >= min_path_moves("medium", 11)  # same length: only ties removed
        assert np.array_equal(a1, bfs_label(q1))  # the reference labeller agrees on the new grid
        assert np.array_equal(a1 == PATH, a0 == PATH)  # the same path as the plain maze's label
        changed = q1 != q0
        assert np.all((q0[changed] == OPEN) & (q1[changed] == WALL))  # only open cells became walls


def test_recipe_key_changes_only_when_the_option_is_on():
    base = {"task": "maze", "level": "medium", "size": 11, "train": 10, "test": 5, "aug": False, "seed": 0}
    assert recipe_key({**base, "unique_path": False}) == recipe_key(base)  # existing caches stay valid
    assert recipe_key({**base, "unique_path": True}) != recipe_key(base)


def test_the_trainers_dataset_build_applies_the_option(tmp_path):
    recipe = {"task": "maze", "level": "medium", "size": 11, "train": 12, "test": 6, "seed": 1, "unique_path": True}
    root = ensure_dataset(recipe, cache_root=tmp_path, progress=False)
    for split in ("train", "test"):
        inputs = np.load(root / split / "all__inputs.npy")
        for row in inputs:
            assert shortest_paths(row.reshape(11, 11))[1] == 1
