"""Where a session starts: fresh, a full checkpoint of ours, or weights only (a reference checkpoint,
or `train.init_from`). Two steps, both before anything is written to the run directory:

`choose_start` finds and verifies the file (for `--resume latest`, the newest checkpoint that
verifies, naming those it skipped; no checkpoint at all starts from step 0 in place);
`apply_start` puts it into the built parts and returns the `StartPoint` the session begins at."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hrm.run.ckpt_index import latest_checkpoint, list_checkpoints
from hrm.run.config import Config
from hrm.run.layout import checkpoints_dir
from hrm.train import distributed as D
from hrm.train import state as S
from hrm.train.parts import Parts

if TYPE_CHECKING:
    from hrm.model.hrm_act import Carry

log = logging.getLogger(__name__)

# `resumed_from` of a `run` event that restarted a directory without a checkpoint: readers
# supersede every earlier train/eval event past step 0, as for any resume.
RESTART_IN_PLACE = "step 0"


@dataclass(frozen=True)
class Note:
    level: str  # "info" | "warning"
    message: str


@dataclass(frozen=True)
class StartFile:
    """A verified checkpoint file and how it will be used."""

    path: Path
    ckpt: dict[str, Any]
    full: bool  # everything (resume) rather than weights only
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class StartPoint:
    step: int = 0
    carry: Carry | None = None
    resumed_from: str | None = None  # run-relative path, RESTART_IN_PLACE, or None (a fresh run)
    notes: tuple[Note, ...] = field(default_factory=tuple)


def display(run_dir: Path, path: Path) -> str:
    """A path as the run's events name it: relative to the run directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def _candidates(run_dir: Path) -> list[Path]:
    """Checkpoints of the live branch, newest first: the latest, then the earlier ones by step."""
    latest = latest_checkpoint(checkpoints_dir(run_dir))
    if latest is None:
        return []
    older = [c for c in list_checkpoints(run_dir) if c.path != latest]
    latest_step = next((c.step for c in list_checkpoints(run_dir) if c.path == latest), None)
    if latest_step is not None:
        older = [c for c in older if c.step < latest_step]  # higher steps belong to an abandoned branch
    return [latest, *(c.path for c in sorted(older, key=lambda c: c.step, reverse=True))]


def _latest_that_verifies(run_dir: Path) -> StartFile | None:
    skipped: list[str] = []
    for path in _candidates(run_dir):
        try:
            ckpt = S.load_checkpoint_file(path)
            S.check_version(ckpt, path)
        except S.CheckpointError as e:
            skipped.append(f"{display(run_dir, path)} ({e})")
            continue
        notes = tuple(Note("warning", f"--resume latest: skipped {s}") for s in skipped)
        return StartFile(path=path, ckpt=ckpt, full=True, notes=notes)
    if skipped:
        raise S.CheckpointError(
            f"--resume latest: no checkpoint in {checkpoints_dir(run_dir)} verifies ({'; '.join(skipped)}); "
            "name an earlier checkpoint file with --resume PATH"
        )
    return None


def choose_start(cfg: Config, run_dir: Path, resume: str | None) -> StartFile | None:
    """The verified start file, or None for step 0. Raises CheckpointError (one line naming the
    file, the problem and the fix) for a file that cannot be used; writes nothing."""
    if resume == "latest":
        found = _latest_that_verifies(run_dir)
        if found is not None:
            return found
        if not cfg.train.init_from:
            return None  # a run killed before its first checkpoint: apply_start says so
    if resume and resume != "latest":
        path = Path(resume).expanduser()
        ckpt = S.load_checkpoint_file(path)
        if S.is_full_checkpoint(ckpt):
            S.check_version(ckpt, path)
            return StartFile(path=path, ckpt=ckpt, full=True)
        return StartFile(path=path, ckpt=ckpt, full=False)
    if cfg.train.init_from:
        path = Path(cfg.train.init_from).expanduser()
        return StartFile(path=path, ckpt=S.load_checkpoint_file(path), full=False)
    return None


def _load_ema(cfg: Config, parts: Parts, ckpt: dict[str, Any], src: Path) -> tuple[Note, ...]:
    """The checkpoint's moving average, exactly; one that has none starts it from the loaded weights."""
    if parts.ema is None:
        return ()
    if "ema" in ckpt:
        try:
            parts.ema.load_state_dict(ckpt["ema"])
        except ValueError as e:
            raise S.CheckpointError(f"checkpoint {src}: {e}") from None
        return ()
    from hrm.train.ema import WeightEMA

    parts.ema = WeightEMA(parts.model, cfg.train.ema_rate)
    return (Note("warning", f"checkpoint {src} has no weight EMA: it starts from the loaded weights"),)


def apply_start(
    cfg: Config, run_dir: Path, env: D.DistEnv, parts: Parts, start: StartFile | None, resume: str | None
) -> StartPoint:
    """Load `start` into `parts` (model, optimizers, loader, RNG); the StartPoint says where the
    loop begins. A file that does not fit the model raises CheckpointError."""
    if start is None:
        if resume == "latest":
            msg = (
                f"--resume latest: no checkpoint in {checkpoints_dir(run_dir)} (the run ended before its first); "
                "starting from step 0 in place"
            )
            return StartPoint(resumed_from=RESTART_IN_PLACE, notes=(Note("warning", msg),))
        return StartPoint()
    src, ckpt = start.path, start.ckpt
    if start.full:
        S.check_model_fit(parts.model, ckpt["model"], src)
        parts.model.load_state_dict(ckpt["model"])
        parts.optim.load_state_dict(ckpt["optimizers"])
        parts.loader.load_state_dict(ckpt["loader"])
        ema_note = _load_ema(cfg, parts, ckpt, src)
        step = int(ckpt["step"])
        carry = _carry_from(env, ckpt["carry"])
        S.restore_rank_rng(env, ckpt["rng"], int(cfg.train.seed), step)
        shown = display(run_dir, src)
        ranks = ckpt.get("world_size")
        msg = f"resumed from {shown} at step {step}" + (
            f" (written by {ranks} rank{'s' * (ranks != 1)})" if ranks else ""
        )
        notes = (*start.notes, *ema_note, Note("info", msg))
        return StartPoint(step=step, carry=carry, resumed_from=shown, notes=notes)
    # Weights only: a reference checkpoint, or one of ours used as init_from.
    weights = ckpt["model"] if S.is_full_checkpoint(ckpt) else ckpt
    from hrm.model.reference import load_model_weights

    try:
        load_model_weights(parts.head, weights)
    except Exception as e:
        raise S.CheckpointError(f"checkpoint {src} does not fit the config: {e}") from e
    msg = (
        f"initialised weights from {src} (weights only): optimizer state, data order and "
        "the ACT carry start fresh at step 0"
    )
    return StartPoint(notes=(*start.notes, Note("warning", msg)))


def _carry_from(env: D.DistEnv, saved: dict[str, torch.Tensor]) -> Carry | None:
    if not saved:
        return None
    from hrm.model.hrm_act import carry_from_state_dict

    return carry_from_state_dict(S.local_carry(env, saved, env.device))
