"""A training session: the run directory's lifecycle around one trainer process.

Rank 0 owns the run directory: trainer.pid (refusing a second live trainer), events.jsonl,
control.sock, the system sampler and checkpoints. Other ranks hold the same model, optimizers,
loader and carry, and take part in every collective. `Session.open` builds each component in its
own function; `close` tears them down whatever happened."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hrm.run.layout import COMMANDS as LAYOUT_COMMANDS
from hrm.run.layout import QUERIES, checkpoints_dir, events_path
from hrm.train import build as B
from hrm.train import distributed as D
from hrm.train import resume as R
from hrm.train.fit import check_memory
from hrm.train.steering import Steering

log = logging.getLogger(__name__)


class Session:
    def __init__(self, cfg: Any, run_dir: Path, env: D.DistEnv) -> None:
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.events = None
        self.server = None
        self.sampler = None
        self.writer = None
        self.sinks: list[Any] = []
        self.steering = Steering(env.rank, device=env.device)
        self.start_step = 0
        self.carry: Any = None
        self.stop_at_step: int | None = None
        self.last_checkpoint: str | None = None
        self.resumed_from: str | None = None
        self.state = "starting"
        self._pid_held = False

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls, cfg: Any, run_dir: Path, env: D.DistEnv, resume: str | None = None, stop_at_step: int | None = None
    ) -> Session:
        s = cls(cfg, run_dir, env)
        s.stop_at_step = stop_at_step
        try:
            s._open_run_dir()
            D.watch_reports_to(env, lambda msg: s.status("failed", error=msg), s.current_step)
            s.status("starting")
            s.data = B.prepare_dataset(cfg, env, s.status, s.event)
            s.total_steps = B.total_steps(cfg, s.data)
            s.mcfg = B.model_config(cfg, s.data, env)
            check_memory(cfg, s.mcfg, env.device, env.world_size)
            s.head = B.build_head(cfg, s.data, env)
            s.train_forward = B.train_forward(cfg, s.head)
            s.optim = B.build_optimizers(cfg, s.head, s.total_steps, env)
            s.loader = B.build_loader(cfg, s.data, env)
            R.apply_start_point(s, resume)
            s._open_control()
            s._write_run_event()
            s._start_sampler()
        except BaseException as e:
            s.fail(e)
            s.close()
            raise
        return s

    def _open_run_dir(self) -> None:
        if not self.env.is_main:
            return
        from hrm.run.events import EventWriter
        from hrm.run.lock import acquire

        self.run_dir.mkdir(parents=True, exist_ok=True)
        acquire(self.run_dir)
        self._pid_held = True
        checkpoints_dir(self.run_dir).mkdir(exist_ok=True)
        self.events = EventWriter(events_path(self.run_dir))
        if self.cfg.sinks.tensorboard or self.cfg.sinks.wandb:
            from hrm.train.sinks import build_sinks

            self.sinks = [
                build_sinks(self.cfg.sinks, self.run_dir, run_name=self.cfg.run.name, task=self.cfg.data.task)
            ]
        from hrm.progress import TrainProgress

        self.sinks.append(TrainProgress())  # progress lines on stderr (trainer.log when launched by the app)

    def _open_control(self) -> None:
        if self.env.is_main:
            from hrm.run.control import ControlServer

            self.server = ControlServer(self.run_dir, commands=LAYOUT_COMMANDS + QUERIES)
            self.steering = Steering(0, self.server, status_fn=self._status_fields, device=self.env.device)
        self.steering.install_signals()

    def _status_fields(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "step": self.current_step(),
            "total_steps": self.total_steps,
            "checkpoint": self.last_checkpoint,
            "message": self.state,
        }

    def _write_run_event(self) -> None:
        d = self.data
        devices = (
            [str(self.env.device)]
            if not self.env.is_distributed
            else [f"rank{r}:{h}" for r, (h, _pid) in enumerate(self.env.peers)]
        )
        self.event(
            "run",
            self.start_step,
            config=self.cfg.to_dict(),
            task=d.task,
            grid=d.grid,
            vocab_size=d.vocab_size,
            num_params=B.count_params(self.head),
            devices=devices,
            world_size=self.env.world_size,
            total_steps=self.total_steps,
            resumed_from=self.resumed_from,
            dataset={"path": str(d.root), "train_examples": d.train_examples, "test_examples": d.test_examples},
        )

    def _start_sampler(self) -> None:
        if not self.env.is_main:
            return
        try:
            from hrm.run.sysmon import SystemSampler
        except ImportError as e:
            log.warning("system sampler unavailable: %s", e)
            return
        from hrm.train.devices import sampler_options

        self.sampler = SystemSampler(
            lambda fields: self.event("system", self.current_step(), **dict(fields)), **sampler_options(self.env)
        )
        self.sampler.start()

    def current_step(self) -> int:
        return getattr(self, "_step_ref", lambda: self.start_step)()

    # --- events --------------------------------------------------------------------------------
    def event(self, kind: str, step: int, **fields: Any) -> None:
        if self.events is None:
            return
        ev = self.events.write(kind, step, **fields)
        for sink in self.sinks:  # TensorBoard / W&B mirrors (rank 0 only)
            sink.log_event(ev)

    def status(self, state: str, **fields: Any) -> None:
        self.state = state
        self.event("status", self.current_step(), state=state, **fields)

    def log_event(self, level: str, message: str) -> None:
        getattr(log, level if level in ("info", "warning", "error") else "info")(message)
        self.event("log", self.current_step(), level=level, message=message)

    def events_tick(self) -> None:
        if self.events is not None:
            self.events.maybe_flush()

    def loader_epoch(self) -> float:
        return float(getattr(self.loader, "epoch", 0.0))

    # --- checkpoints -----------------------------------------------------------------------------
    def write_checkpoint(self, step: int, carry: Any, metrics: dict[str, Any], wait: bool) -> str | None:
        """Collective: every rank gathers carry and RNG; rank 0 writes in the background."""
        return R.write_checkpoint(self, step, carry, metrics, wait)

    def wait_writes(self) -> None:
        R.wait_writes(self)

    # --- endings ----------------------------------------------------------------------------------
    def finish(self, state: str, reason: str, step: int) -> None:
        if R.pending_writes(self):
            R.wait_writes(self)
        fields = {"reason": reason} if state != "failed" else {"error": reason}
        self.status(state, **fields)

    def fail(self, exc: BaseException) -> None:
        """Record a failure as a `failed` status naming the cause (a dead rank when that is it)."""
        if isinstance(exc, KeyboardInterrupt):
            msg = "interrupted during start-up"
        elif self.env.is_distributed:
            msg = D.describe_failure(self.env, exc)
        else:
            msg = f"{type(exc).__name__}: {exc}"
        log.error("run failed: %s\n%s", msg, "".join(traceback.format_exception(exc)))
        if self.events is None and self.env.is_distributed and 0 in D.dead_ranks(self.env):
            # rank 0 is gone: the lowest live rank on its host records why the run ended.
            self._adopt_events()
        try:
            self.status("failed", error=msg)
        except Exception as e:  # the events file itself may be the problem
            log.error("could not write the failed status: %s", e)

    def _adopt_events(self) -> None:
        from hrm.run.events import EventWriter

        live = [r for r in range(self.env.world_size) if r not in D.dead_ranks(self.env)]
        if live and live[0] == self.env.rank and events_path(self.run_dir).is_file():
            self.events = EventWriter(events_path(self.run_dir))
        if self.cfg.sinks.tensorboard or self.cfg.sinks.wandb:
            from hrm.train.sinks import build_sinks

            self.sinks = [
                build_sinks(self.cfg.sinks, self.run_dir, run_name=self.cfg.run.name, task=self.cfg.data.task)
            ]

    def close(self) -> None:
        self.steering.restore_signals()
        for name in ("sampler",):
            obj = getattr(self, name)
            if obj is not None:
                try:
                    obj.stop()
                except Exception as e:
                    log.warning("stopping %s: %s", name, e)
        if self.writer is not None:
            R.close_writer(self)
        if self.server is not None:
            self.server.close()
        for sink in self.sinks:
            sink.close()
        if self.events is not None:
            self.events.close()
            self.events = None
        if self._pid_held:
            from hrm.run.lock import release

            release(self.run_dir)
            self._pid_held = False
