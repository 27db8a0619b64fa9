"""The app: app-wide objects (runs root, system sampler, clock, the attached run), modes, app-wide keys.

Screens use the app only through `hrm_tui.host.AppHost`; the attached run lives in one place, the
`attached_run` reactive, which the dashboard watches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from hrm_tui import lastrun, runs
from hrm_tui.cuda import cuda_missing
from hrm_tui.messages import SystemSampled
from hrm_tui.screens import DashboardScreen, HelpScreen, PickerScreen, RunsScreen
from hrm_tui.watch import SystemSampler

_LIVE_TTL_S = 1.0  # how long a liveness answer for the footer's quit label is reused


class HrmApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "hrm-tui"
    ENABLE_COMMAND_PALETTE = False  # every command is a key in the footer; keep it for them
    MODES = {"dashboard": DashboardScreen, "runs": RunsScreen, "picker": PickerScreen}
    BINDINGS = [
        Binding("r", "switch_mode('runs')", "Runs"),
        Binding("n", "switch_mode('picker')", "New run"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("q", "quit_detached", "Quit (the run continues)"),
    ]

    # Always update: attaching to the run already shown after a resume replays it from the start.
    attached_run: reactive[Path | None] = reactive(None, always_update=True, init=False)

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
        cuda_probe: Callable[[], str | None] = cuda_missing,
        last_run_file: Path | None = None,
    ) -> None:
        """`last_run_file`: where the app remembers the run it shows, to re-attach on the next start
        (the command line passes lastrun.default_path(); None remembers nothing)."""
        super().__init__()
        self.runs_root = runs_root
        self.readonly = readonly
        self.clock = clock
        self.child_env = child_env
        self._first_run = attach
        self._cuda_probe = cuda_probe
        self._cuda_answer: tuple[str | None] | None = None
        self._last_run_file = last_run_file
        self._live_cache: tuple[float, Path | None, bool] = (0.0, None, False)
        self._sampler_fn = (sampler or _default_sampler) if sample_system else None
        self._sampler: SystemSampler | None = None

    def on_mount(self) -> None:
        if self._sampler_fn is not None:
            self._sampler = SystemSampler(self, self._sampler_fn)
            self.set_timer(0.5, self._sampler.start)  # after the first paint
        first = self._first_run or self._recalled_live_run()
        if first is not None:
            self.attach(first)
        elif runs.has_runs(self.runs_root):
            self.switch_mode("runs")
        else:
            self.switch_mode("picker")

    def _recalled_live_run(self) -> Path | None:
        """The run the app showed last time under this runs root, when its trainer still lives."""
        if self._last_run_file is None:
            return None
        run = lastrun.recall(self._last_run_file, self.runs_root)
        return run if run is not None and runs.trainer_alive(run) else None

    def on_unmount(self) -> None:
        if self._sampler is not None:
            self._sampler.close()

    # ---- the AppHost interface (hrm_tui.host) ---------------------------------------------------
    def attach(self, run_dir: Path, *, reload: bool = False) -> None:
        if reload or run_dir != self.attached_run:
            self.attached_run = run_dir
        if self._last_run_file is not None:
            lastrun.remember(self._last_run_file, self.runs_root, run_dir)
        self.switch_mode("dashboard")

    def forget(self, run_dir: Path) -> None:
        if self.attached_run == run_dir:
            self.attached_run = None
            if self._last_run_file is not None:
                lastrun.remember(self._last_run_file, self.runs_root, None)

    def back(self) -> None:
        if self.attached_run is not None:
            self.switch_mode("dashboard")
        else:
            self.switch_mode("picker" if self.current_mode == "runs" else "runs")

    def cuda_missing(self) -> str | None:
        if self._cuda_answer is None:
            self._cuda_answer = (self._cuda_probe(),)
        return self._cuda_answer[0]

    def set_sampling(self, on: bool) -> None:
        if self._sampler is not None:
            self._sampler.active.set() if on else self._sampler.active.clear()

    # ---- app-wide messages and keys -------------------------------------------------------------
    def on_system_sampled(self, msg: SystemSampled) -> None:
        # The dashboard is the one consumer; it exists once its mode has been opened.
        try:
            stack = self.get_screen_stack("dashboard")
        except KeyError:
            return
        if stack:
            stack[0].post_message(SystemSampled(msg.sample))

    def _attached_live(self) -> bool:
        t, run, alive = self._live_cache
        now = time.monotonic()
        if run != self.attached_run or now - t > _LIVE_TTL_S:
            alive = self.attached_run is not None and runs.trainer_alive(self.attached_run)
            self._live_cache = (now, self.attached_run, alive)
        return alive

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_mode" and parameters == ("picker",) and self.readonly:
            return False
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return False
        if action in ("quit", "quit_detached"):  # one `q`, labelled by whether a run goes on
            return self._attached_live() == (action == "quit_detached")
        return True

    def action_quit_detached(self) -> None:
        self.exit()

    def action_help(self) -> None:
        """Help from the BINDINGS of the current screen and the app, with what applies right now. Of
        several bindings of one key, only those that apply are listed when any does."""
        screen = self.screen
        rows = []
        for node in (screen, self):
            entries = []
            for binding in node.BINDINGS:
                assert isinstance(binding, Binding)  # we declare every key as a Binding
                if not binding.description:
                    continue  # a key's fallback that only explains why the real action is not offered
                name, _, rest = binding.action.partition("(")
                params = tuple(p.strip("'\" )") for p in rest.split(",") if p.strip("'\" )"))
                entries.append((binding, node.check_action(name, params) is True))
            enabled_keys = {b.key for b, on in entries if on}
            for binding, on in entries:
                if on or binding.key not in enabled_keys:
                    rows.append((self.get_key_display(binding), binding.description, on))
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
