"""How a run ended badly: its last status and the tail of trainer.log (hidden while all is well)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class DeathNote(Widget):
    DEFAULT_CSS = """
    DeathNote { height: auto; max-height: 12; display: none; border: round $error; padding: 0 1; }
    DeathNote.-shown { display: block; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._headline = ""
        self._tail: list[str] = []

    def show(self, headline: str | None, tail: list[str]) -> None:
        self._headline, self._tail = headline or "", tail
        self.set_class(bool(headline), "-shown")
        self.refresh(layout=True)

    def render(self) -> Text:
        t = Text()
        t.append(self._headline, style="bold")  # the red border says "bad"; text stays readable in greys
        if len(self._tail) == 1:  # the compact layout: one line of the log, labelled on the same line
            t.append("\ntrainer.log: ", style="dim")
            t.append(self._tail[0])
        elif self._tail:
            t.append("\ntrainer.log:\n", style="dim")
            t.append("\n".join(self._tail))
        return t
