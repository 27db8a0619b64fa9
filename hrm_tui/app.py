"""The app: app-wide objects (runs root, system sampler, clock), modes, and app-wide keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from hrm_tui import runs
from hrm_tui.screens import DashboardScreen, HelpScreen, PickerScreen, RunsScreen
from hrm_tui.watch import SystemSampler


class HrmApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "hrm-tui"
    ENABLE_COMMAND_PALETTE = False  # every command is a key in the footer; keep it for them
    MODES = {"dashboard": DashboardScreen, "runs": RunsScreen, "picker": PickerScreen}
    BINDINGS = [
        Binding("r", "switch_mode('runs')", "Runs"),
        Binding("n", "switch_mode('picker')", "New run"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit (the run continues)"),
    ]

    def __init__(
        self,
        runs_root: Path = Path("runs"),
        *,
        attach: Path | None = None,
        readonly: bool = False,
        sampler: Callable[[], dict[str, Any]] | None = None,
        sample_system: bool = True,
        clock: Callable[[], float] = time.time,
        child_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.runs_root = runs_root
        self.readonly = readonly
        self.clock = clock
        self.child_env = child_env  # environment of launched trainers (None: inherit ours)
        self.run_dir: Path | None = attach
        self._sampler_fn = (sampler or _default_sampler) if sample_system else None
        self._sampler: SystemSampler | None = None

    def on_mount(self) -> None:
        if self._sampler_fn is not None:
            self._sampler = SystemSampler(self, self._sampler_fn)
            self.set_timer(0.5, self._sampler.start)  # after the first paint
        if self.run_dir is not None:
            self.switch_mode("dashboard")
        elif runs.list_runs(self.runs_root):
            self.switch_mode("runs")
        else:
            self.switch_mode("picker")

    def on_unmount(self) -> None:
        if self._sampler is not None:
            self._sampler.close()

    def on_system_sampled(self, msg) -> None:
        # Forward to the dashboard (the one consumer), if it exists.
        stack = self.get_screen_stack("dashboard") if "dashboard" in self._screen_stacks else []
        if stack:
            stack[0].post_message(type(msg)(msg.sample))

    def set_sampling(self, on: bool) -> None:
        """The app samples NVML itself only while no live run reports its own `system` events."""
        if self._sampler is not None:
            self._sampler.active.set() if on else self._sampler.active.clear()

    def attach(self, run_dir: Path, force: bool = False) -> None:
        self.run_dir = run_dir
        dash = self._screen_stacks.get("dashboard")
        if dash and (force or dash[0].run_dir != run_dir):
            dash[0].attach(run_dir)
        self.switch_mode("dashboard")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_mode" and parameters == ("picker",) and self.readonly:
            return False
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return False
        return True

    def action_help(self) -> None:
        """Help from the BINDINGS of the current screen and the app, with what applies right now."""
        screen = self.screen
        rows = []
        for node in (screen, self):
            for binding in node.BINDINGS:
                assert isinstance(binding, Binding)  # we declare every key as a Binding
                name, _, rest = binding.action.partition("(")
                params = tuple(p.strip("'\" )") for p in rest.split(",") if p.strip("'\" )"))
                rows.append(
                    (
                        self.get_key_display(binding),
                        binding.description or name,
                        node.check_action(name, params) is True,
                    )
                )
        self.push_screen(HelpScreen(type(screen).__name__.removesuffix("Screen"), rows))


_sysmon: Any = None


def _default_sampler() -> dict[str, Any]:
    """This machine's NVML + host sample, the same fields a trainer's `system` events carry (NVML is
    initialised on the first call, in the sampler thread, not at start-up)."""
    global _sysmon
    if _sysmon is None:
        from hrm.run.sysmon import SystemSampler as Sysmon

        _sysmon = Sysmon()
    return _sysmon.sample_once()
