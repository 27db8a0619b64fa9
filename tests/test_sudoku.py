"""Sudoku solver, rating, generator and dataset builder (hrm.data.sudoku*)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm.data import format as fmt
from hrm.data.csvio import CsvFormatError
from hrm.data.sudoku import build_dataset, rating_stats, read_sudoku_csv
from hrm.data.sudoku_gen import _random_grid, generate
from hrm.data.sudoku_solver import InvalidPuzzle, count_solutions, is_valid_solution, rate, solve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"real puzzle data not available: {path} is absent (../shared beside the repo)")
    return path


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _digits(q: str) -> list[int]:
    return [0 if ch in ".0" else int(ch) for ch in q]


def test_rating_reproduces_sources_md_collection_stats():
    # SOURCES.md difficulty table: Sakana nikoli_100 median 26, p90 90, max 697, zero-guess 0.080;
    # Norvig hardest median 36.5, p90 286, max 737.
    nikoli = [rate(_digits(r["question"])) for r in _csv_rows(_shared("sakana-nikoli-100/nikoli_100.hrm.csv"))]
    s = rating_stats(nikoli)
    assert (s["median"], s["p90"], s["max"], s["zero_guess_fraction"]) == (26, 90, 697, 0.08)
    hardest = [rate(_digits(r["question"])) for r in _csv_rows(_shared("norvig-hardest/hardest.hrm.csv"))]
    s = rating_stats(hardest)
    assert (s["median"], s["p90"], s["max"]) == (36.5, 286, 737)


def test_rating_matches_per_puzzle_csv_ratings():
    # The *.hrm.csv rating column is the same guess count; check every cheap row of three collections.
    checked = 0
    for rel in (
        "norvig-top95/top95.hrm.csv",
        "sudoku-extreme-train-1k/sudoku_extreme_train1k.hrm.csv",
        "tdoku-forum-hardest-1106/forum_hardest_1106.hrm.csv",
    ):
        rows = [r for r in _csv_rows(_shared(rel)) if int(r["rating"]) <= 600][:60]
        for r in rows:
            assert rate(_digits(r["question"])) == int(r["rating"]), (rel, r["source"])
        checked += len(rows)
    assert checked > 100


def test_top95_median_573():
    # The 48 easiest of the 95 top95 puzzles (by CSV rating) are rated exactly, so the median (the
    # 48th value) is recomputed without rating the slow upper half; they must all sit at or below 573.
    rows = sorted(_csv_rows(_shared("norvig-top95/top95.hrm.csv")), key=lambda r: int(r["rating"]))
    ours = [rate(_digits(r["question"])) for r in rows[:48]]
    assert ours == [int(r["rating"]) for r in rows[:48]]
    assert max(ours) == 573 and len(rows) == 95


def test_solution_and_count_on_real_puzzles():
    rows = _csv_rows(_shared("norvig-top95/top95.hrm.csv"))[:5]
    for r in rows:
        p = _digits(r["question"])
        assert count_solutions(p) == 1
        assert solve(p) == [int(c) for c in r["answer"]]


def test_count_solutions_multi_and_invalid():
    assert count_solutions([0] * 81) == 2
    assert count_solutions([0] * 81, limit=5) == 5
    sol = _random_grid(__import__("random").Random(0))
    assert is_valid_solution(sol) and count_solutions(sol) == 1
    bad = list(sol)
    bad[0], bad[1] = bad[1], bad[0]  # two equal digits now share a column
    assert not is_valid_solution(bad)
    assert count_solutions(bad) == 0
    with pytest.raises(InvalidPuzzle):
        rate(bad)
    with pytest.raises(InvalidPuzzle, match="81 cells"):
        rate([0] * 80)


def _check_generated(puzzles: np.ndarray, solutions: np.ndarray) -> None:
    for p, s in zip(puzzles, solutions):
        assert count_solutions(p) == 1
        assert solve(p) == s.tolist()
        assert is_valid_solution(s)
        given = p > 0
        assert np.array_equal(p[given], s[given])


@pytest.mark.parametrize("level,blanks", [("easy", None), ("medium", None), ("easy", (50, 52))])
def test_generated_puzzles_unique_with_blank_control(level, blanks):
    puzzles, solutions = generate(6, level, seed=3, blanks=blanks, workers=1)
    assert puzzles.shape == (6, 81) and puzzles.dtype == np.uint8
    _check_generated(puzzles, solutions)
    lo, hi = blanks or {"easy": (30, 40), "medium": (45, 54)}[level]
    nblank = (puzzles == 0).sum(1)
    assert nblank.min() >= lo and nblank.max() <= hi


@pytest.mark.slow  # generates puzzles in worker processes
def test_generation_is_seeded_and_worker_independent():
    a = generate(4, "easy", seed=11, workers=1)
    b = generate(4, "easy", seed=11, workers=2)
    c = generate(4, "easy", seed=12, workers=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_min_rating_filter_and_extreme_keep_uniqueness():
    puzzles, solutions = generate(3, "medium", seed=5, min_rating=8, workers=1)
    _check_generated(puzzles, solutions)
    assert all(rate(p) >= 8 for p in puzzles)
    puzzles, solutions = generate(3, "extreme", seed=7, workers=1)  # checked by the Python solver
    _check_generated(puzzles, solutions)
    assert all(rate(p, limit=100) > 0 for p in puzzles)  # naked singles alone never solve them


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown Sudoku level"):
        generate(1, "nightmare", seed=0)
    with pytest.raises(ValueError, match="blanks"):
        generate(1, "easy", seed=0, blanks=(70, 75))


def _csv_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "csv"
    folder.mkdir()
    src = _shared("norvig-top95/top95.hrm.csv")
    shutil.copy(src, folder / "train.csv")
    shutil.copy(_shared("norvig-hardest/hardest.hrm.csv"), folder / "test.csv")
    return folder


def test_from_csv_round_trips_through_the_format(tmp_path):
    folder = _csv_folder(tmp_path)
    out = tmp_path / "ds"
    summary = build_dataset(out, train=0, test=0, level="extreme", num_aug=2, seed=1, from_csv=folder, progress=False)
    tr = fmt.load_split(out, "train")
    te = fmt.load_split(out, "test")
    rows = _csv_rows(folder / "train.csv")
    assert summary["train_examples"] == len(tr["inputs"]) == 3 * len(rows)
    # copy 0 of every group is the CSV puzzle in tokens digit+1 (1 = blank)
    firsts = tr["inputs"][tr["group_indices"][:-1]]
    want = np.array([[1 + d for d in _digits(r["question"])] for r in rows], dtype=np.uint8)
    assert np.array_equal(firsts, want)
    assert np.array_equal(
        tr["labels"][tr["group_indices"][:-1]],
        np.array([[1 + int(c) for c in r["answer"]] for r in rows], dtype=np.uint8),
    )
    assert len(te["inputs"]) == 12 and np.array_equal(te["group_indices"], np.arange(13))
    meta = fmt.read_metadata(out, "train")
    assert (
        meta.vocab_size,
        meta.seq_len,
        meta.pad_id,
        meta.ignore_label_id,
        meta.num_puzzle_identifiers,
        meta.total_groups,
        meta.sets,
    ) == (11, 81, 0, 0, 1, 95, ["all"])
    assert tr["inputs"].min() >= 1 and tr["labels"].min() >= 2 and tr["labels"].max() <= 10
    with pytest.raises(fmt.OutputExistsError):
        build_dataset(out, train=0, test=0, level="extreme", num_aug=0, seed=1, from_csv=folder, progress=False)


def test_from_csv_min_rating_and_subsample(tmp_path):
    folder = _csv_folder(tmp_path)
    out = tmp_path / "ds"
    build_dataset(
        out,
        train=0,
        test=0,
        level="extreme",
        num_aug=0,
        seed=4,
        from_csv=folder,
        min_rating=200,
        subsample_size=10,
        progress=False,
    )
    tr = fmt.load_split(out, "train")
    keep = {r["question"] for r in _csv_rows(folder / "train.csv") if int(r["rating"]) >= 200}
    got = {"".join("." if t == 1 else str(t - 1) for t in row) for row in tr["inputs"]}
    assert len(got) == 10 and got <= keep


def test_bad_csv_row_names_file_and_line(tmp_path):
    folder = _csv_folder(tmp_path)
    lines = (folder / "train.csv").read_text().splitlines()
    lines[3] = lines[3].replace(".", "x", 1)
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:4"):
        read_sudoku_csv(folder / "train.csv")


def test_generated_build_has_groups_and_blanks(tmp_path):
    out = tmp_path / "gen"
    s = build_dataset(out, train=5, test=3, level="easy", num_aug=3, seed=2, blanks=(33, 36), progress=False)
    tr = fmt.load_split(out, "train")
    te = fmt.load_split(out, "test")
    assert s["train_examples"] == 20 and s["test_examples"] == 3
    assert np.array_equal(tr["group_indices"], np.arange(0, 21, 4))
    nblank = (np.asarray(te["inputs"]) == 1).sum(1)
    assert nblank.min() >= 33 and nblank.max() <= 36
    _check_generated(np.asarray(te["inputs"]) - 1, np.asarray(te["labels"]) - 1)
