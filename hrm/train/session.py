"""A training session: one trainer process's run, built in one place (`Session.open`) and torn down
by `close` whatever happened.

Rank 0 owns the run directory (the lock, config.yaml, events.jsonl, state.json, control.sock, the
system sampler, checkpoints: `RunRecord` and `RunCheckpoints`). Other ranks hold the same parts
(`Parts`: model, optimizers, loader) and take part in every collective. The session holds the live
step, so status and system events carry it whoever writes them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrm.run.ckpt_index import checkpoints_dir
from hrm.run.config import Config
from hrm.run.layout import COMMANDS, QUERIES
from hrm.train import distributed as D
from hrm.train import resume as R
from hrm.train.checkpoint import mark_branch_point
from hrm.train.ckpt_io import RunCheckpoints
from hrm.train.parts import Parts, build_parts
from hrm.train.record import RunRecord
from hrm.train.steering import Steering

if TYPE_CHECKING:
    from hrm.data.loader import TrainLoader
    from hrm.data.prefetch import PrefetchLoader
    from hrm.model.hrm_act import Carry
    from hrm.model.losses import ACTLossHead
    from hrm.optim.container import OptimizerSet
    from hrm.run.control import ControlServer
    from hrm.run.sysmon import SystemSampler

log = logging.getLogger(__name__)


class Session:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        env: D.DistEnv,
        record: RunRecord,
        parts: Parts,
        start: R.StartPoint,
        stop_at_step: int | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.record, self.parts, self.start = record, parts, start
        self.step = start.step  # the live step: the trainer advances it
        self.carry: Carry | None = start.carry
        self.stop_at_step = stop_at_step
        self.ckpts = RunCheckpoints(cfg, self.run_dir, env, parts, record)
        self.steering = Steering(env.rank, device=env.device)
        self.server: ControlServer | None = None
        self.sampler: SystemSampler | None = None

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls, cfg: Config, run_dir: Path, env: D.DistEnv, resume: str | None = None, stop_at_step: int | None = None
    ) -> Session:
        """Claim the directory, verify the start point, build the parts and load the start into
        them — all before the first write to the directory — then record the start."""
        record = RunRecord(cfg, Path(run_dir), env.is_main)
        D.watch_reports_to(env, lambda msg: record.status("failed", 0, msg, error=msg), lambda: 0)
        try:
            record.claim()
            chosen = R.choose_start(cfg, Path(run_dir), resume)
            parts = build_parts(
                cfg, env, lambda state, reason=None, **f: record.status(state, 0, reason, **f), record.event
            )
            start = R.apply_start(cfg, Path(run_dir), env, parts, chosen, resume)
            record.open(start.step, parts.total_steps)
            own = checkpoints_dir(run_dir)
            if env.is_main and chosen is not None and chosen.full and chosen.path.parent.resolve() == own.resolve():
                mark_branch_point(own, chosen.path.name)  # `--resume latest` goes on from here from now on
        except BaseException as e:
            if record.opened:  # a start that failed after it began to write says so
                msg = _describe(env, e)
                record.status("failed", 0, msg, error=msg)
            record.close()
            raise
        s = cls(cfg, Path(run_dir), env, record, parts, start, stop_at_step)
        D.watch_reports_to(env, lambda msg: s.status("failed", msg, error=msg), s.current_step)
        try:
            s.status("starting")
            for note in start.notes:
                s.log_event(note.level, note.message)
            s._open_control()
            s._write_run_event()
            s._start_sampler()
        except BaseException as e:
            s.fail(e)
            s.close()
            raise
        return s

    # Component views the trainer and the benches use.
    @property
    def head(self) -> ACTLossHead:
        return self.parts.head

    @property
    def optim(self) -> OptimizerSet:
        return self.parts.optim

    @property
    def loader(self) -> TrainLoader | PrefetchLoader:
        return self.parts.loader

    @property
    def total_steps(self) -> int:
        return self.parts.total_steps

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def last_checkpoint(self) -> str | None:
        return self.ckpts.last

    def _open_control(self) -> None:
        if self.env.is_main:
            from hrm.run.control import ControlServer

            self.server = ControlServer(self.run_dir, commands=COMMANDS + QUERIES)
            self.steering = Steering(0, self.server, status_fn=self._status_fields, device=self.env.device)
        self.steering.install_signals()

    def _status_fields(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "live": True,
            "step": self.step,
            "total_steps": self.total_steps,
            "checkpoint": self.last_checkpoint,
            "message": self.state,
        }

    def _write_run_event(self) -> None:
        d = self.parts.data
        devices = (
            [str(self.env.device)]
            if not self.env.is_distributed
            else [f"rank{r}:{h}" for r, (h, _pid) in enumerate(self.env.peers)]
        )
        from hrm.train.build import count_params

        self.event(
            "run",
            self.start.step,
            config=self.cfg.to_dict(),
            task=d.task,
            grid=d.grid,
            vocab_size=d.vocab_size,
            num_params=count_params(self.head),
            devices=devices,
            world_size=self.env.world_size,
            total_steps=self.total_steps,
            resumed_from=self.start.resumed_from,
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
            lambda fields: self.event("system", self.step, **dict(fields)), **sampler_options(self.env)
        )
        self.sampler.start()

    def current_step(self) -> int:
        return self.step

    # --- events --------------------------------------------------------------------------------
    def event(self, kind: str, step: int, **fields: Any) -> None:
        self.record.event(kind, step, **fields)

    def status(self, state: str, reason: str | None = None, **fields: Any) -> None:
        self.record.status(state, self.step, reason, **fields)

    def log_event(self, level: str, message: str) -> None:
        getattr(log, level if level in ("info", "warning", "error") else "info")(message)
        self.event("log", self.step, level=level, message=message)

    def events_tick(self) -> None:
        self.record.at_step(self.step)

    def loader_epoch(self) -> float:
        return self.parts.epoch()

    # --- checkpoints -----------------------------------------------------------------------------
    def write_checkpoint(self, step: int, carry: Carry | None, metrics: dict[str, Any], wait: bool) -> str | None:
        """Collective: every rank gathers carry and RNG; rank 0 writes in the background."""
        return self.ckpts.write(step, carry, metrics, wait)

    def wait_writes(self) -> None:
        self.ckpts.wait()

    # --- endings ----------------------------------------------------------------------------------
    def finish(self, state: str, reason: str) -> None:
        self.ckpts.wait()
        self.status(state, reason, **({"error": reason} if state == "failed" else {}))

    def fail(self, exc: BaseException) -> None:
        """Record a failure as a `failed` status naming the cause (a dead rank when that is it).
        The traceback goes to trainer.log (and to stderr only with --debug)."""
        msg = _describe(self.env, exc)
        log.error("run failed: %s", msg, exc_info=exc)
        if not self.env.is_main and self.env.is_distributed and 0 in D.dead_ranks(self.env):
            # rank 0 is gone: the lowest live rank on its host records why the run ended.
            live = [r for r in range(self.env.world_size) if r not in D.dead_ranks(self.env)]
            if live and live[0] == self.env.rank:
                self.record.adopt()
        self.status("failed", reason=msg, error=msg)

    def close(self) -> None:
        self.steering.restore_signals()
        if self.sampler is not None:
            try:
                self.sampler.stop()
            except Exception as e:
                log.warning("stopping the system sampler: %s", e)
        self.ckpts.close()
        from hrm.data.prefetch import PrefetchLoader

        if isinstance(self.parts.loader, PrefetchLoader):
            self.parts.loader.close()  # its thread stops; nothing is left reading ahead
        if self.server is not None:
            self.server.close()
        self.record.close()


def _describe(env: D.DistEnv, exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted during start-up"
    if env.is_distributed:
        return D.describe_failure(env, exc)
    return f"{type(exc).__name__}: {exc}"
