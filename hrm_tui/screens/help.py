"""Help generated from the bindings of the screen it was opened on (never hand-written)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def bindings_table(rows: list[tuple[str, str, bool]]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("key")
    table.add_column("does")
    table.add_column("now", style="dim")
    for key, description, enabled in rows:
        table.add_row(key, description, "" if enabled else "not now")
    return table


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: auto; min-width: 40; max-width: 90; height: auto; max-height: 90%;
                                  border: thick $primary; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, title: str, rows: list[tuple[str, str, bool]]) -> None:
        super().__init__()
        self.title_text, self.rows = title, rows

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = f"Help · {self.title_text}"
            yield Static(bindings_table(self.rows), id="help-table")
            yield Static(
                "\nq quits the app only: a run it launched goes on, and the app re-attaches when started again.",
                classes="note",
            )

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
