from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest

from hrm.data.csvio import CsvFormatError
from hrm.data.format import OutputExistsError, dihedral_transform, load_split, read_metadata
from hrm.data.maze import (
    GOAL,
    OPEN,
    PATH,
    START,
    WALL,
    bfs_label,
    build_dataset,
    decode,
    encode,
    generate,
    maze_benchmark,
    maze_stats,
    min_path_moves,
    shortest_path_moves,
)
from hrm.data.maze_gen import iter_mazes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = SHARED / "maze-30x30-hard-1k"
needs_shared = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/maze-30x30-hard-1k is absent")


def _plain_bfs_distance(grid: np.ndarray) -> int:
    """Independent check: a textbook BFS over the token grid."""
    n = grid.shape[0]
    s = tuple(np.argwhere(grid == START)[0])
    g = tuple(np.argwhere(grid == GOAL)[0])
    dist = {s: 0}
    q = deque([s])
    while q:
        r, c = q.popleft()
        for dr, dc in ((1, 0), (0, -1), (0, 1), (-1, 0)):
            y = (r + dr, c + dc)
            if 0 <= y[0] < n and 0 <= y[1] < n and grid[y] != WALL and y not in dist:
                dist[y] = dist[(r, c)] + 1
                q.append(y)
    return dist.get(g, -1)


def assert_valid_label(inp: np.ndarray, lab: np.ndarray) -> None:
    """The label is the input with a shortest S→G path drawn as PATH on open cells."""
    assert np.array_equal(np.where(lab == PATH, OPEN, lab), inp)
    assert (inp[lab == PATH] == OPEN).all()
    on = {tuple(x) for x in np.argwhere((lab == PATH) | (lab == START) | (lab == GOAL))}
    s = tuple(np.argwhere(inp == START)[0])
    g = tuple(np.argwhere(inp == GOAL)[0])
    # walk the chain from S: every step has exactly one unvisited path neighbour until G
    cur, prev, steps = s, None, 0
    while cur != g:
        nxt = [(cur[0] + a, cur[1] + b) for a, b in ((1, 0), (0, -1), (0, 1), (-1, 0))]
        nxt = [y for y in nxt if y in on and y != prev]
        assert len(nxt) == 1, f"path branches or breaks at {cur}"
        prev, cur, steps = cur, nxt[0], steps + 1
    assert steps == len(on) - 1 == _plain_bfs_distance(inp)


@needs_shared
@pytest.mark.parametrize("split", ["train", "test"])
def test_labeller_reproduces_every_real_label(split):
    a = load_split(REAL / "npy", split)
    inputs = np.asarray(a["inputs"]).reshape(-1, 30, 30)
    labels = np.asarray(a["labels"]).reshape(-1, 30, 30)
    mismatched = [i for i in range(len(inputs)) if not np.array_equal(bfs_label(inputs[i]), labels[i])]
    assert mismatched == [] and len(inputs) == 1000


@needs_shared
def test_from_csv_rebuilds_the_real_arrays_exactly(tmp_path):
    summary = build_dataset(tmp_path / "ds", from_csv=REAL, progress=False)
    for split in ("train", "test"):
        ours, real = load_split(tmp_path / "ds", split), load_split(REAL / "npy", split)
        for k in real:
            assert ours[k].dtype == real[k].dtype and np.array_equal(ours[k], real[k]), (split, k)
    # the numbers ../shared/data/SOURCES.md reports for the real train split
    t = summary["train"]
    assert (t["moves_min"], t["moves_median"], t["moves_p90"], t["moves_max"]) == (109, 112, 121, 146)
    assert summary["test"]["mazes"] == 1000


def test_generated_hard_mazes_match_the_real_rules():
    rng = np.random.Generator(np.random.Philox(7))
    mazes = list(iter_mazes(4, 30, min_path_moves("hard", 30), rng))
    assert min_path_moves("hard", 30) == 109
    for m in mazes:
        assert m.shape == (30, 30) and (m == START).sum() == 1 and (m == GOAL).sum() == 1
        assert set(np.unique(m)) <= {WALL, OPEN, START, GOAL}
        assert shortest_path_moves(m) == _plain_bfs_distance(m) >= 109
        assert 0.25 < (m == WALL).mean() < 0.47
        assert_valid_label(m, bfs_label(m))


@pytest.mark.parametrize("level,size", [("easy", 9), ("medium", 15), ("easy", 12)])
def test_small_levels_meet_their_minimum_path(level, size):
    pairs = generate(20, level=level, size=size, seed=3)
    assert len({q.tobytes() for q, _ in pairs}) == 20
    for q, a in pairs:
        assert q.shape == (size, size)
        assert_valid_label(q, a)
        assert (a == PATH).sum() + 1 >= min_path_moves(level, size)


def test_impossible_length_fails_with_advice():
    with pytest.raises(RuntimeError, match="--level or a larger --size"):
        generate(1, level="hard", size=6)
    with pytest.raises(ValueError, match="unknown maze level"):
        min_path_moves("nightmare", 30)


def test_builder_writes_reference_metadata_and_dihedral_groups(tmp_path):
    summary = build_dataset(tmp_path / "ds", train=6, test=3, level="easy", size=9, aug=True, seed=1, progress=False)
    meta = read_metadata(tmp_path / "ds", "train")
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id) == (6, 81, 0, 0)
    assert (meta.total_groups, meta.total_puzzles, meta.sets) == (6, 48, ["all"])
    a = load_split(tmp_path / "ds", "train")
    assert a["group_indices"].tolist() == list(range(0, 49, 8))
    inputs, labels = a["inputs"].reshape(-1, 9, 9), a["labels"].reshape(-1, 9, 9)
    for gi in range(6):
        base_in, base_lab = inputs[gi * 8], labels[gi * 8]
        for t in range(8):
            assert np.array_equal(inputs[gi * 8 + t], dihedral_transform(base_in, t))
            assert np.array_equal(labels[gi * 8 + t], dihedral_transform(base_lab, t))
            assert_valid_label(inputs[gi * 8 + t], labels[gi * 8 + t])
    test = load_split(tmp_path / "ds", "test")
    assert len(test["inputs"]) == 3 and test["group_indices"].tolist() == [0, 1, 2, 3]
    assert summary["train"]["examples"] == 48 and summary["seconds"] >= 0


def test_same_seed_same_dataset_other_seed_other(tmp_path):
    kw = dict(train=5, test=2, level="easy", size=9, progress=False)
    build_dataset(tmp_path / "a", seed=4, **kw)
    build_dataset(tmp_path / "b", seed=4, **kw)
    build_dataset(tmp_path / "c", seed=5, **kw)
    a, b, c = (load_split(tmp_path / x, "train")["inputs"] for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(OutputExistsError, match="--force"):
        build_dataset(tmp_path / "a", seed=4, **kw)


def _write_csv(path: Path, rows: list[str]) -> None:
    path.write_text("source,question,answer,rating\n" + "".join(r + "\n" for r in rows))


def test_malformed_csv_row_names_file_and_line(tmp_path):
    q = "S  #" + "   G"  # not square: 8 characters
    good_q, good_a = "S #" + "   " + "# G", "So#" + " o " + "#oG"
    _write_csv(tmp_path / "train.csv", [f"x:1,{good_q},{good_a},3", f"x:2,{q},{q},3"])
    _write_csv(tmp_path / "test.csv", [f"x:1,{good_q},{good_a},3"])
    with pytest.raises(CsvFormatError) as e:
        build_dataset(tmp_path / "out", from_csv=tmp_path, progress=False)
    assert f"{tmp_path / 'train.csv'}:3" in str(e.value) and "square" in str(e.value)
    wrong = "S #" + "#  " + "# G"  # a wall where the question has an open cell
    _write_csv(tmp_path / "train.csv", [f"x:1,{good_q},{wrong},3"])
    with pytest.raises(CsvFormatError, match=r"train\.csv:2: answer must equal the question"):
        build_dataset(tmp_path / "out", from_csv=tmp_path, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no test.csv"):
        build_dataset(tmp_path / "out", from_csv=tmp_path, progress=False)


def test_text_round_trip_and_stats():
    g = encode("S #" + "   " + "# G")
    assert decode(g) == "S #   # G" and g.dtype == np.uint8
    lab = bfs_label(g)
    # two shortest paths; BFS trying down before right reaches (1,1) from below, so the path goes down first
    assert decode(lab) == "S #" + "oo " + "#oG"
    s = maze_stats([lab])
    assert (s["moves_min"], s["moves_median"], s["wall_frac_median"]) == (4, 4.0, round(2 / 9, 4))
    with pytest.raises(ValueError, match="charset"):
        encode("S x G     "[:9])


def test_tiny_mazes_are_distinct_and_test_never_repeats_train(tmp_path):
    build_dataset(tmp_path / "ds", train=30, test=20, level="easy", size=4, seed=0, progress=False)
    train = {r.tobytes() for r in np.asarray(load_split(tmp_path / "ds", "train")["inputs"])}
    test = [r.tobytes() for r in np.asarray(load_split(tmp_path / "ds", "test")["inputs"])]
    assert len(train) == 30 and len(set(test)) == 20 and not train & set(test)
    with pytest.raises(RuntimeError, match="distinct 2×2"):
        generate(50, level="easy", size=2)


def test_benchmark_helper_reports_throughput_and_distributions():
    real = REAL / "npy" if REAL.is_dir() else None
    out = maze_benchmark(5, level="medium", size=11, real_dir=real)
    assert out["n"] == 5 and out["mazes_per_s"] > 0 and out["ours"]["moves_min"] >= 22
    if real is not None:
        assert out["real"]["train"]["moves_median"] == 112
