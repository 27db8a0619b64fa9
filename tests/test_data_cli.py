from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import hrm.data
from hrm.data.cli import main
from hrm.data.format import load_split, read_metadata
from hrm.data.show import render_example

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def _hrm_data() -> list[str]:
    exe = Path(sys.executable).with_name("hrm-data")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hrm.data.cli"]


def test_maze_build_end_to_end_in_a_subprocess(tmp_path):
    out = tmp_path / "mazes"
    cmd = _hrm_data() + [
        "maze",
        "--out",
        str(out),
        "--level",
        "medium",
        "--size",
        "11",
        "--train",
        "12",
        "--test",
        "4",
        "--aug",
        "--seed",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert "maze dataset" in proc.stdout and "moves_median" in proc.stdout and "seconds" in proc.stdout
    assert "ETA" in proc.stderr  # the progress bar
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train["inputs"].shape == (96, 121) and test["inputs"].shape == (4, 121)
    assert read_metadata(out, "train").total_groups == 12
    # an existing output is refused without --force, and replaced with it
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert (
        main(["maze", "--out", str(out), "--level", "easy", "--train", "3", "--test", "2", "--quiet", "--force"]) == 0
    )
    assert load_split(out, "train")["inputs"].shape == (3, 81)


def test_from_csv_on_the_real_maze_csvs(tmp_path, capsys):
    real = SHARED / "maze-30x30-hard-1k"
    if not real.is_dir():
        pytest.skip("../shared/data/maze-30x30-hard-1k is absent")
    rc = main(["maze", "--out", str(tmp_path / "m"), "--from-csv", str(real), "--subsample-size", "50", "--quiet"])
    assert rc == 0
    assert "csv:" in capsys.readouterr().out
    assert len(load_split(tmp_path / "m", "train")["inputs"]) == 50
    assert len(load_split(tmp_path / "m", "test")["inputs"]) == 1000


def test_malformed_csv_row_is_reported_with_file_and_line(tmp_path, capsys):
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    good = "x:1,S #   # G,S #oo #oG,3\n"
    (csvs / "train.csv").write_text("source,question,answer,rating\n" + good + good + "x:3,S #   # G,So#,3\n")
    (csvs / "test.csv").write_text("source,question,answer,rating\n" + good)
    rc = main(["maze", "--out", str(tmp_path / "o"), "--from-csv", str(csvs), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{csvs / 'train.csv'}:4:" in err and "answer has 3 characters" in err
    assert not (tmp_path / "o").exists()


def test_bad_arguments_get_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "maze",
                "--out",
                str(tmp_path / "o"),
                "--level",
                "hard",
                "--size",
                "6",
                "--quiet",
                "--train",
                "1",
                "--test",
                "1",
            ]
        )
        == 2
    )
    assert "larger --size" in capsys.readouterr().err
    assert main(["maze", "--out", str(tmp_path / "o"), "--num-aug", "3", "--quiet"]) == 2
    assert "--aug" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert "hrm-data sudoku|maze --out DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _plain(renderable) -> str:
    console = Console(width=120, record=True, color_system=None, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def test_show_draws_a_maze_with_walls_start_goal_and_path(tmp_path, capsys):
    assert (
        main(["maze", "--out", str(tmp_path / "m"), "--level", "easy", "--train", "2", "--test", "1", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert main(["show", str(tmp_path / "m"), "--split", "test", "--index", "0"]) == 0
    assert "test example 0 of 1" in capsys.readouterr().out
    text = _plain(render_example(tmp_path / "m", "test", 0))
    lab = np.asarray(load_split(tmp_path / "m", "test")["labels"][0]).reshape(9, 9)
    grid = text.splitlines()[2:11]
    cells = {"██": 1, "  ": 2, "S ": 3, "G ": 4, "● ": 5}  # hrm.run.render's glyphs, two columns a cell
    assert [[cells[row[2 * c : 2 * c + 2]] for c in range(9)] for row in grid] == lab.tolist()
    assert f"shortest path ({int((lab == 5).sum()) + 1} moves)" in text
    assert main(["show", str(tmp_path / "m"), "--index", "7"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_show_draws_a_sudoku_puzzle_and_its_solution():
    root = SHARED / "sudoku-extreme-train-1k"
    if not root.is_dir():
        pytest.skip("../shared/data/sudoku-extreme-train-1k is absent")
    text = _plain(render_example(root, "npy", 5))
    data = load_split(root, "npy")
    inp, lab = np.asarray(data["inputs"][5]).reshape(9, 9), np.asarray(data["labels"][5]).reshape(9, 9)
    digit_rows = [line for line in text.splitlines() if "│" in line]
    assert len(digit_rows) == 9
    for r, line in enumerate(digit_rows):
        left, right = line[:22], line[22:]  # the puzzle's 22 columns, then the solution
        expect_left = "".join("." if t == 1 else str(t - 1) for t in inp[r])
        assert left.replace("│", "").replace(" ", "") == expect_left
        assert right.replace("│", "").replace(" ", "") == "".join(str(t - 1) for t in lab[r])
    assert f"{int((inp > 1).sum())} givens" in text


def test_sudoku_arguments_reach_the_sudoku_builder(tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.SimpleNamespace(
        build_dataset=lambda out, **kw: (
            calls.append((out, kw))
            or {"task": "sudoku", "train": {"puzzles": 7}, "test": {"puzzles": 2}, "seconds": 1.0}
        )
    )
    monkeypatch.setitem(sys.modules, "hrm.data.sudoku", fake)
    monkeypatch.setattr(hrm.data, "sudoku", fake, raising=False)
    rc = main(
        [
            "sudoku",
            "--out",
            str(tmp_path / "s"),
            "--train",
            "7",
            "--test",
            "2",
            "--level",
            "easy",
            "--blanks",
            "30",
            "40",
            "--num-aug",
            "3",
            "--min-rating",
            "5",
            "--seed",
            "4",
            "--quiet",
        ]
    )
    assert rc == 0 and "sudoku dataset" in capsys.readouterr().out
    assert calls == [
        (
            tmp_path / "s",
            dict(
                train=7,
                test=2,
                level="easy",
                seed=4,
                from_csv=None,
                subsample_size=None,
                force=False,
                progress=False,
                num_aug=3,
                blanks=(30, 40),
                min_rating=5,
            ),
        )
    ]


def test_sudoku_from_real_csvs_round_trips(tmp_path):
    src = SHARED / "tdoku-magictour-top1465" / "magictour_top1465.hrm.csv"
    if not src.is_file():
        pytest.skip("../shared/data/tdoku-magictour-top1465 is absent")
    lines = src.read_text().splitlines()
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    (csvs / "train.csv").write_text("\n".join(lines[:21]) + "\n")
    (csvs / "test.csv").write_text("\n".join([lines[0]] + lines[21:26]) + "\n")
    assert main(["sudoku", "--out", str(tmp_path / "s"), "--from-csv", str(csvs), "--quiet"]) == 0
    train = load_split(tmp_path / "s", "train")
    assert len(train["inputs"]) == 20 and read_metadata(tmp_path / "s", "train").vocab_size == 11
    first = lines[1].split(",")
    assert "".join("." if t == 1 else str(t - 1) for t in np.asarray(train["inputs"][0])) == first[1]
    assert "".join(str(t - 1) for t in np.asarray(train["labels"][0])) == first[2]


def test_interrupted_build_leaves_nothing_behind(tmp_path):
    import signal
    import threading

    from support.train import wait_for

    out = tmp_path / "never"
    proc = subprocess.Popen(
        _hrm_data() + ["maze", "--out", str(out), "--level", "hard", "--train", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        # Interrupt once the build is under way: its first progress line (stderr is no terminal: plain
        # lines, the first one at 0/1000) is printed after the Ctrl-C guard is installed.
        wait_for(lambda: any("train mazes" in ln for ln in err_lines), 60, "the build's first progress line")
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        proc.kill()
    reader.join(30)
    err = "".join(err_lines)
    assert proc.returncode == 130 and "interrupted; nothing was written" in err, err
    assert list(tmp_path.iterdir()) == []


def test_summary_lays_out_per_split_numbers_in_columns():
    from hrm.data.cli import print_summary

    console = Console(width=100, record=True, color_system=None, file=open(os.devnull, "w"))
    print_summary(
        {
            "task": "sudoku",
            "rating": {"train": {"median": 7}, "test": {"median": 5}},
            "train_examples": 60,
            "build_seconds": 0.5,
        },
        console,
    )
    text = console.export_text()
    row = next(line for line in text.splitlines() if "rating median" in line)
    assert [c.strip() for c in row.split("│")[2:4]] == ["7", "5"]
    assert "train_examples: 60" in text and "build_seconds: 0.5" in text
