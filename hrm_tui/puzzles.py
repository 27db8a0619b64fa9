"""Draw one eval sample (input, prediction, label token lists) as a Sudoku grid or a maze.

Token codes follow the reference builders (HRM-SPEC §5): Sudoku 0 pad, 1 blank, 2..10 digits 1..9;
Maze 1 wall '#', 2 open ' ', 3 start 'S', 4 goal 'G', 5 path 'o'. Styles are named (Rich styles
built from the theme by the widget), and wrong cells are also underlined so they read with NO_COLOR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text

WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class PuzzleStyles:
    given: str = "dim"
    answer: str = "bold"
    wrong: str = "bold underline white on red3"  # a filled cell: stands out in greys too (NO_COLOR)
    grid: str = "dim"
    model_path: str = "bold green"
    label_path: str = "yellow"
    wall: str = "dim"


def _side(tokens: list[int], grid: list[int] | None) -> tuple[int, int]:
    if grid and len(grid) == 2 and grid[0] * grid[1] <= len(tokens):
        return int(grid[0]), int(grid[1])
    side = int(math.isqrt(len(tokens)))
    return side, side


def _boxes(n: int) -> tuple[int, int]:
    """Box shape of an n×n Sudoku (9 → 3×3, 6 → 2×3, 4 → 2×2); (n, n) means no boxes."""
    r = int(math.isqrt(n))
    if r * r == n:
        return r, r
    for br in range(r, 0, -1):
        if n % br == 0 and br > 1:
            return br, n // br
    return n, n


def _aligned(sample: dict) -> tuple[list[int], list[int], list[int]]:
    inp = list(sample.get("input") or [])
    n = len(inp)
    pred = list(sample.get("prediction") or [])[-n:] if n else []
    lab = list(sample.get("label") or [])[-n:] if n else []
    return inp, pred + [0] * (n - len(pred)), lab + [0] * (n - len(lab))


def sudoku_text(sample: dict, grid: list[int] | None = None, styles: PuzzleStyles = PuzzleStyles()) -> tuple[Text, int]:
    """The grid and the number of wrong answer cells."""
    inp, pred, lab = _aligned(sample)
    rows, cols = _side(inp, grid)
    br, bc = _boxes(cols)
    out = Text()
    wrong = 0
    for r in range(rows):
        if r and r % br == 0:
            sep = "┼".join("─" * (2 * bc + 1) for _ in range(cols // bc))
            out.append(sep + "\n", style=styles.grid)
        for c in range(cols):
            if c and c % bc == 0:
                out.append(" │", style=styles.grid)
            i = r * cols + c
            out.append(" ")
            if inp[i] >= 2:
                out.append(str(inp[i] - 1), style=styles.given)
            else:
                p = pred[i]
                ok = p == lab[i] or lab[i] < 0
                wrong += not ok
                out.append(str(p - 1) if 2 <= p <= 10 else "?", style=styles.answer if ok else styles.wrong)
        out.append("\n")
    out.rstrip()
    return out, wrong


def maze_text(
    sample: dict, grid: list[int] | None = None, styles: PuzzleStyles = PuzzleStyles(), wide: bool = False
) -> tuple[Text, int]:
    """Walls as blocks, S/G letters, the model's path (•), the label's path where they differ (·);
    `wide` draws each cell two columns wide (square-looking). Returns the drawing and the number of
    cells where the model's path differs from the label's."""
    inp, pred, lab = _aligned(sample)
    rows, cols = _side(inp, grid)
    out = Text()
    wrong = 0
    pad = " " if wide else ""
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            tok = inp[i]
            if tok == WALL:
                out.append("██" if wide else "█", style=styles.wall)
            elif tok == START:
                out.append("S" + pad, style="bold")
            elif tok == GOAL:
                out.append("G" + pad, style="bold")
            else:
                in_pred, in_lab = pred[i] == PATH, lab[i] == PATH
                if in_pred and in_lab:
                    out.append("•" + pad, style=styles.model_path)
                elif in_pred:
                    wrong += 1
                    out.append("•" + pad, style=styles.wrong)
                elif in_lab:
                    wrong += 1
                    out.append("·" + pad, style=styles.label_path)
                else:
                    out.append(" " + pad)
        out.append("\n")
    out.rstrip()
    return out, wrong


def render_sample(
    task: str, sample: dict, grid: list[int] | None = None, styles: PuzzleStyles = PuzzleStyles(), width: int = 0
) -> tuple[Text, str, str]:
    """(drawing, legend, verdict); mazes are drawn two columns per cell when `width` allows."""
    if task == "maze":
        cols = _side(list(sample.get("input") or []), grid)[1]
        text, wrong = maze_text(sample, grid, styles, wide=2 * cols <= width)
        return text, "• model path · label path", "✓ solved" if wrong == 0 else f"✗ {wrong} cells differ"
    text, wrong = sudoku_text(sample, grid, styles)
    return text, "givens dim · answers bold · wrong red", "✓ solved" if wrong == 0 else f"✗ {wrong} wrong"
