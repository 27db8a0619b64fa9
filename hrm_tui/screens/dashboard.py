"""The dashboard: one attached run, rebuilt from its events file, steered by keys."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive

from hrm.run.status import ENDED_STATES
from hrm_tui.alerts import AlertWatch
from hrm_tui.messages import EventsRead, Liveness, SystemSampled
from hrm_tui.runs import derive_status
from hrm_tui.runstate import LIVE_STATES, RunState
from hrm_tui.screens.dashboard_control import ControlMixin
from hrm_tui.screens.dashboard_keys import ViewKeysMixin
from hrm_tui.screens.dashboard_layout import COMPACT_BELOW, PANELS, compose_compact, compose_wide, panel_title
from hrm_tui.watch import RunWatcher
from hrm_tui.widgets import ActPanel, DeathNote, GpuPanel, LogPanel, MetricPlot, PuzzleView, Readout, RunHeader
from hrm_tui.widgets.plot import View
from hrm_tui.widgets.puzzle import drawing_width

REDRAW_S = 0.5  # at most 2 redraws per second, however fast events arrive
PLOT_REDRAW_S = 1.0  # plots (the costliest panels) at most once a second
CONTROL_ACTIONS = {"pause", "resume", "checkpoint", "evaluate", "stop"}
_PANEL = Binding.Group("Panel", compact=True)
_SAMPLE = Binding.Group("Sample", compact=True)
_SEGMENT = Binding.Group("Segment", compact=True)
_PLOT = Binding.Group("Plots", compact=True)
# ←/→, [ ], w, m, l are named where they act (the sample's caption, its segment strip, each plot's
# legend) and in the help; the footer keeps the panel keys, the controls and `? Help` within 80 columns.


class DashboardScreen(ViewKeysMixin, ControlMixin):
    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("c", "checkpoint", "Checkpoint"),
        Binding("e", "evaluate", "Eval"),
        Binding("s", "stop", "Stop"),
        *(Binding(key, f"panel('{pid}')", title, group=_PANEL, priority=True) for key, pid, title in PANELS),
        Binding("left", "sample(-1)", "Prev sample", group=_SAMPLE, priority=True, show=False),
        Binding("right", "sample(1)", "Next sample", group=_SAMPLE, priority=True, show=False),
        Binding("left_square_bracket", "segment(-1)", "Prev segment", group=_SEGMENT, priority=True, show=False),
        Binding("right_square_bracket", "segment(1)", "Next segment", group=_SEGMENT, priority=True, show=False),
        Binding("w", "window", "Window", group=_PLOT, show=False),
        Binding("m", "smoothing", "Smooth", group=_PLOT, show=False),
        Binding("l", "log_y", "Log y", group=_PLOT, show=False),
        Binding("a", "desktop_alerts", "Desktop alerts", show=False),  # in the help (?), not the footer
        Binding("pageup", "scroll_sample(-1)", "Scroll sample up", show=False, priority=True),
        Binding("pagedown", "scroll_sample(1)", "Scroll sample down", show=False, priority=True),
    ]

    status = reactive("none", bindings=True)  # derived: last status + whether the trainer lives
    compact = reactive(False)

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None
        self.state: RunState | None = None
        self.alive = False
        self.view = View()
        self.panel = PANELS[0][1]  # the side panel the compact layout shows
        self.desktop_alerts = False
        self.alerts: AlertWatch | None = None
        self.sample_index = 0
        self._watcher: RunWatcher | None = None
        self._log_tail: list[str] = []
        self._pending: set[str] = set()
        self._run_system_at = 0.0  # monotonic time of the last live `system` event from the run
        self._app_sampled = False  # the GPU panel shows the app's own sample, not the run's
        self._plots_at = 0.0  # monotonic time of the last plot redraw
        self._plots_due = False  # plot changes held back by PLOT_REDRAW_S
        self._replayed = False  # the full history is folded (alerts are armed after it)
        self._recorded: str | None = None  # read_status's state at the last liveness check
        self.liveness_checks = 0  # how many have arrived (tests wait on it, not on the clock)

    # ---- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        self.set_reactive(DashboardScreen.compact, self._wants_compact())
        self.set_class(self.compact, "-compact")
        if self.compact:
            yield from compose_compact(self.hrm.clock, self.panel)
        else:
            yield from compose_wide(self.hrm.clock)

    def on_mount(self) -> None:
        self._set_titles()
        self.set_interval(REDRAW_S, self._flush)
        self._render_all()
        self.watch(self.app, "attached_run", self._attached_run_changed)  # held once, by the app

    def _wants_compact(self) -> bool:
        w, h = self.app.size
        return w < COMPACT_BELOW[0] or h < COMPACT_BELOW[1]

    async def on_resize(self) -> None:
        if self._wants_compact() != self.compact:
            self.compact = not self.compact
            await self.recompose()
            self._set_titles()
            self._render_all()

    def _set_titles(self) -> None:
        if self.compact:
            self.query_one("#panel").border_title = panel_title(self.panel)
            return
        titles = {"#readout-box": "Values", "#act-box": "ACT halting", "#gpu-box": "System", "#log": "Log"}
        for sel, title in titles.items():
            for w in self.query(sel):
                w.border_title = title

    # ---- attaching ---------------------------------------------------------------------------
    def _attached_run_changed(self, run_dir: Path | None) -> None:
        if run_dir is None:
            self.detach()
            self.run_dir, self.state, self.alive = None, None, False
            self._update_status()
            self._render_all()
        else:
            self.attach(run_dir)

    def attach(self, run_dir: Path) -> None:
        self.detach()
        self.run_dir = run_dir
        self.state = RunState()
        self.alive = False
        self.sample_index = 0
        self._log_tail = []
        self._app_sampled = False
        self.alerts = AlertWatch(run_dir.name)
        self._watcher = RunWatcher(self, run_dir)
        self._watcher.start()
        self._render_all()

    def detach(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def on_unmount(self) -> None:
        self.detach()

    # ---- incoming -----------------------------------------------------------------------------
    def on_events_read(self, msg: EventsRead) -> None:
        if msg.run_dir != self.run_dir or self.state is None:
            return
        if msg.initial:
            self.state = msg.state
            self._app_sampled = False
            self._replayed = not msg.state.partial
            self._pending.add("all")
        else:
            self.state.apply(msg.events)
            if any(e.get("kind") == "system" for e in msg.events):
                self._run_system_at = time.monotonic()
                self._app_sampled = False
            self._pending |= self.state.take_changes()
            if self.alerts is not None:
                self._raise(self.alerts.on_events(msg.events, time.monotonic()))
        self._update_status()

    def on_liveness(self, msg: Liveness) -> None:
        if msg.run_dir != self.run_dir:
            return
        self.alive, self._log_tail, self._recorded = msg.alive, msg.log_tail, msg.recorded
        self.liveness_checks += 1
        self.hrm.set_sampling(not msg.alive)
        self._update_status()
        if self.alerts is not None and self._replayed and not self.alerts.armed:
            self.alerts.arm(self.status, time.monotonic())  # from here on, changes are news
        self._pending |= {"header", "death"}

    def on_system_sampled(self, msg: SystemSampled) -> None:
        # The app's own sample matters only when the run is not reporting one itself.
        if self.state is None or (self.alive and time.monotonic() - self._run_system_at < 10):
            return
        self.state.push_system(msg.sample)
        self._app_sampled = True
        self._pending.add("system")

    def _update_status(self) -> None:
        if self.state is None:
            self.status = "none"
            return
        last = self.state.status
        if last in ENDED_STATES and last != "died":
            # The trainer said it is done: that holds while it exits, unless a new trainer (a resume)
            # has taken the run over and not written its first event yet.
            self.status = "starting" if self.alive and self._recorded == "starting" else last
        else:
            self.status = derive_status(
                last, self.alive, has_events=self.state.events_seen > 0, has_log=bool(self._log_tail)
            )
        if self.alerts is not None:
            self._raise(self.alerts.on_status(self.status))

    # ---- drawing (batched: at most every REDRAW_S) -------------------------------------------
    def _flush(self) -> None:
        now = time.monotonic()
        if self.state is not None:
            self._pending |= self.state.take_changes()
        if self.alive:
            self._pending.add("header")  # elapsed time moves on
            if self.alerts is not None and self.state is not None:
                self._raise(self.alerts.check_stall(self.status, now, self.state.seconds_per_step()))
        if "plots" in self._pending and "all" not in self._pending and now - self._plots_at < PLOT_REDRAW_S:
            self._pending.discard("plots")
            self._plots_due = True
        elif self._plots_due and now - self._plots_at >= PLOT_REDRAW_S:
            self._pending.add("plots")
        if self._pending:
            pending, self._pending = self._pending, set()
            if "plots" in pending or "all" in pending:
                self._plots_at, self._plots_due = now, False
            self._redraw(pending)

    def _render_all(self) -> None:
        self._pending = set()
        self._redraw({"all"})

    def _redraw(self, what: set[str]) -> None:
        every = "all" in what
        s = self.state
        name = self.run_dir.name if self.run_dir else ""
        self.query_one(RunHeader).show(name, s, self.status)
        if every or "plots" in what:
            for plot in self.query(MetricPlot):
                plot.show(s, self.view)
        if every or "plots" in what or "header" in what:
            running, live = self.status == "running", self.status in LIVE_STATES
            self.query_one(Readout).show(s, running=running, smoothing=self.view.smoothing, live=live)
        if every or "act" in what:
            self.query_one(ActPanel).show(s)
        if every or "system" in what:
            source = (
                "this machine, sampled by the app"
                if self._app_sampled
                else ""
                if self.alive
                else "last sample recorded by the run"
            )
            self.query_one(GpuPanel).show(s, source)
        if every or "puzzle" in what:
            self._render_puzzle()
        if every or "log" in what:
            lines = list(s.log) if s is not None else []
            self.query_one(LogPanel).show(lines, s.log_total if s is not None else 0, rebuild=every)
        if every or "death" in what or "header" in what:
            self._render_death()

    def _render_puzzle(self) -> None:
        s = self.state
        samples = (s.latest_eval.get("samples") or []) if s is not None else []
        view = self.query_one(PuzzleView)
        if not samples or s is None:
            view.show("sudoku", None, None, "")
            return
        self.sample_index %= len(samples)
        task, grid, sample = s.task or "sudoku", s.run.get("grid"), samples[self.sample_index]
        caption = f"Eval sample {self.sample_index + 1}/{len(samples)} ←/→ · step {s.latest_eval.get('step', 0):,}"
        view.show(task, grid, sample, caption)
        # The sample column is as wide as its drawing (two columns a maze cell while that fits).
        box = self.query_one("#puzzle-box")
        room = self.app.size.width * (3 if self.compact else 2) // 5
        need = drawing_width(task, grid, sample) + 4
        if need > room:
            need = drawing_width(task, grid, sample, wide=False) + 4
        need = max(need, 42 if self.compact else 44)
        target = self.query_one("#panel") if self.compact else box
        if not self.compact or self.panel == "puzzle-box":
            target.styles.width = min(need, room)

    def _render_death(self) -> None:
        s = self.state
        note = self.query_one(DeathNote)
        if s is None or self.status not in ("failed", "died"):
            note.show(None, [])
            return
        if self.status == "died":
            headline = f"✗ the trainer is gone without a final status (last: {s.status})"
        else:
            headline = f"✗ failed: {s.status_error or s.status_reason or 'no reason given'}"
        note.show(headline, self._log_tail[-1:] if self.compact else self._log_tail[-8:])

    # ---- keys ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        st = self.status
        if action in CONTROL_ACTIONS and (self.hrm.readonly or not self.alive):
            return False
        if action == "pause":
            return st == "running"
        if action == "resume":
            return st == "paused"
        if action in ("checkpoint", "evaluate"):
            return st in ("running", "paused")
        if action == "stop":
            return st in LIVE_STATES and st != "stopping"
        if action == "panel":
            return self.compact  # the wide layout shows every panel
        if action in ("window", "sample", "segment", "smoothing", "log_y", "scroll_sample"):
            return self.state is not None
        return True
