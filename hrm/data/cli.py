"""`hrm-data`: build Sudoku / Maze datasets in the reference format, and draw their puzzles."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hrm.data.csvio import CsvFormatError
from hrm.data.format import DatasetError, OutputExistsError
from hrm.progress import install_interrupt_guard
from hrm.run.errors import describe

EPILOG = """examples:
  hrm-data maze --out data/maze-hard --level hard --train 1000 --test 1000
  hrm-data maze --out data/maze-hard-1k --from-csv /data/maze-30x30-hard-1k   (train.csv + test.csv)
  hrm-data sudoku --out data/sudoku-1k --level extreme --train 1000 --num-aug 1000
  hrm-data sudoku --out data/sudoku-extreme-1k --from-csv /data/sudoku-extreme --subsample-size 1000 --num-aug 1000
  hrm-data show data/maze-hard --split test --index 3"""


def _common(p: argparse.ArgumentParser, level: str, levels: list[str]) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory (refused if it exists, unless --force)")
    p.add_argument("--train", type=int, default=1000, help="training puzzles to generate (default 1000)")
    p.add_argument("--test", type=int, default=1000, help="test puzzles to generate (default 1000)")
    p.add_argument("--level", default=level, choices=levels, help=f"difficulty of generated puzzles (default {level})")
    p.add_argument("--seed", type=int, default=0, help="seed of the build (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing --out (only once the new one is complete)")
    p.add_argument(
        "--from-csv",
        type=Path,
        metavar="DIR",
        help="build from DIR/train.csv and DIR/test.csv (columns source,question,answer,rating)",
    )
    p.add_argument("--subsample-size", type=int, metavar="N", help="with --from-csv: keep N random training puzzles")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrm-data", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sudoku,maze,show}")
    s = sub.add_parser("sudoku", help="build a Sudoku dataset (vocab 11, 81 cells)")
    _common(s, "extreme", ["easy", "medium", "hard", "extreme"])
    s.add_argument("--num-aug", type=int, default=0, metavar="K", help="augmented copies per training puzzle")
    s.add_argument("--min-rating", type=int, metavar="R", help="keep only puzzles rated at least R")
    s.add_argument("--blanks", type=int, nargs=2, metavar=("MIN", "MAX"), help="blank cells per generated puzzle")
    m = sub.add_parser("maze", help="build a maze dataset (vocab 6, size² cells)")
    _common(m, "hard", ["easy", "medium", "hard"])
    m.add_argument(
        "--size", type=int, metavar="S", help="side of the square maze (default: 9 easy, 15 medium, 30 hard)"
    )
    m.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each training maze")
    m.add_argument(
        "--unique-path", action="store_true", help="wall off the tied shortest paths: the label is the only one"
    )
    m.add_argument("--num-aug", type=int, help=argparse.SUPPRESS)  # accepted for symmetry; mazes use --aug
    show = sub.add_parser("show", help="draw a puzzle of a built dataset and its solution")
    show.add_argument("dir", type=Path)
    show.add_argument("--split", default="train", help="train or test (default train)")
    show.add_argument("--index", type=int, default=0, help="example index in the split (default 0)")
    return parser


def _build(args: argparse.Namespace) -> dict:
    common = dict(
        train=args.train,
        test=args.test,
        level=args.level,
        seed=args.seed,
        from_csv=args.from_csv,
        subsample_size=args.subsample_size,
        force=args.force,
        progress=not args.quiet,
    )
    if args.command == "sudoku":
        from hrm.data import sudoku

        blanks = tuple(args.blanks) if args.blanks else None
        return sudoku.build_dataset(args.out, num_aug=args.num_aug, blanks=blanks, min_rating=args.min_rating, **common)
    from hrm.data import maze

    if args.num_aug:
        raise ValueError("mazes take --aug (the 8 dihedral transforms), not --num-aug")
    return maze.build_dataset(args.out, size=args.size, aug=args.aug, unique_path=args.unique_path, **common)


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def print_summary(summary: dict, console: Console) -> None:
    """Counts and distributions per split (a column each), then the build facts (source, time, ...)."""
    splits = [s for s in ("train", "test") if isinstance(summary.get(s), dict)]
    # summaries that keep per-split numbers under one key ({"rating": {"train": ..., "test": ...}})
    nested = [k for k, v in summary.items() if isinstance(v, dict) and {"train", "test"} & set(v)]
    columns = splits or sorted({s for k in nested for s in summary[k]}, key=["train", "test"].index)
    table = Table(title=f"{summary.get('task', 'dataset')} dataset", title_justify="left")
    table.add_column("")
    for s in columns:
        table.add_column(s, overflow="fold")
    rows: dict[str, dict[str, Any]] = {}
    for s in splits:
        for k, v in summary[s].items():
            rows.setdefault(k, {})[s] = v
    for k in nested:
        for s, v in summary[k].items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    rows.setdefault(f"{k} {kk}", {})[s] = vv
            else:
                rows.setdefault(k, {})[s] = v
    for k, by_split in rows.items():
        table.add_row(k, *(_cell(by_split.get(s, "")) for s in columns))
    if rows:
        console.print(table)
    rest = {k: v for k, v in summary.items() if k not in splits and k not in nested and k != "task"}
    for k, v in rest.items():
        if v is not None:
            console.print(f"{k}: {_cell(v)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        install_interrupt_guard()
    out, err = Console(), Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hrm.progress").setLevel(logging.INFO)  # plain progress lines when stderr is no terminal
    try:
        if args.command == "show":
            from hrm.data.show import render_example

            out.print(render_example(args.dir, args.split, args.index))
            return 0
        print_summary(_build(args), out)
        return 0
    except KeyboardInterrupt:
        err.print("hrm-data: interrupted; nothing was written")
        return 130
    except (
        OutputExistsError,
        CsvFormatError,
        DatasetError,
        FileNotFoundError,
        IndexError,
        ValueError,
        RuntimeError,
    ) as e:
        err.print(f"hrm-data: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except OSError as e:  # out of disk space and the like: atomic_output_dir has removed the partial build
        code, text = describe(e, args.dir if args.command == "show" else args.out)
        written = "" if args.command == "show" else "; nothing was written"
        err.print(f"hrm-data: error: {text}{written}", markup=False, highlight=False, soft_wrap=True)
        return code


if __name__ == "__main__":
    from hrm.run.errors import run_tool

    sys.exit(run_tool("hrm-data", main))
