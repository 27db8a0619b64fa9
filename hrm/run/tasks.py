"""Facts of the two puzzle tasks that the data builders, the config schema and the app all need.

Token ids follow the reference builders (HRM-SPEC.md §5): 0 is padding, then the task's symbols.
"""

from __future__ import annotations

SUDOKU_VOCAB_SIZE = 11  # pad + digits 0..9 (0 = blank) as ids 1..10
SUDOKU_SIDE = 9
MAZE_VOCAB_SIZE = 6  # pad + "# SGo"
MAZE_LEVEL_SIZES: dict[str, int] = {"easy": 9, "medium": 15, "hard": 30}  # default side per level
