"""The one puzzle renderer (hrm.run.render) in a fixed-width console: what a reader sees, in colour
and with NO_COLOR, checked cell by cell against the tokens drawn."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text
from support.tui import SUDOKU_SOLUTION, maze_sample, sudoku_sample

from hrm.run.render import EXTRA_GLYPH, MISSED_GLYPH, PATH_GLYPH, draw, legend, maze_grid, sudoku_grid, verdict


def printed(text: Text, *, color: bool = True, width: int = 80) -> str:
    """What a terminal shows: ANSI codes included (`color`), or a NO_COLOR console's output."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system="standard", no_color=not color)
    console.print(text, end="")
    return out.getvalue()


def plain(text: Text) -> list[str]:
    return text.plain.splitlines()


def test_sudoku_wrong_answers_show_the_right_digit_and_the_count() -> None:
    sample = sudoku_sample()  # blanks at every cell i % 3 == 1; wrong answers at cells 4 and 40
    inp, pred, lab = sample["input"], sample["prediction"], sample["label"]
    v = verdict("sudoku", inp, pred, lab)
    assert (v.wrong, v.total, v.text) == (2, 27, "✗ 2 wrong of 27 blanks")
    lines = plain(sudoku_grid(inp, pred, lab, grid=[9, 9]))
    assert len(lines) == 11 and lines[3] == "───────┼───────┼──────"
    # cell 4 (row 0): the model wrote 8 where the answer is 7 -> "8⁷"; cell 40 (row 4): 6 for 5 -> "6⁵"
    assert lines[0] == " 5 3 4 │ 6 8⁷8 │ 9 1 2"
    assert lines[5] == " 4 2 6 │ 8 6⁵3 │ 7 9 1"
    digits = [ch for ln in lines if "─" not in ln for ch in ln if ch in "0123456789"]
    assert digits == [str(pred[i] - 1) for i in range(81)]  # every cell shows the model's digit, in order
    assert pred[4] - 1 == 8 and SUDOKU_SOLUTION[4] == 7 and SUDOKU_SOLUTION[40] == 5
    right = verdict("sudoku", inp, lab, lab)
    assert right.text == "✓ all 27 blanks right"


def test_sudoku_styles_givens_dim_wrong_reversed_in_colour_and_without() -> None:
    sample = sudoku_sample()
    text = sudoku_grid(sample["input"], sample["prediction"], sample["label"])
    coloured = printed(text)
    assert "\x1b[2m5" in coloured  # the given 5 (cell 0) is dim
    assert "\x1b[1;7;31m8" in coloured  # the wrong 8: bold, reverse video, red
    mono = printed(text, color=False)
    assert "\x1b[31" not in mono and "\x1b[32" not in mono  # no colour at all
    assert "\x1b[1;7m8" in mono  # still reversed: the mistake reads without colour
    assert "⁷" in mono and "⁵" in mono


def test_sudoku_puzzle_and_solution_without_a_prediction() -> None:
    sample = sudoku_sample()
    puzzle = plain(sudoku_grid(sample["input"]))
    assert puzzle[0] == " 5 . 4 │ 6 . 8 │ 9 . 2"
    solution = plain(sudoku_grid(sample["input"], None, sample["label"]))
    assert solution[0] == " 5 3 4 │ 6 7 8 │ 9 1 2"  # the label fills the blanks, nothing marked wrong


def test_maze_paths_distinct_by_glyph_and_colour() -> None:
    sample = maze_sample(7)
    inp, pred, lab = sample["input"], sample["prediction"], sample["label"]
    text = maze_grid(inp, pred, lab, grid=[7, 7], wide=False)
    lines = plain(text)
    assert lines[0] == "█" * 7
    assert lines[1] == f"█S{EXTRA_GLYPH}{EXTRA_GLYPH}{EXTRA_GLYPH} █"  # the model's path, off the label's
    assert lines[2] == f"█{MISSED_GLYPH}  {EXTRA_GLYPH} █"  # the label's path the model missed, left
    assert lines[5] == f"█{MISSED_GLYPH}{MISSED_GLYPH}{MISSED_GLYPH}{MISSED_GLYPH}G█"
    v = verdict("maze", inp, pred, lab)
    assert (v.wrong, v.total) == (14, 7) and v.text == "✗ path 0 of 7 cells · 7 extra"
    # Three kinds of path cell, three glyphs and three colours; without colour the glyphs remain.
    coloured = printed(text)
    assert f"\x1b[1;31m{EXTRA_GLYPH}" in coloured and f"\x1b[1;33m{MISSED_GLYPH}" in coloured
    mono = printed(text, color=False)
    assert "\x1b[3" not in mono and EXTRA_GLYPH in mono and MISSED_GLYPH in mono
    both = maze_grid(inp, lab, lab, grid=[7, 7], wide=False)
    assert PATH_GLYPH in both.plain and "\x1b[1;32m" + PATH_GLYPH in printed(both)
    assert verdict("maze", inp, lab, lab).text == "✓ path found (7 cells)"
    assert len({PATH_GLYPH, EXTRA_GLYPH, MISSED_GLYPH}) == 3


def test_maze_30x30_two_columns_a_cell_when_there_is_room() -> None:
    side = 30
    inp = [1 if r in (0, side - 1) or c in (0, side - 1) else 2 for r in range(side) for c in range(side)]
    inp[side + 1], inp[side * side - side - 2] = 3, 4
    lab = list(inp)
    for c in range(2, side - 1):
        lab[side + c] = 5
    wide = plain(draw("maze", inp, lab, lab, grid=[side, side], width=60))
    narrow = plain(draw("maze", inp, lab, lab, grid=[side, side], width=59))
    assert len(wide) == side and {len(ln) for ln in wide} == {60}
    assert len(narrow) == side and {len(ln) for ln in narrow} == {30}


def test_changed_cells_are_underlined_and_legends_name_the_glyphs() -> None:
    sample = sudoku_sample(wrong=())
    text = sudoku_grid(sample["input"], sample["prediction"], sample["label"], changed={1})
    assert "\x1b[4m3" in printed(text, color=False)  # cell 1 (a blank, answered 3), underlined
    assert "wrong, answer 7" in legend("sudoku").plain
    assert {PATH_GLYPH, EXTRA_GLYPH, MISSED_GLYPH} <= set(legend("maze").plain)
