"""A run's checkpoints as one component: what goes into one (hrm.train.state), the background writer
(hrm.train.checkpoint) on rank 0, and what it knows — the last checkpoint written, the step last
saved, and why a save failed.

Every step a checkpoint covers is in events.jsonl, flushed and fsynced, before the checkpoint
becomes visible (the writer calls `RunRecord.sync` between fsync and rename): a kill right after
a checkpoint never loses the train events of the steps it holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hrm.run.config import Config
from hrm.run.layout import checkpoint_path, checkpoints_dir
from hrm.train import distributed as D
from hrm.train import state as S
from hrm.train.parts import Parts
from hrm.train.record import RunRecord
from hrm.train.resume import display

if TYPE_CHECKING:
    from hrm.model.hrm_act import Carry
    from hrm.train.checkpoint import CheckpointWriter


class RunCheckpoints:
    def __init__(self, cfg: Config, run_dir: Path, env: D.DistEnv, parts: Parts, record: RunRecord) -> None:
        self.cfg, self.run_dir, self.env, self.parts, self.record = cfg, run_dir, env, parts, record
        self.last: str | None = None  # run-relative path of the newest checkpoint written
        self.saved_step = -1  # the step of that checkpoint (same on every rank)
        self._writer: CheckpointWriter | None = None

    def _writer_(self) -> CheckpointWriter:
        if self._writer is None:
            from hrm.train.checkpoint import CheckpointWriter

            def failed(info: dict[str, Any]) -> None:
                self.record.event(
                    "log",
                    info["step"],
                    level="error",
                    message=f"checkpoint at step {info['step']} not written: {info['error']}",
                )

            self._writer = CheckpointWriter(
                checkpoints_dir(self.run_dir),
                keep_last=int(self.cfg.train.keep_last),
                on_error=failed,
                before_publish=self.record.sync,
            )
        return self._writer

    def build(self, step: int, carry: Carry | None, metrics: dict[str, Any]) -> dict[str, Any] | None:
        """Collective: every rank calls it; rank 0 gets the dict, the others None."""
        carry_sd = S.global_carry(self.env, _carry_sd(carry))
        rng = S.gather_rng(self.env)
        if not self.env.is_main:
            return None
        p = self.parts
        return {
            "format": S.CKPT_FORMAT,
            "version": S.CKPT_VERSION,
            "step": int(step),
            "epoch": p.epoch(),
            # The writer copies every tensor to CPU before returning: training may go on at once.
            "model": p.model.state_dict(),
            "optimizers": p.optim.state_dict(),
            "loader": p.loader.state_dict(),
            "rng": rng,
            "carry": carry_sd,
            "config": self.cfg.to_dict(),
            "metrics": _plain(metrics),
            "world_size": self.env.world_size,
            **({"ema": p.ema.state_dict()} if p.ema is not None else {}),
        }

    def write(self, step: int, carry: Carry | None, metrics: dict[str, Any], wait: bool) -> str | None:
        """Collective. Rank 0 hands the state to the background writer (and waits for the file
        when `wait`); returns the run-relative path on rank 0, None elsewhere."""
        t0 = time.perf_counter()
        ckpt = self.build(step, carry, metrics)
        self.saved_step = step
        if ckpt is None:
            if wait:  # rank 0 writes; the others wait for it at a named barrier, not in the next step's all-reduce
                D.barrier_after_rank0(self.env, "checkpoint written")
            return None
        score = (metrics.get("eval") or {}).get("exact_accuracy")
        path = checkpoint_path(self.run_dir, step)
        stall = time.perf_counter() - t0
        rel = display(self.run_dir, path)

        def done(info: dict[str, Any]) -> None:
            self.last = rel
            self.record.checkpoint_written(rel)
            self.record.event(
                "checkpoint", step, path=rel, size=info["size"], seconds=info["seconds"], stall_s=round(stall, 4)
            )

        self._writer_().save(ckpt, path, score=score, on_done=done)
        if wait:
            self.wait()
            D.barrier_after_rank0(self.env, "checkpoint written")
        return rel

    def failure(self, step: int) -> str | None:
        """Why the checkpoint of `step` was not written (after `wait`), or None."""
        return self._writer.failed_steps.get(step) if self._writer is not None else None

    def pending(self) -> bool:
        return self._writer is not None and self._writer.pending()

    def wait(self) -> None:
        if self._writer is not None:
            self._writer.wait()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _carry_sd(carry: Carry | None) -> dict[str, torch.Tensor]:
    if carry is None:
        return {}
    from hrm.model.hrm_act import carry_state_dict

    return carry_state_dict(carry)


def _plain(obj: Any) -> Any:
    # weights_only loading accepts only plain containers and numbers
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)
