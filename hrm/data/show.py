"""Drawing puzzles of a built dataset in the terminal (rich): Sudoku grids and mazes with their solutions.

The drawings come from hrm.run.render, the renderer the app's sample view uses too."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from hrm.data.format import load_split, read_metadata
from hrm.run.render import PuzzleStyles, legend, maze_grid, sudoku_grid

STYLES = PuzzleStyles(answer="bold cyan")  # filled-in cells stand out from the givens


def guess_task(vocab_size: int, seq_len: int) -> str:
    if vocab_size == 11 and seq_len == 81:
        return "sudoku"
    if vocab_size == 6 and math.isqrt(seq_len) ** 2 == seq_len:
        return "maze"
    return "tokens"


def render_tokens(inputs: np.ndarray, labels: np.ndarray | None = None) -> Text:
    seq = np.asarray(inputs).reshape(-1)
    side = math.isqrt(seq.size)
    width = side if side * side == seq.size else 30
    rows = [" ".join(f"{int(t):2d}" for t in seq[i : i + width]) for i in range(0, seq.size, width)]
    return Text("\n".join(rows))


def render_example(root: Path | str, split: str = "train", index: int = 0) -> Group:
    """A header (what, where) and the drawing of example `index` of a split."""
    meta = read_metadata(root, split)
    data = load_split(root, split, meta.sets[0])
    n = len(data["inputs"])
    if not 0 <= index < n:
        raise IndexError(f"--index {index} is out of range: the {split} split has {n} examples (0..{n - 1})")
    inp, lab = np.asarray(data["inputs"][index]), np.asarray(data["labels"][index])
    puzzle = int(np.searchsorted(data["puzzle_indices"], index, side="right") - 1)
    group = int(np.searchsorted(data["group_indices"], puzzle, side="right") - 1)
    task = guess_task(meta.vocab_size, meta.seq_len)
    header = Text(f"{Path(root).name} · {split} example {index} of {n} · puzzle {puzzle} · group {group}", style="bold")
    if task == "sudoku":
        blanks = int((inp == 1).sum())
        counts = Text(f"{int(inp.size) - blanks} givens, {blanks} cells filled in · ")
        pair = Table.grid(padding=(0, 3))
        pair.add_row(Text("puzzle", style="bold"), Text("solution", style="bold"))
        pair.add_row(
            sudoku_grid(inp.tolist(), styles=STYLES), sudoku_grid(inp.tolist(), None, lab.tolist(), styles=STYLES)
        )
        return Group(header, counts + legend("sudoku", STYLES, with_prediction=False), pair)
    if task == "maze":
        moves = int((lab == 5).sum()) + 1
        key = legend("maze", STYLES, with_prediction=False) + Text(f" ({moves} moves)")
        return Group(header, key, maze_grid(inp.tolist(), None, lab.tolist(), styles=STYLES))
    return Group(header, Text("inputs:"), render_tokens(inp), Text("labels:"), render_tokens(lab))
