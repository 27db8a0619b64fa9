"""The eval sample view: the puzzle, the model's answer against the right one, and (watch it think)
the prediction after each ACT segment, with the cells that segment changed underlined and the
segment where the model's own Q-head would halt marked ◆."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

from hrm.run.render import PuzzleStyles, changed_cells, draw, legend, verdict


def segments_of(sample: dict[str, Any] | None) -> list[dict[str, Any]]:
    segs = (sample or {}).get("segments")
    return (
        [s for s in segs if isinstance(s, dict) and isinstance(s.get("pred"), list)] if isinstance(segs, list) else []
    )


def drawing_width(task: str, grid: list[int] | None, sample: dict[str, Any] | None, wide: bool = True) -> int:
    """Columns the drawing needs (the dashboard sizes the sample panel by it)."""
    n = len((sample or {}).get("input") or [])
    cols = int(grid[1]) if grid and len(grid) == 2 else max(1, int(n**0.5))
    if task == "maze":
        return cols * (2 if wide else 1)
    return 2 * cols + 2 * (int(cols**0.5) - 1) + 1


class PuzzleView(Widget):
    DEFAULT_CSS = """
    PuzzleView { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sample: dict[str, Any] | None = None
        self._kind = "sudoku"
        self._grid: list[int] | None = None
        self._caption = ""
        self.segment: int | None = None  # index into the sample's segments; None: the last one

    def show(self, task: str, grid: list[int] | None, sample: dict[str, Any] | None, caption: str) -> None:
        self._kind, self._grid, self._sample, self._caption = task, grid, sample, caption
        self.refresh(layout=True)

    def step_segment(self, delta: int) -> None:
        """Previous/next ACT segment of the shown sample (stays within the first and the last)."""
        n = len(segments_of(self._sample))
        if n:
            current = n - 1 if self.segment is None else self.segment
            self.segment = min(max(current + delta, 0), n - 1)
            self.refresh(layout=True)

    def _styles(self) -> PuzzleStyles:
        """Colours from the current theme (Rich knows no theme variables); the attributes (reverse,
        underline, glyphs) carry the meaning without colour."""
        v = self.app.theme_variables
        return PuzzleStyles(
            wrong=f"bold reverse {v['error']}",
            fix=f"bold {v['success']}",
            path=f"bold {v['success']}",
            extra=f"bold {v['error']}",
            missed=f"bold {v['warning']}",
            changed=f"underline {v['accent']}",
        )

    def _segment_strip(self, segs: list[dict[str, Any]], k: int) -> Text:
        """`seg 1 2◆3 4 [ ]` (the shown one reversed, ◆ before the segment where the Q-head halts),
        then that segment's Q logits: two lines that fit the 80-column panel."""
        halt = self._sample.get("halt_segment") if self._sample else None
        t = Text("seg")
        for j in range(len(segs)):
            t.append("◆" if halt == j + 1 else " ", style="bold")
            t.append(str(j + 1), style="bold reverse" if j == k else "dim")
        t.append(" [ ]", style="dim")
        if isinstance(halt, int):
            t.append(" ◆ Q halts", style="dim")
        q_halt, q_cont = segs[k].get("q_halt"), segs[k].get("q_continue")
        if isinstance(q_halt, (int, float)) and isinstance(q_cont, (int, float)):
            t.append(f"\nq halt {q_halt:+.2f} / go on {q_cont:+.2f} → {'halt' if q_halt > q_cont else 'go on'}")
        elif isinstance(q_halt, (int, float)):  # TRM: no continue head, halts on q_halt > 0
            t.append(f"\nq halt {q_halt:+.2f} (halts > 0) → {'halt' if q_halt > 0 else 'go on'}")
        return t

    def render(self) -> Text:
        sample = self._sample
        if not sample:
            return Text("no eval sample yet (press e to evaluate now)", style="dim")
        inputs = list(sample.get("input") or [])
        segs = segments_of(sample)
        pred = sample.get("prediction")
        changed: set[int] | None = None
        k = 0
        if segs:
            k = len(segs) - 1 if self.segment is None else min(self.segment, len(segs) - 1)
            pred = segs[k]["pred"]
            changed = changed_cells(segs[k - 1]["pred"] if k else None, pred, len(inputs))
        styles = self._styles()
        label = sample.get("label")
        out = Text()
        out.append(self._caption, style="bold")
        if pred is not None and label is not None:
            out.append("\n" + verdict(self._kind, inputs, pred, label).text, style="bold")
        if segs:
            out.append("\n")
            out.append_text(self._segment_strip(segs, k))
        out.append("\n")
        width = self.size.width or 200
        out.append_text(
            draw(self._kind, inputs, pred, label, grid=self._grid, styles=styles, width=width, changed=changed)
        )
        out.append("\n")
        out.append_text(legend(self._kind, styles))
        if segs:
            out.append("  ")
            out.append("x", style=styles.changed)
            out.append(" changed", style="dim")
        return out
