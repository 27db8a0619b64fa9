"""The dashboard: one attached run, rebuilt from its events file, steered by keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from hrm_tui.host import AppHost, host
from hrm_tui.messages import CommandDone, EventsRead, Liveness, SystemSampled
from hrm_tui.runs import derive_status
from hrm_tui.runstate import LIVE_STATES, RunState
from hrm_tui.screens.confirm import ConfirmScreen
from hrm_tui.watch import RunWatcher
from hrm_tui.widgets import ActPanel, DeathNote, GpuPanel, LogPanel, MetricPlot, PuzzleView, RunHeader
from hrm_tui.widgets.plot import WINDOWS

REDRAW_S = 0.5  # at most 2 redraws per second, however fast events arrive
PLOT_REDRAW_S = 1.0  # plots (the costliest panels) at most once a second
CONTROL_ACTIONS = {"pause", "resume", "checkpoint", "evaluate", "stop"}


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("c", "checkpoint", "Checkpoint"),
        Binding("e", "evaluate", "Eval"),
        Binding("s", "stop", "Stop"),
        Binding("w", "window", "Window"),
        Binding("left", "sample(-1)", "Prev sample", show=False),
        Binding("right", "sample(1)", "Next sample", show=False),
    ]

    status = reactive("none", bindings=True)  # derived: last status + whether the trainer lives
    compact = reactive(False)

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None
        self.state: RunState | None = None
        self.alive = False
        self.window = 0
        self.sample_index = 0
        self._watcher: RunWatcher | None = None
        self._log_tail: list[str] = []
        self._pending: set[str] = set()
        self._run_system_at = 0.0  # monotonic time of the last live `system` event from the run
        self._app_sampled = False  # the GPU panel shows the app's own sample, not the run's
        self._plots_at = 0.0  # monotonic time of the last plot redraw
        self._plots_due = False  # plot changes held back by PLOT_REDRAW_S

    @property
    def hrm(self) -> AppHost:
        return host(self)

    # ---- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        self.set_reactive(DashboardScreen.compact, self._wants_compact())
        self.set_class(self.compact, "-compact")
        yield RunHeader(self.hrm.clock, id="header")
        if self.compact:
            yield MetricPlot(
                "Loss", [("loss", "train", "$accent")], [("loss", "eval", "$primary-lighten-2")], log_y=True, id="loss"
            )
            yield MetricPlot(
                "Accuracy",
                [("accuracy", "cell", "$accent"), ("exact_accuracy", "exact", "$success")],
                [("exact_accuracy", "eval exact", "$primary-lighten-2")],
                y_range=(0.0, 1.0),
                id="acc",
            )
            yield DeathNote(id="death")
            with TabbedContent(id="tabs"):
                with TabPane("ACT", id="tab-act"):
                    yield ActPanel(id="act")
                with TabPane("GPU", id="tab-gpu"):
                    yield VerticalScroll(GpuPanel(id="gpu"))
                with TabPane("Sample", id="tab-sample"):
                    yield VerticalScroll(PuzzleView(id="puzzle"))
                with TabPane("Log", id="tab-log"):
                    yield LogPanel(id="log")
        else:
            with Horizontal(id="plots"):
                yield MetricPlot(
                    "Loss",
                    [("loss", "train", "$accent")],
                    [("loss", "eval", "$primary-lighten-2")],
                    log_y=True,
                    id="loss",
                )
                yield MetricPlot(
                    "Accuracy",
                    [("accuracy", "cell", "$accent"), ("exact_accuracy", "exact", "$success")],
                    [("exact_accuracy", "eval exact", "$primary-lighten-2")],
                    y_range=(0.0, 1.0),
                    id="acc",
                )
            yield DeathNote(id="death")
            with Horizontal(id="side"):
                with Vertical(id="act-box", classes="box"):
                    yield ActPanel(id="act")
                yield VerticalScroll(GpuPanel(id="gpu"), id="gpu-box", classes="box")
                yield VerticalScroll(PuzzleView(id="puzzle"), id="puzzle-box", classes="box")
            yield LogPanel(id="log", classes="box")
        yield Footer()

    def on_mount(self) -> None:
        self._set_titles()
        self.set_interval(REDRAW_S, self._flush)
        self._render_all()
        self.watch(self.app, "attached_run", self._attached_run_changed)  # held once, by the app

    def _wants_compact(self) -> bool:
        w, h = self.app.size
        return w < 110 or h < 34

    async def on_resize(self) -> None:
        if self._wants_compact() != self.compact:
            self.compact = not self.compact
            await self.recompose()
            self._set_titles()
            self._render_all()

    def _set_titles(self) -> None:
        titles = {"#act-box": "ACT halting", "#gpu-box": "GPU · host", "#log": "Log"}
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
            self._pending.add("all")
        else:
            self.state.apply(msg.events)
            if any(e.get("kind") == "system" for e in msg.events):
                self._run_system_at = time.monotonic()
                self._app_sampled = False
            self._pending |= self.state.take_changes()
        self._update_status()

    def on_liveness(self, msg: Liveness) -> None:
        if msg.run_dir != self.run_dir:
            return
        self.alive, self._log_tail = msg.alive, msg.log_tail
        self.hrm.set_sampling(not msg.alive)
        self._update_status()
        self._pending |= {"header", "death"}

    def on_system_sampled(self, msg: SystemSampled) -> None:
        # The app's own sample matters only when the run is not reporting one itself.
        if self.state is None or (self.alive and time.monotonic() - self._run_system_at < 10):
            return
        self.state.push_system(msg.sample)
        self._app_sampled = True
        self._pending.add("system")

    def on_command_done(self, msg: CommandDone) -> None:
        reply = msg.reply
        ok = bool(reply.get("ok"))
        text = reply.get("message") or (
            f"{msg.cmd}: done at step {reply.get('step')}"
            if ok
            else f"{msg.cmd} failed: {reply.get('error', 'no reply')}"
        )
        if self.state is not None and msg.run_dir == self.run_dir:
            self.state.add_log(self.hrm.clock(), "command" if ok else "error", f"[{msg.cmd}] {text}")
            self._pending.add("log")
        self.notify(text, title=msg.cmd, severity="information" if ok else "error")

    def _update_status(self) -> None:
        if self.state is None:
            self.status = "none"
            return
        self.status = derive_status(
            self.state.status, self.alive, has_events=self.state.events_seen > 0, has_log=bool(self._log_tail)
        )

    # ---- drawing (batched: at most every REDRAW_S) -------------------------------------------
    def _flush(self) -> None:
        if self.state is not None:
            self._pending |= self.state.take_changes()
        if self.alive:
            self._pending.add("header")  # elapsed time moves on
        now = time.monotonic()
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
                plot.show(s, self.window)
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
        task = str(s.run.get("task") or (s.run.get("config") or {}).get("data", {}).get("task") or "sudoku")
        caption = f"Eval sample {self.sample_index + 1}/{len(samples)}  [←/→] · step {s.latest_eval.get('step', 0):,}"
        view.show(task, s.run.get("grid"), samples[self.sample_index], caption)

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
        if action in ("window", "sample"):
            return self.state is not None
        return True

    def action_pause(self) -> None:
        self.send("pause")

    def action_resume(self) -> None:
        self.send("resume")

    def action_checkpoint(self) -> None:
        self.send("checkpoint")

    def action_evaluate(self) -> None:
        self.send("eval")

    @work(exclusive=True, group="confirm")
    async def action_stop(self) -> None:
        question = f"Stop {self.run_dir.name if self.run_dir else 'the run'}? It checkpoints first, then exits."
        if await self.app.push_screen_wait(ConfirmScreen(question, yes="Stop the run")):
            self.send("stop")

    def action_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self._redraw({"plots"})

    def action_sample(self, delta: int) -> None:
        self.sample_index += delta
        self._redraw({"puzzle"})

    def send(self, cmd: str) -> None:
        if self.run_dir is not None:
            self._send_worker(self.run_dir, cmd)

    @work(thread=True, group="control")
    def _send_worker(self, run_dir: Path, cmd: str) -> None:
        reply: dict[str, Any]
        try:
            from hrm.run.control import send_command

            reply = send_command(run_dir, cmd, timeout=30.0)
        except Exception as exc:  # socket gone, timeout, trainer died: show it, never crash
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.post_message(CommandDone(run_dir, cmd, reply))
