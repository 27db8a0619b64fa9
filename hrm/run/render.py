"""Drawing a puzzle, a model's answer and the right answer as Rich `Text` (torch-free, no terminal).

One renderer for the app's sample view and `hrm-data show`. Token codes follow the reference
builders (HRM-SPEC §5): Sudoku 0 pad, 1 blank, 2..10 digits 1..9; Maze 1 wall, 2 open, 3 start,
4 goal, 5 path. Every distinction is made twice, by glyph or text attribute AND by colour, so a
drawing reads the same in 16 colours and with NO_COLOR:

- Sudoku: givens dim; right answers plain; a wrong answer in reverse video with the correct digit
  as a superscript after it (`8⁷`: the model wrote 8, the answer is 7).
- Maze: walls `█`, `S`/`G`; `●` where the model's path is the label's, `✗` model path off the
  label's, `○` label path the model missed.
- Cells a step changed (ACT segments) are underlined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

BLANK = 1
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹"
PATH_GLYPH, EXTRA_GLYPH, MISSED_GLYPH = "●", "✗", "○"


@dataclass(frozen=True)
class PuzzleStyles:
    given: str = "dim"
    answer: str = ""
    wrong: str = "bold reverse red"  # reverse survives NO_COLOR
    fix: str = "bold green"  # the correct digit after a wrong one
    changed: str = "underline"
    grid: str = "dim"
    wall: str = "dim"
    endpoint: str = "bold"
    path: str = "bold green"  # model path on the label's (or the label's path alone)
    extra: str = "bold red"  # model path off the label's
    missed: str = "bold yellow"  # label path the model missed


@dataclass(frozen=True)
class Verdict:
    wrong: int  # Sudoku: wrong blanks; maze: path cells missed + extra
    total: int  # Sudoku: blanks; maze: label path cells
    text: str


def _side(n: int, grid: Sequence[int] | None) -> tuple[int, int]:
    if grid and len(grid) == 2 and int(grid[0]) * int(grid[1]) <= n:
        return int(grid[0]), int(grid[1])
    side = math.isqrt(n)
    return side, side


def _boxes(n: int) -> tuple[int, int]:
    """Box shape of an n×n Sudoku (9 → 3×3, 6 → 2×3, 4 → 2×2); (n, n) means no boxes."""
    r = math.isqrt(n)
    if r * r == n:
        return r, r
    for br in range(r, 1, -1):
        if n % br == 0:
            return br, n // br
    return n, n


def _tail(tokens: Sequence[int] | None, n: int) -> list[int] | None:
    """The last `n` tokens (predictions may carry a puzzle-embedding prefix), padded with 0."""
    if tokens is None:
        return None
    out = [int(t) for t in list(tokens)[-n:]]
    return out + [0] * (n - len(out))


def _digit(tok: int) -> str:
    return str(tok - 1) if 2 <= tok <= 10 else "?"


def sudoku_grid(
    inputs: Sequence[int],
    prediction: Sequence[int] | None = None,
    label: Sequence[int] | None = None,
    *,
    grid: Sequence[int] | None = None,
    styles: PuzzleStyles = PuzzleStyles(),
    changed: set[int] | None = None,
) -> Text:
    """Givens, and in the blanks the prediction (or, without one, the label; without both, `.`).
    A prediction is checked against the label where there is one."""
    inp = [int(t) for t in inputs]
    n = len(inp)
    pred, lab = _tail(prediction, n), _tail(label, n)
    rows, cols = _side(n, grid)
    br, bc = _boxes(cols)
    out = Text()
    for r in range(rows):
        if r and r % br == 0:
            rule = "┼".join("─" * (2 * bc + 1) for _ in range(cols // bc))
            out.append(rule[:-1], styles.grid)  # as wide as a row without its trailing space
            out.append("\n")
        out.append(" ")
        for c in range(cols):
            if c and c % bc == 0:
                out.append("│ ", styles.grid)
            i = r * cols + c
            under = f" {styles.changed}" if changed and i in changed else ""
            if inp[i] >= 2:
                out.append(_digit(inp[i]), styles.given)
                out.append(" ")
                continue
            shown = pred if pred is not None else lab
            if shown is None:
                out.append(".", styles.given)
                out.append(" ")
                continue
            tok = shown[i]
            right = pred is None or lab is None or lab[i] < 0 or tok == lab[i]
            if right:
                out.append(_digit(tok), (styles.answer + under).strip())
                out.append(" ")
            else:
                out.append(_digit(tok), styles.wrong + under)
                fix = lab[i] - 1 if lab is not None and 2 <= lab[i] <= 10 else 0
                out.append(SUPERSCRIPT[fix] if fix else "?", styles.fix)
        out.rstrip()
        if r < rows - 1:
            out.append("\n")
    return out


def maze_grid(
    inputs: Sequence[int],
    prediction: Sequence[int] | None = None,
    label: Sequence[int] | None = None,
    *,
    grid: Sequence[int] | None = None,
    styles: PuzzleStyles = PuzzleStyles(),
    wide: bool = True,
    changed: set[int] | None = None,
) -> Text:
    """Walls, S/G, and the paths; `wide` draws each cell two columns wide (square-looking).
    Without a prediction the label's path is drawn as a correct one (`●`)."""
    inp = [int(t) for t in inputs]
    n = len(inp)
    pred, lab = _tail(prediction, n), _tail(label, n)
    if pred is None:
        pred, lab = lab, None
    rows, cols = _side(n, grid)
    pad = " " if wide else ""
    out = Text()
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            tok = inp[i]
            under = f" {styles.changed}" if changed and i in changed else ""
            if tok == WALL:
                out.append("██" if wide else "█", styles.wall)
                continue
            if tok in (START, GOAL):
                out.append(("S" if tok == START else "G") + pad, styles.endpoint)
                continue
            in_pred = pred is not None and pred[i] == PATH
            in_lab = lab is not None and lab[i] == PATH
            if in_pred and (lab is None or in_lab):
                out.append(PATH_GLYPH, styles.path + under)
            elif in_pred:
                out.append(EXTRA_GLYPH, styles.extra + under)
            elif in_lab:
                out.append(MISSED_GLYPH, styles.missed + under)
            else:
                out.append(" ", under.strip())
            out.append(pad)
        if r < rows - 1:
            out.append("\n")
    return out


def verdict(task: str, inputs: Sequence[int], prediction: Sequence[int], label: Sequence[int]) -> Verdict:
    """How right a prediction is, on the cells that matter (the same cells as `changed_accuracy`)."""
    inp = [int(t) for t in inputs]
    n = len(inp)
    pred, lab = _tail(prediction, n) or [], _tail(label, n) or []
    if task == "maze":
        want = {i for i in range(n) if lab[i] == PATH and inp[i] != PATH}
        got = {i for i in range(n) if pred[i] == PATH and inp[i] != PATH}
        missed, extra = len(want - got), len(got - want)
        if not missed and not extra:
            return Verdict(0, len(want), f"✓ path found ({len(want)} cells)")
        text = f"✗ path {len(want) - missed} of {len(want)} cells" + (f" · {extra} extra" if extra else "")
        return Verdict(missed + extra, len(want), text)
    blanks = [i for i in range(n) if inp[i] == BLANK and lab[i] >= 0]
    wrong = sum(pred[i] != lab[i] for i in blanks)
    if not wrong:
        return Verdict(0, len(blanks), f"✓ all {len(blanks)} blanks right")
    return Verdict(wrong, len(blanks), f"✗ {wrong} wrong of {len(blanks)} blanks")


def legend(task: str, styles: PuzzleStyles = PuzzleStyles(), with_prediction: bool = True) -> Text:
    """One line that says what the glyphs of a drawing mean, in the drawing's own styles."""
    if task == "maze":
        if not with_prediction:
            return Text.assemble(("██", styles.wall), " wall  ", ("S G", styles.endpoint), " start goal  ",
                                 (PATH_GLYPH, styles.path), " shortest path")  # fmt: skip
        return Text.assemble((PATH_GLYPH, styles.path), " right  ", (EXTRA_GLYPH, styles.extra),
                             " off path  ", (MISSED_GLYPH, styles.missed), " missed")  # fmt: skip
    if not with_prediction:
        return Text.assemble(("1", styles.given), " given  ", ("1", styles.answer or "none"), " answer")
    return Text.assemble(("1", styles.given), " given  ", ("8", styles.wrong), ("⁷", styles.fix),
                         " wrong, answer 7")  # fmt: skip


def changed_cells(before: Sequence[int] | None, after: Sequence[int], n: int) -> set[int]:
    """Cells whose token differs between two predictions (nothing when there is no `before`)."""
    a, b = _tail(before, n), _tail(after, n) or []
    return set() if a is None else {i for i in range(n) if a[i] != b[i]}


def draw(
    task: str,
    inputs: Sequence[int],
    prediction: Sequence[int] | None,
    label: Sequence[int] | None,
    *,
    grid: Sequence[int] | None = None,
    styles: PuzzleStyles = PuzzleStyles(),
    width: int = 0,
    changed: set[int] | None = None,
) -> Text:
    """The drawing for `task` ("sudoku" | "maze"); a maze is drawn two columns per cell when
    `width` (0: no limit) allows."""
    if task == "maze":
        cols = _side(len(inputs), grid)[1]
        wide = width <= 0 or 2 * cols <= width
        return maze_grid(inputs, prediction, label, grid=grid, styles=styles, wide=wide, changed=changed)
    return sudoku_grid(inputs, prediction, label, grid=grid, styles=styles, changed=changed)
