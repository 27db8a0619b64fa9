"""New run: pick a preset (shipped or the user's own), see what it trains and costs, launch it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from hrm_tui import runs
from hrm_tui.costs import estimate, local_gpu_memory
from hrm_tui.host import AppHost, host
from hrm_tui.runs import LaunchError

# The extra-overrides field's placeholder: real keys of the schema (a test validates it).
OVERRIDES_EXAMPLE = "optim.lr=3e-4 train.eval_interval=500"
CPU_OVERRIDE = "train.device=cpu"
COLUMNS = ("preset", "task", "model", "device", "memory", "step est.", "data")
NARROW = 110  # columns below which the table drops model and memory (shown under it instead)


def user_preset_dirs() -> list[Path]:
    """Where the user's own presets live: $HRM_TUI_PRESETS (':'-separated), else ~/.config/hrm-tui/presets."""
    env = os.environ.get("HRM_TUI_PRESETS")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.config/hrm-tui/presets").expanduser()]


def preset_files() -> list[Path]:
    from hrm.run.config import list_presets

    files = list(list_presets())
    for d in user_preset_dirs():
        if d.is_dir():
            files += sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml"))
    return files


def describe_preset(path: Path) -> dict[str, Any]:
    """One picker row; errors in a user's file become a row that says what is wrong."""
    from hrm.run.config import describe, load_preset

    try:
        cfg = load_preset(path)
        info = describe(cfg)
    except Exception as exc:  # a broken user preset must not break the picker
        return {"path": path, "preset": path.stem, "error": str(exc).splitlines()[0]}
    info["path"] = path
    info["hidden_size"] = cfg.model.hidden_size
    info["layers"] = cfg.model.H_layers + cfg.model.L_layers
    info["mem"], info["step_est"] = estimate(info, local_gpu_memory())
    try:
        from hrm.run.recipes import is_built

        info["built"] = "built" if is_built(info["dataset"]) else "not built"
    except ImportError:
        info["built"] = "?"
    return info


class PickerScreen(Screen):
    BINDINGS = [
        Binding("enter", "launch", "Launch", priority=True),
        Binding("o", "edit_overrides", "Edit overrides"),
        Binding("escape", "back", "Back"),
    ]

    @dataclass
    class Described(Message):
        rows: list[dict[str, Any]]
        no_cuda: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.no_cuda: str | None = None  # why this machine cannot train on CUDA (None: it can)
        self._narrow = False

    @property
    def hrm(self) -> AppHost:
        return host(self)

    def compose(self) -> ComposeResult:
        with Vertical(id="picker", classes="box"):
            yield DataTable(id="presets", cursor_type="row")
            yield Static(id="preset-about")
            with Horizontal(id="overrides"):
                yield Label("run name")
                yield Input(placeholder="auto", id="run-name")
                yield Label("steps")
                yield Input(placeholder="preset", id="steps", type="integer")
                yield Label("gpus")
                yield Input(placeholder="1", id="gpus", type="integer")
            yield Input(placeholder=f"more overrides, e.g. {OVERRIDES_EXAMPLE}", id="extra")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#picker").border_title = "New run"
        self.query_one("#preset-about", Static).update("reading the presets…")
        self.call_after_refresh(self.load)  # after the first paint: describing presets imports pydantic

    def on_screen_resume(self) -> None:
        self.query_one("#presets", DataTable).focus()
        if self.rows:  # back from a run: its dataset may be built now
            self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        no_cuda = self.hrm.cuda_missing()  # probed once per app start
        self.post_message(self.Described([describe_preset(p) for p in preset_files()], no_cuda))

    def on_picker_screen_described(self, msg: Described) -> None:
        self.rows, self.no_cuda = msg.rows, msg.no_cuda
        self._fill()
        if not msg.rows:
            self.query_one("#preset-about", Static).update("no presets found (presets/ is empty)")
        self._about()
        self.refresh_bindings()

    def on_resize(self) -> None:
        if self.rows and self._narrow != (self.app.size.width < NARROW):
            self._fill()

    def _fill(self) -> None:
        table = self.query_one("#presets", DataTable)
        keep = table.cursor_row
        table.clear(columns=True)
        narrow = self._narrow = self.app.size.width < NARROW  # model and memory go under the table
        columns = [c for c in COLUMNS if not (narrow and c in ("model", "memory"))]
        rows = []
        for r in self.rows:
            if "error" in r:
                rows.append([r["preset"], f"✗ {r['error']}"[:60], *[""] * (len(columns) - 2)])
                continue
            device = r["device"] + (f" ×{r['gpus']}" if r.get("gpus", 1) > 1 else "")
            if r["device"] == "cuda" and self.no_cuda:
                device += " ✗"
            cells = {"preset": r["preset"], "task": r["task_label"], "model": r["model"], "device": device}
            cells |= {"memory": r["mem"], "step est.": r["step_est"], "data": r["built"]}
            rows.append([cells[c] for c in columns])
        if narrow:  # the task column gets what the others leave (2 cells of padding per column, borders)
            widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
            room = max(10, self.app.size.width - 6 - sum(widths) + widths[1] - 2 * len(columns))
            for row in rows:
                row[1] = row[1] if len(row[1]) <= room else row[1][: room - 1] + "…"
        table.add_columns(*columns)
        for row in rows:
            table.add_row(*row)
        if keep is not None and 0 < keep < len(self.rows):
            table.move_cursor(row=keep)

    @on(DataTable.RowHighlighted, "#presets")
    def _about(self) -> None:
        row = self.selected
        text = ""
        if row is not None:
            text = f"{row['preset']}: {row.get('description') or row.get('error') or ''}"
            if Path(row["path"]).parent != _shipped_dir():
                text += f"\n{row['path']}"  # the user's own file: say which
            if "error" not in row:
                data = "data built on launch" if row.get("built") == "not built" else "data built"
                text += f"\n{row['model']} · {row['mem']} · {row['step_est']} a step on {row['device']} · {data}"
            if row.get("device") == "cuda" and self.no_cuda:
                text += f"\n✗ {self.no_cuda}: enter offers {CPU_OVERRIDE} ({_cpu_step(row)} a step)"
        self.query_one("#preset-about", Static).update(text)

    @property
    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#presets", DataTable)
        if not self.rows or table.cursor_row is None or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "launch":
            return not self.hrm.readonly and self.selected is not None
        return True

    def action_edit_overrides(self) -> None:
        self.set_focus(self.query_one("#run-name", Input))  # at once: the keys that follow go to it

    def action_back(self) -> None:
        self.hrm.back()

    def overrides(self) -> tuple[str | None, list[str], int]:
        name = self.query_one("#run-name", Input).value.strip() or None
        steps = self.query_one("#steps", Input).value.strip()
        gpus_text = self.query_one("#gpus", Input).value.strip()
        extra = self.query_one("#extra", Input).value.split()
        overrides = [*extra]
        if steps:
            overrides.append(f"train.total_steps={int(steps)}")
        return name, overrides, int(gpus_text) if gpus_text else 1

    def action_launch(self) -> None:
        row = self.selected
        if row is None or "error" in row:
            if row is not None:
                self.notify(f"{row['preset']}: {row['error']}", severity="error")
            return
        try:
            name, overrides, gpus = self.overrides()
            from hrm.run.config import load_preset

            cfg = load_preset(row["path"], overrides)  # bad overrides: one clear message here, not a dead run
            if cfg.train.device == "cuda" and self.no_cuda:
                self._offer_cpu(row)
                return
            preset = row["preset"] if Path(row["path"]).parent == _shipped_dir() else str(row["path"])
            run_dir, _ = runs.launch(
                preset, self.hrm.runs_root, name=name, overrides=overrides, gpus=gpus, env=self.hrm.child_env
            )
        except (LaunchError, ValueError) as exc:
            self.notify(str(exc), title="cannot launch", severity="error", timeout=8)
            return
        self.notify(f"launched {run_dir.name}")
        self.hrm.attach(run_dir)

    def _offer_cpu(self, row: dict[str, Any]) -> None:
        """Refuse a CUDA run on a machine without CUDA, and put the CPU override in the field so
        that a second enter launches it on the CPU (a choice the user makes, never made for them)."""
        extra = self.query_one("#extra", Input)
        # One process on the CPU: a preset for several GPUs would start one per GPU on these cores.
        offer = [CPU_OVERRIDE] + (["train.gpus=1"] if int(row.get("gpus") or 1) > 1 else [])
        extra.value = " ".join([*extra.value.split(), *(o for o in offer if o not in extra.value.split())])
        self.notify(
            f"{row['preset']} trains on CUDA: {self.no_cuda}. Added {' '.join(offer)} to the overrides: "
            f"enter launches it on the CPU ({_cpu_step({**row, 'gpus': 1})} a step).",
            title="no CUDA here",
            severity="warning",
            timeout=12,
        )


def _cpu_step(row: dict[str, Any]) -> str:
    return estimate({**row, "device": "cpu"})[1]


def _shipped_dir() -> Path:
    from hrm.run.config import presets_dir

    return presets_dir()
