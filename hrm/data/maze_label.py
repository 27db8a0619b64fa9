"""The maze labeller (HRM-SPEC §5.4): the reference's BFS path, and the walls that make it the only shortest one."""

from __future__ import annotations

from collections import deque

import numpy as np

from hrm.data.maze_gen import GOAL, OPEN, PATH, START, WALL, distances_from

# --- the reference labeller ------------------------------------------------------------------------------


def bfs_label(grid: np.ndarray) -> np.ndarray:
    """The label of a maze token grid: BFS from S trying down, left, right, up; parent at first discovery;
    the path traced back from G drawn as PATH on the open cells between S and G."""
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1]:
        raise ValueError(f"a maze must be a square grid, got shape {grid.shape}")
    side = grid.shape[0]
    W = side + 2
    if (grid == START).sum() != 1 or (grid == GOAL).sum() != 1:
        raise ValueError("a maze needs exactly one S and one G")
    padded = np.zeros((W, W), dtype=bool)
    padded[1:-1, 1:-1] = grid != WALL
    passable = padded.ravel().tolist()
    sr, sc = np.argwhere(grid == START)[0]
    gr, gc = np.argwhere(grid == GOAL)[0]
    s, g = int((sr + 1) * W + sc + 1), int((gr + 1) * W + gc + 1)
    parent = [-1] * (W * W)
    parent[s] = s
    queue = deque([s])
    steps = (W, -1, 1, -W)  # down, left, right, up
    while queue:
        x = queue.popleft()
        if x == g:
            break
        for d in steps:
            y = x + d
            if passable[y] and parent[y] < 0:
                parent[y] = x
                queue.append(y)
    if parent[g] < 0:
        raise ValueError("G is not reachable from S")
    label = grid.copy()
    flat = label.reshape(-1)
    x = parent[g]
    while x != s:
        flat[(x // W - 1) * side + (x % W - 1)] = PATH
        x = parent[x]
    return label


def only_shortest_path(grid: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The maze with a wall on every cell that lies on some shortest S→G path but not on the label's:
    the label's path becomes the only shortest one (its length is unchanged), so an exact answer means
    the model found the shortest path, not which of the tied ones the labeller's BFS order picked
    (random-wall mazes have a median of 14 tied shortest paths at 11×11, millions at 30×30)."""
    grid = np.asarray(grid)
    passable = grid != WALL
    s = tuple(np.argwhere(grid == START)[0])
    g = tuple(np.argwhere(grid == GOAL)[0])
    from_s, to_g = distances_from(passable, s), distances_from(passable, g)
    on_some = (from_s >= 0) & (to_g >= 0) & (from_s + to_g == from_s[g])
    out = grid.copy()
    out[on_some & (np.asarray(label) != PATH) & (grid == OPEN)] = WALL
    return out
