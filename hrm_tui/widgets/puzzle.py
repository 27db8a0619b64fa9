"""The eval sample view: a Sudoku grid or a maze with the model's answer and its mistakes."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from hrm_tui.puzzles import PuzzleStyles, render_sample


class PuzzleView(Widget):
    DEFAULT_CSS = """
    PuzzleView { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sample: dict | None = None
        self._puzzle_kind = "sudoku"
        self._grid: list[int] | None = None
        self._caption = ""

    def show(self, task: str, grid: list[int] | None, sample: dict | None, caption: str) -> None:
        self._puzzle_kind, self._grid, self._sample, self._caption = task, grid, sample, caption
        self.refresh(layout=True)

    def _styles(self) -> PuzzleStyles:
        """Colours from the current theme (Rich knows no theme variables)."""
        v = self.app.theme_variables
        return PuzzleStyles(
            wrong=f"bold underline #ffffff on {v['error']}", model_path=f"bold {v['success']}", label_path=v["warning"]
        )

    def render(self) -> Text:
        if not self._sample:
            return Text("no eval sample yet (press e to evaluate now)", style="dim")
        drawing, legend, verdict = render_sample(
            self._puzzle_kind, self._sample, self._grid, self._styles(), width=self.size.width
        )
        out = Text()
        out.append(self._caption, style="bold")
        out.append(f"  {verdict}\n", style="bold")
        out.append_text(drawing)
        out.append("\n" + legend, style="dim")
        return out
