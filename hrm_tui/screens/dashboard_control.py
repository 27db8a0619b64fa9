"""The dashboard's side effects on the world: control commands to the trainer, and alerts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.screen import Screen

from hrm_tui.alerts import Alert, osc_notification
from hrm_tui.host import AppHost, host
from hrm_tui.messages import CommandDone
from hrm_tui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from hrm_tui.runstate import RunState


class ControlMixin(Screen):
    """Keys that send commands (p, c, e, s), the replies, and how an alert is raised."""

    run_dir: Path | None
    state: RunState | None
    desktop_alerts: bool
    _pending: set[str]

    @property
    def hrm(self) -> AppHost:
        return host(self)

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

    def _raise(self, alerts: list[Alert]) -> None:
        """A notification, the bell, a line in the log, and (when enabled) a desktop notification."""
        for alert in alerts:
            self.notify(alert.message, title=alert.title, severity=alert.severity, timeout=10)  # type: ignore[arg-type]
            self.app.bell()
            if self.state is not None:
                level = "error" if alert.severity == "error" else "warning"
                self.state.add_log(self.hrm.clock(), level, f"alert: {alert.title} · {alert.message}")
            driver = self.app._driver
            if self.desktop_alerts and driver is not None:
                driver.write(osc_notification(alert.title, alert.message))

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
