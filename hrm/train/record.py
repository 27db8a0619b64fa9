"""What a trainer writes about its run (rank 0): the lock, config.yaml, events.jsonl, state.json and
the optional metric sinks, with the state and the step they report.

Nothing is written until the first event: a session validates its start point (a checkpoint to
resume, the model it must fit) first, so a refused start leaves the directory as it was (the lock
file excepted, which goes with the process). A full disk must not leave `running` as the run's
last word: a small reserve file is kept beside events.jsonl and given up to write the last status."""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Any

from hrm.run.config import Config, save_config
from hrm.run.events import EventWriter
from hrm.run.layout import checkpoints_dir, config_path, events_path
from hrm.run.status import StateFile
from hrm.train.sinks import MetricSink, build_sinks

log = logging.getLogger(__name__)

RESERVE_NAME = ".reserve"  # hidden, in the run directory: space held back for the final status
_RESERVE_BYTES = 64 * 1024


class RunRecord:
    """The run directory as rank 0 writes it; on other ranks every method is a no-op."""

    def __init__(self, cfg: Config, run_dir: Path, is_main: bool) -> None:
        self.cfg, self.run_dir, self.is_main = cfg, Path(run_dir), is_main
        self.state = "starting"
        self.total_steps: int | None = None
        self.error: str | None = None  # set once events.jsonl could not be written
        self._events: EventWriter | None = None
        self._statefile: StateFile | None = None
        self._sinks: list[MetricSink] = []
        self._locked = False

    # --- claiming and opening ------------------------------------------------------------------
    def claim(self) -> None:
        """Take the run's lock (refuses a second live trainer). Writes nothing else."""
        if not self.is_main:
            return
        from hrm.run.lock import acquire

        self.run_dir.mkdir(parents=True, exist_ok=True)
        acquire(self.run_dir)
        self._locked = True

    @property
    def opened(self) -> bool:
        return self._events is not None

    def open(self, step: int = 0, total_steps: int | None = None) -> None:
        """config.yaml (the run's current truth, overrides included), checkpoints/, events.jsonl,
        state.json and the sinks. Called by the first write; idempotent."""
        if total_steps is not None:
            self.total_steps = total_steps
        if not self.is_main or self._events is not None:
            return
        save_config(self.cfg, config_path(self.run_dir))
        checkpoints_dir(self.run_dir).mkdir(exist_ok=True)
        self._hold_reserve()
        self._events = EventWriter(events_path(self.run_dir))
        self._statefile = StateFile(self.run_dir, total_steps=self.total_steps, step=step)
        if self.cfg.sinks.tensorboard or self.cfg.sinks.wandb:
            self._sinks = [
                build_sinks(self.cfg.sinks, self.run_dir, run_name=self.cfg.run.name, task=self.cfg.data.task)
            ]
        from hrm.progress import TrainProgress

        self._sinks.append(TrainProgress())  # progress lines on stderr (trainer.log when launched by the app)

    def _hold_reserve(self) -> None:
        path = self.run_dir / RESERVE_NAME
        with contextlib.suppress(OSError):
            if not path.is_file() or path.stat().st_size < _RESERVE_BYTES:
                with open(path, "wb") as f:
                    f.write(b"\0" * _RESERVE_BYTES)

    def _release_reserve(self) -> bool:
        try:
            (self.run_dir / RESERVE_NAME).unlink()
            return True
        except OSError:
            return False

    # --- writing -------------------------------------------------------------------------------
    def event(self, kind: str, step: int, **fields: Any) -> dict[str, Any] | None:
        if not self.is_main or self.error is not None and kind != "status":
            return None
        self.open(step)
        assert self._events is not None
        try:
            ev = self._events.write(kind, step, **fields)
        except OSError as e:
            return self._write_failed(e, kind, step, fields)
        for sink in self._sinks:  # TensorBoard / W&B mirrors
            sink.log_event(ev)
        return ev

    def _write_failed(self, e: OSError, kind: str, step: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        where = events_path(self.run_dir)
        first = self.error is None
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            self.error = f"no space left on device writing {where}; free some space, then continue with --resume latest"
        else:
            self.error = f"could not write {where}: {e.strerror or e}"
        if first:
            log.error("%s", self.error)
        if kind == "status" and self._release_reserve():  # the run's last word must reach the disk
            assert self._events is not None
            with contextlib.suppress(OSError):
                return self._events.write(kind, step, **fields)
        return None

    def status(self, state: str, step: int, reason: str | None = None, **fields: Any) -> None:
        """A status event (with the total steps) and state.json, both at once."""
        self.state = state
        extra = {"reason": reason} if reason is not None else {}
        self.event("status", step, state=state, total_steps=self.total_steps, **extra, **fields)
        if self._statefile is not None:
            self._statefile.set(state, step, reason, total_steps=self.total_steps, **_ckpt(fields))
            if self._statefile.last_error and self._release_reserve():
                self._statefile.set(state, step, reason, total_steps=self.total_steps)

    def at_step(self, step: int) -> None:
        """The step advanced: flush old train lines, refresh state.json (both throttled)."""
        if self._events is not None:
            try:
                self._events.maybe_flush()
            except OSError as e:
                self._write_failed(e, "train", step, {})
        if self._statefile is not None:
            self._statefile.at_step(step)

    def checkpoint_written(self, path: str) -> None:
        if self._statefile is not None:
            self._statefile.checkpoint = path

    def sync(self) -> None:
        """Every event so far durable (before a checkpoint that covers them becomes visible)."""
        if self._events is not None:
            self._events.sync()

    def adopt(self) -> None:
        """Become the writer of a run whose rank 0 died, to record why it ended."""
        self.is_main = True
        if events_path(self.run_dir).is_file():
            self.open()

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks = []
        if self._events is not None:
            try:
                self._events.close()
            except OSError as e:
                log.error("closing %s: %s", events_path(self.run_dir), e)
            self._events = None
        with contextlib.suppress(OSError):
            (self.run_dir / RESERVE_NAME).unlink()
        if self._locked:
            from hrm.run.lock import release

            release(self.run_dir)
            self._locked = False


def _ckpt(fields: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint": fields["checkpoint"]} if isinstance(fields.get("checkpoint"), str) else {}
