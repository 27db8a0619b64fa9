"""Drawing puzzles of a built dataset in the terminal (rich): Sudoku grids and mazes with their solutions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from hrm.data.format import load_split, read_metadata

# maze tokens (hrm.data.maze_gen): 1 wall, 2 open, 3 start, 4 goal, 5 path
_MAZE_CELLS = {
    1: ("██", "grey50"),
    2: ("  ", ""),
    3: ("S ", "bold black on green"),
    4: ("G ", "bold black on red"),
    5: ("··", "bold yellow"),
}


def guess_task(vocab_size: int, seq_len: int) -> str:
    if vocab_size == 11 and seq_len == 81:
        return "sudoku"
    if vocab_size == 6 and math.isqrt(seq_len) ** 2 == seq_len:
        return "maze"
    return "tokens"


def render_sudoku(inputs: np.ndarray, labels: np.ndarray | None = None) -> Text:
    """The solution (or the puzzle when no label) with givens bold and filled-in cells coloured."""
    inp = np.asarray(inputs).reshape(9, 9)
    lab = None if labels is None else np.asarray(labels).reshape(9, 9)
    text = Text()
    rule = "+-------+-------+-------+\n"
    for r in range(9):
        if r % 3 == 0:
            text.append(rule, style="dim")
        for c in range(9):
            if c % 3 == 0:
                text.append("| ", style="dim")
            given = inp[r, c] >= 2
            token = inp[r, c] if given or lab is None else lab[r, c]
            ch = str(int(token) - 1) if token >= 2 else "."
            text.append(ch + " ", style="bold" if given else ("cyan" if token >= 2 else "dim"))
        text.append("|\n", style="dim")
    text.append(rule.rstrip("\n"), style="dim")
    return text


def render_maze(inputs: np.ndarray, labels: np.ndarray | None = None) -> Text:
    """Walls, start, goal and (when a label is given) the path; two characters per cell."""
    grid = np.asarray(labels if labels is not None else inputs)
    side = math.isqrt(grid.size)
    grid = grid.reshape(side, side)
    text = Text()
    for r in range(side):
        for c in range(side):
            chars, style = _MAZE_CELLS.get(int(grid[r, c]), ("??", "red"))
            text.append(chars, style=style)
        if r < side - 1:
            text.append("\n")
    return text


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
        legend = Text.assemble(
            f"{81 - blanks} givens ", ("bold", "bold"), f", {blanks} cells filled in ", ("in colour", "cyan")
        )
        pair = Table.grid(padding=(0, 3))
        pair.add_row(Text("puzzle", style="bold"), Text("solution", style="bold"))
        pair.add_row(render_sudoku(inp), render_sudoku(inp, lab))
        return Group(header, legend, pair)
    if task == "maze":
        moves = int((lab == 5).sum()) + 1
        legend = Text.assemble(
            ("██", "grey50"),
            " wall  ",
            ("S ", "bold black on green"),
            " start  ",
            ("G ", "bold black on red"),
            " goal  ",
            ("··", "bold yellow"),
            f" shortest path ({moves} moves)",
        )
        return Group(header, legend, render_maze(inp, lab))
    return Group(header, Text("inputs:"), render_tokens(inp), Text("labels:"), render_tokens(lab))
