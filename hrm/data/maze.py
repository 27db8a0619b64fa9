"""Maze datasets in the reference format (HRM-SPEC §5.4): generated Maze-Hard-like sets or the original CSVs."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hrm.data.csvio import find_split_csv, read_puzzle_csv
from hrm.data.format import (
    PuzzleDatasetMetadata,
    atomic_output_dir,
    check_output_dir,
    dihedral_transform,
    groups_to_arrays,
    write_identifiers,
    write_split,
)
from hrm.data.maze_gen import (  # re-exported: the public maze API lives here
    CHARSET,
    GOAL,
    LEVELS,
    OPEN,
    PATH,
    START,
    VOCAB_SIZE,
    WALL,
    iter_mazes,
    min_path_moves,
    shortest_path_moves,
)
from hrm.data.maze_label import bfs_label, only_shortest_path  # re-exported

__all__ = [
    "CHARSET",
    "WALL",
    "OPEN",
    "START",
    "GOAL",
    "PATH",
    "VOCAB_SIZE",
    "LEVELS",
    "bfs_label",
    "only_shortest_path",
    "encode",
    "decode",
    "min_path_moves",
    "shortest_path_moves",
    "generate",
    "build_dataset",
    "maze_stats",
    "maze_benchmark",
]

log = logging.getLogger(__name__)


# --- text form -------------------------------------------------------------------------------------------


def encode(text: str) -> np.ndarray:
    """'# SGo' characters (row-major, side² of them) → token grid."""
    side = math.isqrt(len(text))
    if side * side != len(text):
        raise ValueError(f"{len(text)} characters is not a square grid")
    bad = set(text) - set(CHARSET)
    if bad:
        raise ValueError(f"characters {''.join(sorted(bad))!r} are not in the maze charset {CHARSET!r}")
    lut = np.zeros(256, dtype=np.uint8)
    for i, ch in enumerate(CHARSET):
        lut[ord(ch)] = i + 1
    return lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)].reshape(side, side)


def decode(grid: np.ndarray) -> str:
    return "".join(CHARSET[t - 1] if t else "?" for t in np.asarray(grid).reshape(-1).tolist())


def generate(
    n: int,
    *,
    level: str = "hard",
    size: int | None = None,
    seed: int = 0,
    stream: int = 0,
    exclude: set[bytes] | None = None,
    on_maze=None,
    unique_path: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """n distinct (input, label) token grids, none of whose input bytes are in `exclude` (e.g. the train
    split, for the test split); `on_maze()` is called after each one (progress). `unique_path`: each maze
    gets walls on the tied shortest paths (`only_shortest_path`), so its label is the only shortest path.
    (seed, stream) select an independent random stream (the builder uses stream 0 for train, 1 for test)."""
    size = size or LEVELS[level][0]
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, stream])))
    seen: set[bytes] = set(exclude or ())
    out: list[tuple[np.ndarray, np.ndarray]] = []
    stale = 0
    while len(out) < n:
        before = len(out)
        for grid in iter_mazes(n - len(out), size, min_path_moves(level, size), rng):
            label = bfs_label(grid)
            if unique_path:  # the same path; the label copies the new walls
                grid = only_shortest_path(grid, label)
                label = bfs_label(grid)
            key = grid.tobytes()
            if key in seen:  # duplicates are vanishingly rare at real sizes, common at tiny ones
                continue
            seen.add(key)
            out.append((grid, label))
            if on_maze:
                on_maze()
        stale = stale + 1 if len(out) == before else 0
        if stale >= 20:
            raise RuntimeError(
                f"found only {len(out)} distinct {size}×{size} {level} mazes (of {n}); "
                f"ask for fewer or use a larger --size"
            )
    return out


def maze_stats(labels: Iterable[np.ndarray]) -> dict:
    """Path length (moves = PATH cells + 1) and wall fraction of labelled mazes: min/p10/median/p90/max/mean,
    plus a histogram by tens of moves — the numbers ../shared/data/SOURCES.md gives for the real set."""
    rows = [np.asarray(x).reshape(-1) for x in labels]
    if not rows:
        return {}
    lab = np.stack(rows)
    moves = (lab == PATH).sum(axis=1) + 1
    walls = (lab == WALL).mean(axis=1)
    pct = np.percentile(moves, [0, 10, 50, 90, 100])
    hist: dict[str, int] = {}
    for lo in range(int(moves.min()) // 10 * 10, int(moves.max()) + 1, 10):
        c = int(((moves >= lo) & (moves < lo + 10)).sum())
        if c:
            hist[f"{lo}-{lo + 9}"] = c
    return dict(
        moves_min=int(pct[0]),
        moves_p10=float(pct[1]),
        moves_median=float(pct[2]),
        moves_p90=float(pct[3]),
        moves_max=int(pct[4]),
        moves_mean=round(float(moves.mean()), 2),
        moves_hist=hist,
        wall_frac_median=round(float(np.median(walls)), 4),
        wall_frac_min=round(float(walls.min()), 4),
        wall_frac_max=round(float(walls.max()), 4),
    )


def maze_benchmark(
    n: int = 1000, *, level: str = "hard", size: int = 30, seed: int = 0, real_dir: Path | str | None = None
) -> dict:
    """Generation throughput and the path-length distribution of n generated mazes, beside the real set's
    (`real_dir`: a reference maze dataset root such as ../shared/data/maze-30x30-hard-1k/npy)."""
    from hrm.data.format import load_split

    t0, c0 = time.perf_counter(), time.process_time()
    pairs = generate(n, level=level, size=size, seed=seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = dict(
        n=n,
        level=level,
        size=size,
        min_moves=min_path_moves(level, size),
        seconds=round(wall, 2),
        cpu_seconds=round(cpu, 2),
        mazes_per_s=round(n / wall, 1),
        ours=maze_stats(a for _, a in pairs),
    )
    if real_dir is not None:
        out["real"] = {
            split: maze_stats(np.asarray(load_split(real_dir, split)["labels"]))
            for split in ("train", "test")
            if (Path(real_dir) / split / "dataset.json").is_file()
        }
    return out


def _csv_paths(folder: Path) -> dict[str, Path]:
    found = {split: find_split_csv(folder, split) for split in ("train", "test")}
    paths: dict[str, Path] = {}
    for split, path in found.items():
        if path is None:
            raise FileNotFoundError(
                f"{folder}: no {split}.csv (or {split}.hrm.csv) with columns "
                f"source,question,answer,rating; --from-csv needs train and test CSVs"
            )
        paths[split] = path
    return paths


def _read_csv_split(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    out, side = [], None
    for row in read_puzzle_csv(path):
        try:
            q, a = encode(row.question), encode(row.answer)
        except ValueError as e:
            raise row.error(path, str(e)) from None
        side = side or q.shape[0]
        if q.shape[0] != side:
            raise row.error(path, f"maze is {q.shape[0]}×{q.shape[0]} but earlier rows are {side}×{side}")
        if (q == START).sum() != 1 or (q == GOAL).sum() != 1:
            raise row.error(path, "question needs exactly one S and one G")
        if (q == PATH).any() or not np.array_equal(np.where(a == PATH, OPEN, a), q):
            raise row.error(path, "answer must equal the question except open cells drawn as 'o'")
        out.append((q, a))
    return out


def _augment(pairs: list[tuple[np.ndarray, np.ndarray]], aug: bool) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """One group per maze; with `aug` its 8 dihedral transforms (input and label together), as the reference."""
    tids = range(8) if aug else range(1)
    return [[(dihedral_transform(q, t), dihedral_transform(a, t)) for t in tids] for q, a in pairs]


def _write(root: Path, split: str, groups: list[list[tuple[np.ndarray, np.ndarray]]], side: int) -> None:
    arrays = groups_to_arrays(groups)
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=side * side,
        num_puzzle_identifiers=1,
        total_groups=len(groups),
        mean_puzzle_examples=1.0,
        sets=["all"],
        total_puzzles=len(arrays["inputs"]),
    )
    write_split(root, split, {"all": arrays}, meta)


def build_dataset(
    out: Path | str,
    *,
    train: int = 1000,
    test: int = 1000,
    level: str = "hard",
    size: int | None = None,
    aug: bool = False,
    unique_path: bool = False,
    seed: int = 0,
    from_csv: Path | str | None = None,
    subsample_size: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build a maze dataset at `out` (atomically) and return a summary dict."""
    from hrm.progress import task_progress

    out = Path(out)
    if train < 1 or test < 1:
        raise ValueError(f"--train and --test must be at least 1 (got {train} and {test})")
    check_output_dir(out, force)  # fail before spending minutes on generation
    t0 = time.monotonic()
    if from_csv is not None:
        folder = Path(from_csv)
        splits = {s: _read_csv_split(p) for s, p in _csv_paths(folder).items()}
        if subsample_size is not None and subsample_size < len(splits["train"]):
            rng = np.random.Generator(np.random.Philox(seed))
            keep = np.sort(rng.choice(len(splits["train"]), subsample_size, replace=False))
            splits["train"] = [splits["train"][i] for i in keep]
        source = f"csv:{folder}"
    else:
        size = size or LEVELS[level][0]
        min_path_moves(level, size)  # validates the level
        splits = {}
        with task_progress(progress) as bar:
            for i, (split, n) in enumerate((("train", train), ("test", test))):
                task = bar.add_task(f"{split} mazes {size}×{size} ({level})", total=n)
                train_keys = {q.tobytes() for q, _ in splits.get("train", [])}  # test never repeats train
                splits[split] = generate(
                    n,
                    level=level,
                    size=size,
                    seed=seed,
                    stream=i,
                    exclude=train_keys,
                    on_maze=lambda task=task: bar.advance(task),
                    unique_path=unique_path,
                )
        source = "generated"
    side = splits["train"][0][0].shape[0]
    with atomic_output_dir(out, force) as tmp:
        _write(tmp, "train", _augment(splits["train"], aug), side)
        _write(tmp, "test", _augment(splits["test"], False), side)
        write_identifiers(tmp, ["<blank>"])
    summary = dict(
        task="maze",
        out=str(out),
        source=source,
        size=side,
        level=None if from_csv else level,
        aug=aug,
        unique_path=unique_path,
        seed=seed,
        seconds=round(time.monotonic() - t0, 2),
        train=dict(
            mazes=len(splits["train"]),
            examples=len(splits["train"]) * (8 if aug else 1),
            **maze_stats(a for _, a in splits["train"]),
        ),
        test=dict(mazes=len(splits["test"]), examples=len(splits["test"]), **maze_stats(a for _, a in splits["test"])),
    )
    log.info(
        "built maze dataset %s: %d train / %d test mazes in %.1f s",
        out,
        len(splits["train"]),
        len(splits["test"]),
        summary["seconds"],
    )
    return summary
