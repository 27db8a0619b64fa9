"""Runs & checkpoints: attach to any run, resume a run from one of its checkpoints, delete a run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from hrm_tui import runs
from hrm_tui.checkpoints import Checkpoint, browse
from hrm_tui.host import AppHost, host
from hrm_tui.runs import LaunchError, RunInfo
from hrm_tui.runstate import LIVE_STATES
from hrm_tui.screens.confirm import ConfirmScreen

MARK = {"failed": "✗", "died": "✗"}
RUN_COLUMNS = [" ", "run", "status", "step"]
CKPT_COLUMNS = ["step", "eval exact", "saved", "size", " "]
NARROW = 110  # columns below which the checkpoints list goes under the runs list


def fill_table(table: DataTable, labels: list[str], rows: list[tuple[str, tuple[str, ...]]]) -> None:
    """Replace a table's rows, with column widths computed here: left to DataTable's own sizing,
    columns sometimes stayed at their header widths (Textual 8.2.8)."""
    widths = [max([len(label)] + [len(r[i]) for _, r in rows]) for i, label in enumerate(labels)]
    table.clear(columns=True)
    for label, width in zip(labels, widths):
        table.add_column(label, width=width)
    for key, row in rows:
        table.add_row(*row, key=key)


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "attach", "Attach", priority=True),
        Binding("R", "resume", "Resume from checkpoint"),
        Binding("d", "delete", "Delete run"),
        # Where R or d does not apply, the same key says why instead of doing nothing.
        Binding("R", "why_not('resume')", "", show=False),
        Binding("d", "why_not('delete')", "", show=False),
        Binding("tab", "focus_next", "Switch list", show=False),
        Binding("escape", "back", "Back"),
    ]

    selected_alive = reactive(False, bindings=True)
    selected_has_ckpt = reactive(False, bindings=True)

    @dataclass
    class Scanned(Message):
        infos: list[RunInfo]

    @dataclass
    class CheckpointsListed(Message):
        run_dir: Path
        checkpoints: list[Checkpoint]  # the live branch newest first, then the abandoned ones

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[RunInfo] = []
        self._select: Path | None = None  # put the cursor here on the next scan
        self._shown: dict[str, tuple[str, ...]] = {}  # the row values on screen, by run path
        self._ckpt_rows: list[tuple[str, tuple[str, ...]]] | None = None
        self.checkpoints: list[Checkpoint] = []
        self._ckpts_of: Path | None = None  # the run whose checkpoints the pane shows

    @property
    def hrm(self) -> AppHost:
        return host(self)

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        with Horizontal(id="runs-body"):
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True, classes="box")
            yield DataTable(id="ckpts", cursor_type="row", classes="box")
        yield Footer()

    def on_mount(self) -> None:
        runs_table = self.query_one("#runs", DataTable)
        runs_table.border_title = "Runs"
        ckpts = self.query_one("#ckpts", DataTable)
        ckpts.border_title = "Checkpoints"
        self.set_interval(2.0, self.scan)
        self.on_resize()

    def on_resize(self) -> None:
        # Narrow terminals stack the two lists: side by side, neither shows its columns at 80×24.
        self.query_one("#runs-body").set_class(self.app.size.width < NARROW, "-narrow")

    def on_screen_resume(self) -> None:
        self.query_one("#runs-title", Static).update(f" Runs under {self.hrm.runs_root}")
        self._select = self.hrm.attached_run  # arriving from a dashboard: its run is the selection
        self.scan()
        self.query_one("#runs", DataTable).focus()

    @work(thread=True, exclusive=True, group="scan")
    def scan(self) -> None:
        self.post_message(self.Scanned(runs.list_runs(self.hrm.runs_root)))

    def on_runs_screen_scanned(self, msg: Scanned) -> None:
        table = self.query_one("#runs", DataTable)
        keep, self._select = self._select or self.selected_run, None
        self.infos = msg.infos
        rows: list[tuple[str, ...]] = [
            (MARK.get(i.status, "●" if i.status in LIVE_STATES else "○"), i.name, i.label, _step(i)) for i in msg.infos
        ]
        shown = {str(i.path): row for i, row in zip(msg.infos, rows)}
        if shown != self._shown:  # the usual 2-second refresh changes nothing: leave the table alone
            fill_table(table, RUN_COLUMNS, list(shown.items()))
            self._shown = shown
        at = next((i for i, info in enumerate(self.infos) if info.path == keep), None)
        if at is not None and at != table.cursor_row:
            table.move_cursor(row=at)
        self._selection_changed()
        self.refresh_bindings()

    @property
    def selected_run(self) -> Path | None:
        table = self.query_one("#runs", DataTable)
        if not self.infos or table.cursor_row is None or not 0 <= table.cursor_row < len(self.infos):
            return None
        return self.infos[table.cursor_row].path

    @on(DataTable.RowHighlighted, "#runs")
    def _selection_changed(self) -> None:
        run = self.selected_run
        info = next((i for i in self.infos if i.path == run), None)
        self.selected_alive = bool(info and info.alive)
        # Why the selected run failed or died, where the eye already is.
        reason = f"{info.label}: {info.reason}" if info and info.reason and info.status in MARK else ""
        self.query_one("#runs", DataTable).border_subtitle = (
            reason[:100] if self.infos else "no runs yet: press n for a new run"
        )
        pane = self.query_one("#ckpts", DataTable)
        if run is None:
            pane.border_title, pane.border_subtitle = "Checkpoints", ""
            return
        pane.border_title = f"Checkpoints of {run.name}"
        if run != self._ckpts_of:  # another run: say so until its list arrives
            self._ckpts_of, self.checkpoints, self._ckpt_rows = run, [], None
            self.selected_has_ckpt = False
            fill_table(pane, CKPT_COLUMNS, [])
            pane.border_subtitle = "loading…"
        self.list_checkpoints(run)

    @work(thread=True, exclusive=True, group="ckpts")
    def list_checkpoints(self, run_dir: Path) -> None:
        self.post_message(self.CheckpointsListed(run_dir, browse(run_dir)))

    def on_runs_screen_checkpoints_listed(self, msg: CheckpointsListed) -> None:
        if msg.run_dir != self.selected_run:
            return
        self.checkpoints = msg.checkpoints
        rows = [(str(c.path), _ckpt_row(c)) for c in msg.checkpoints]
        pane = self.query_one("#ckpts", DataTable)
        if rows != self._ckpt_rows:  # unchanged on the 2-second refresh: keep the cursor where it is
            fill_table(pane, CKPT_COLUMNS, rows)  # the cursor starts on row 0: the newest of the live branch
            self._ckpt_rows = rows
        pane.border_subtitle = self._ckpt_hint()
        self.selected_has_ckpt = bool(msg.checkpoints)

    def _ckpt_hint(self) -> str:
        if self.selected_alive:
            return "live run: stop it before resuming or deleting"
        if not self.checkpoints:
            return "no checkpoints"
        abandoned = sum(c.abandoned for c in self.checkpoints)
        return f"{abandoned} from an abandoned branch (after a resume from an earlier step)" if abandoned else ""

    def _why_not(self, action: str) -> str | None:
        """Why `action` (resume, delete) does not apply to the selection now; None when it does."""
        if self.hrm.readonly:
            return "read-only: started with --readonly"
        run = self.selected_run
        if run is None:
            return "no run selected"
        if self.selected_alive:
            return f"{run.name} is running: stop it first (s on its dashboard), then {action} it"
        if action == "resume" and not self.selected_has_ckpt:
            return f"{run.name} has no checkpoint to resume from"
        if action == "resume" and self._selected_checkpoint() is None:
            return "pick a checkpoint in the right-hand list"
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "attach":
            return bool(self.infos)
        if action in ("resume", "delete"):
            return self._why_not(action) is None
        if action == "why_not":  # the fallback of R / d: active exactly when the real action is not
            return not self.hrm.readonly and bool(self.infos) and self._why_not(str(parameters[0])) is not None
        return True

    def action_why_not(self, action: str) -> None:
        reason = self._why_not(action)
        if reason is not None:
            self.notify(reason, title=f"cannot {action}", severity="warning")

    def action_attach(self) -> None:
        run = self.selected_run
        if run is not None:
            self.hrm.attach(run)

    def action_back(self) -> None:
        self.hrm.back()

    def _selected_checkpoint(self) -> Path | None:
        table = self.query_one("#ckpts", DataTable)
        if not self.checkpoints:
            return None
        row = table.cursor_row if table.cursor_row is not None else 0
        return self.checkpoints[min(max(row, 0), len(self.checkpoints) - 1)].path

    @work(exclusive=True, group="confirm")
    async def action_resume(self) -> None:
        run, ckpt = self.selected_run, self._selected_checkpoint()
        if run is None or ckpt is None:
            return
        question = f"Resume {run.name} from {ckpt.name}? Steps after it are replaced by the continuation."
        if not await self.app.push_screen_wait(ConfirmScreen(question, yes="Resume")):
            return
        try:
            runs.resume(run, ckpt, gpus=runs.run_gpus(run), env=self.hrm.child_env)
        except LaunchError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"resuming {run.name} from {ckpt.name}")
        self.hrm.attach(run, reload=True)

    @work(exclusive=True, group="confirm")
    async def action_delete(self) -> None:
        run = self.selected_run
        if run is None:
            return
        if not await self.app.push_screen_wait(ConfirmScreen(f"Delete {run} and all its checkpoints?", yes="Delete")):
            return
        try:
            runs.delete_run(run)
        except (LaunchError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.hrm.forget(run)
        self.notify(f"deleted {run.name}")
        self.scan()


def _step(info: RunInfo) -> str:
    return f"{info.step:,}" + (f" / {info.total_steps:,}" if info.total_steps else "")


def _ckpt_row(c: Checkpoint) -> tuple[str, ...]:
    exact = f"{c.info.score * 100:.1f} %" if c.info.score is not None else "–"
    saved = time.strftime("%m-%d %H:%M", time.localtime(c.written))
    mark = "abandoned branch" if c.abandoned else "best" if c.best else ""
    return (f"{c.step:,}", exact, saved, runs.human_size(c.info.size), mark)
