"""Sudoku datasets in the reference format (HRM-SPEC §5.3): generated, or built from reference CSVs.

Tokens are digit + 1 (0 PAD, 1 blank, 2..10 digits 1..9), seq_len 81, vocab 11; pad_id 0,
ignore_label_id 0, one puzzle identifier, set "all". The train split is augmented (num_aug copies per
puzzle, copy 0 the original, all in the original's group); the test split is not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from hrm.data import format as fmt
from hrm.data.augment import augment_all, random_symmetry
from hrm.data.sudoku_solver import InvalidPuzzle, count_solutions, is_valid_solution, rate, solve
from hrm.progress import task_progress
from hrm.run.tasks import SUDOKU_VOCAB_SIZE

__all__ = [
    "build_dataset",
    "rate",
    "count_solutions",
    "random_symmetry",
    "solve",
    "InvalidPuzzle",
    "rating_stats",
    "read_sudoku_csv",
]

log = logging.getLogger(__name__)
VOCAB_SIZE = SUDOKU_VOCAB_SIZE
SEQ_LEN = 81
RATING_CAP = 200_000


def rating_stats(ratings: list[int] | np.ndarray) -> dict:
    """min/p10/median/p90/max/mean and zero-guess fraction; percentiles by nearest rank (SOURCES.md)."""
    v = sorted(int(x) for x in ratings)
    if not v:
        return {}

    def rank(q: float) -> int:
        return v[max(0, math.ceil(q * len(v)) - 1)]

    median = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return {
        "n": len(v),
        "min": v[0],
        "p10": rank(0.1),
        "median": median,
        "p90": rank(0.9),
        "max": v[-1],
        "mean": round(sum(v) / len(v), 1),
        "zero_guess_fraction": round(sum(1 for x in v if x == 0) / len(v), 3),
    }


def read_sudoku_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(puzzles uint8[n,81] 0 = blank, solutions uint8[n,81], csv ratings int64[n]) from a reference CSV."""
    from hrm.data.csvio import read_puzzle_csv

    rows = read_puzzle_csv(path)
    puzzles = np.zeros((len(rows), 81), dtype=np.uint8)
    solutions = np.zeros((len(rows), 81), dtype=np.uint8)
    for k, row in enumerate(rows):
        if len(row.question) != 81:
            raise row.error(path, f"a Sudoku question has 81 characters, found {len(row.question)}")
        q = row.question.replace(".", "0")
        if not q.isdigit():
            raise row.error(path, "question may hold only digits 1-9 and '.' or '0' for blanks")
        if not row.answer.isdigit() or "0" in row.answer:
            raise row.error(path, "answer must be 81 digits 1-9")
        puzzles[k] = np.frombuffer(q.encode(), dtype=np.uint8) - ord("0")
        solutions[k] = np.frombuffer(row.answer.encode(), dtype=np.uint8) - ord("0")
        given = puzzles[k] > 0
        if np.any(puzzles[k][given] != solutions[k][given]) or not is_valid_solution(solutions[k]):
            raise row.error(path, "answer is not a valid Sudoku solution agreeing with the question's givens")
    return puzzles, solutions, np.array([r.rating for r in rows], dtype=np.int64)


def _to_tokens(grid: np.ndarray) -> np.ndarray:
    return (np.asarray(grid, dtype=np.uint8) + 1).astype(np.uint8)


def _metadata(total_groups: int, total_puzzles: int) -> fmt.PuzzleDatasetMetadata:
    return fmt.PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=SEQ_LEN,
        num_puzzle_identifiers=1,
        total_groups=total_groups,
        mean_puzzle_examples=1.0,
        sets=["all"],
        total_puzzles=total_puzzles,
    )


def _write(root: Path, split: str, puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, seed: int) -> int:
    groups = augment_all(puzzles, solutions, num_aug, seed)
    token_groups = [[(_to_tokens(p), _to_tokens(s)) for p, s in g] for g in groups]
    arrays = fmt.groups_to_arrays(token_groups, identifier=0)
    n_puzzles = len(arrays["puzzle_identifiers"])
    fmt.write_split(root, split, {"all": arrays}, _metadata(len(groups), n_puzzles))
    return n_puzzles


def _generate_split(name: str, n: int, level: str, seed: int, blanks, min_rating, bar) -> tuple[np.ndarray, np.ndarray]:
    if n <= 0:
        raise ValueError(f"--{name} must be a positive number of puzzles, got {n}")
    from hrm.data.sudoku_gen import generate  # numba: imported where puzzles are generated

    task = bar.add_task(f"{name}: {level} sudoku", total=n)
    return generate(
        n, level, seed, blanks=blanks, min_rating=min_rating, progress=lambda k: bar.update(task, completed=k)
    )


def _load_csv_split(
    folder: Path, split: str, min_rating, subsample_size, seed
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from hrm.data.csvio import find_split_csv

    path = find_split_csv(folder, split)
    if path is None:
        raise FileNotFoundError(
            f"{folder}: no {split}.csv (reference columns source,question,answer,rating); "
            f"--from-csv needs a folder holding train.csv and test.csv"
        )
    puzzles, solutions, ratings = read_sudoku_csv(path)
    if min_rating is not None:  # the reference's --min-difficulty: keep rating >= threshold
        keep = ratings >= min_rating
        puzzles, solutions, ratings = puzzles[keep], solutions[keep], ratings[keep]
    if split == "train" and subsample_size is not None and subsample_size < len(puzzles):
        idx = np.sort(np.random.default_rng(seed).choice(len(puzzles), subsample_size, replace=False))
        puzzles, solutions, ratings = puzzles[idx], solutions[idx], ratings[idx]
    if len(puzzles) == 0:
        raise ValueError(f"{path}: no puzzles left after --min-rating {min_rating}")
    return puzzles, solutions, ratings


def build_dataset(
    out: Path,
    *,
    train: int = 1000,
    test: int = 1000,
    level: str = "extreme",
    num_aug: int = 0,
    seed: int = 0,
    blanks: tuple[int, int] | list[int] | None = None,
    min_rating: int | None = None,
    subsample_size: int | None = None,
    from_csv: Path | str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build a Sudoku dataset at `out` (atomically) and return a summary dict.

    Generated: `train`/`test` puzzles of `level` (blanks/min_rating as in `generate`; train and test
    use different seeds). From CSV: DIR/train.csv and DIR/test.csv, `min_rating` filters on the CSV
    rating, `subsample_size` draws that many train puzzles (seeded).
    """
    t0 = time.monotonic()
    out = Path(out)
    fmt.check_output_dir(out, force)
    blanks_t = tuple(blanks) if blanks is not None else None
    bars = contextlib.ExitStack()
    bar = bars.enter_context(task_progress(progress))  # the project's one progress helper (with the Ctrl-C check)
    summary: dict = {"task": "sudoku", "out": str(out), "seed": seed, "num_aug": num_aug}
    try:
        if from_csv is not None:
            folder = Path(from_csv)
            tr_p, tr_s, tr_r = _load_csv_split(folder, "train", min_rating, subsample_size, seed)
            te_p, te_s, te_r = _load_csv_split(folder, "test", min_rating, None, seed)
            summary.update(source=f"csv:{folder}", csv_rating={"train": rating_stats(tr_r), "test": rating_stats(te_r)})
        else:
            from hrm.data import sudoku_fast
            from hrm.data.sudoku_gen import LEVELS

            if level not in LEVELS:
                raise ValueError(f"unknown Sudoku level {level!r}: choose one of {', '.join(LEVELS)}")
            tr_p, tr_s = _generate_split("train", train, level, seed, blanks_t, min_rating, bar)
            te_p, te_s = _generate_split("test", test, level, seed + 1_000_003, blanks_t, min_rating, bar)
            if subsample_size is not None and subsample_size < len(tr_p):
                idx = np.sort(np.random.default_rng(seed).choice(len(tr_p), subsample_size, replace=False))
                tr_p, tr_s = tr_p[idx], tr_s[idx]
            summary.update(
                source=f"generated:{level}",
                level=level,
                blanks=list(blanks_t) if blanks_t else None,
                min_rating=min_rating,
            )
            # our guess-count rating (compiled, equal to `rate`), capped so one pathological puzzle
            # cannot stall the summary
            fast_rate = sudoku_fast.rate
            summary["rating"] = {
                "train": rating_stats([fast_rate(p, limit=RATING_CAP) for p in tr_p]),
                "test": rating_stats([fast_rate(p, limit=RATING_CAP) for p in te_p]),
            }
        summary["blanks_range"] = {
            "train": [int((tr_p == 0).sum(1).min()), int((tr_p == 0).sum(1).max())],
            "test": [int((te_p == 0).sum(1).min()), int((te_p == 0).sum(1).max())],
        }
        with fmt.atomic_output_dir(out, force) as tmp:
            n_train = _write(tmp, "train", tr_p, tr_s, num_aug, seed)
            n_test = _write(tmp, "test", te_p, te_s, 0, seed)
            fmt.write_identifiers(tmp, ["<blank>"])
            (tmp / "build_summary.json").write_text(json.dumps(summary, indent=1))
    finally:
        bars.close()
    summary.update(
        train_groups=len(tr_p),
        train_examples=n_train,
        test_examples=n_test,
        build_seconds=round(time.monotonic() - t0, 2),
    )
    log.info("built %s: %d train examples (%d puzzles x %d), %d test", out, n_train, len(tr_p), num_aug + 1, n_test)
    return summary
