"""Where a session starts (fresh, a full checkpoint of ours, or reference weights only) and how it
writes checkpoints (the dict of hrm.train.state, handed to the background writer of
hrm.train.checkpoint on rank 0)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from hrm.run.layout import checkpoint_path, checkpoints_dir
from hrm.train import distributed as D
from hrm.train import state as S

log = logging.getLogger(__name__)


def find_latest(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run directory (temp files never count)."""
    from hrm.train.checkpoint import latest_checkpoint

    path = latest_checkpoint(checkpoints_dir(run_dir))
    if path is None:
        raise S.CheckpointError(
            f"--resume latest: no checkpoint in {Path(run_dir) / 'checkpoints'}; "
            "start without --resume or name a checkpoint file"
        )
    return Path(path)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    if not resume:
        return None
    return find_latest(run_dir) if resume == "latest" else Path(resume).expanduser()


def apply_start_point(s: Any, resume: str | None) -> None:
    """Load a checkpoint (ours: everything; reference: weights only) into the built session."""
    path = resolve_resume(s.run_dir, resume)
    init_from = getattr(s.cfg.train, "init_from", None)
    if path is None and not init_from:
        return
    src = path or Path(init_from).expanduser()
    ckpt = S.load_checkpoint_file(src)
    model = s.head.model
    if S.is_full_checkpoint(ckpt) and path is not None:
        S.check_version(ckpt, src)
        S.check_model_fit(model, ckpt["model"], src)
        model.load_state_dict(ckpt["model"])
        _check_block_path(s, ckpt.get("block_path"), src)
        s.optim.load_state_dict(ckpt["optimizers"])
        s.loader.load_state_dict(ckpt["loader"])
        s.start_step = int(ckpt["step"])
        s.carry = _carry_from(s, ckpt["carry"])
        S.restore_rank_rng(s.env, ckpt["rng"], int(s.cfg.train.seed), s.start_step)
        s.resumed_from = _display(s.run_dir, src)
        s.log_event(
            "info",
            f"resumed from {s.resumed_from} at step {s.start_step}"
            + (f" (written by {ckpt.get('world_size')} ranks)" if ckpt.get("world_size") else ""),
        )
        return
    # Weights only: a reference checkpoint, or one of ours used as init_from.
    weights = ckpt["model"] if S.is_full_checkpoint(ckpt) else ckpt
    from hrm.model.reference import load_model_weights

    try:
        load_model_weights(s.head, weights)
    except Exception as e:
        raise S.CheckpointError(f"checkpoint {src} does not fit the config: {e}") from e
    s.resumed_from = None
    s.log_event(
        "warning",
        f"initialised weights from {src} (weights only): optimizer state, data order and "
        "the ACT carry start fresh at step 0",
    )


def _check_block_path(s: Any, saved: str | None, src: Path) -> None:
    """Resuming on another block path (model.cpu_kernels, the machine) warns, or refuses under
    train.strict_resume: the paths agree to float32 rounding, not bitwise."""
    from hrm.model import cpu_path

    now = cpu_path.selected()
    why = cpu_path.resume_mismatch(saved, now) if now is not None else ""
    if why and s.cfg.train.strict_resume:
        raise S.CheckpointError(f"{src}: {why}; train.strict_resume=true refuses it (set model.cpu_kernels)")
    if why:
        s.log_event("warning", f"resuming {src.name}: {why}")


def _display(run_dir: Path, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def _carry_from(s: Any, saved: dict[str, torch.Tensor]) -> Any:
    if not saved:
        return None
    from hrm.model.hrm_act import carry_from_state_dict

    return carry_from_state_dict(S.local_carry(s.env, saved, s.env.device))


def _carry_sd(carry: Any) -> dict[str, torch.Tensor]:
    if carry is None:
        return {}
    from hrm.model.hrm_act import carry_state_dict

    return carry_state_dict(carry)


def build_checkpoint(s: Any, step: int, carry: Any, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Collective: every rank calls it; rank 0 gets the dict (CPU copies), the others None."""
    carry_sd = S.global_carry(s.env, _carry_sd(carry))
    rng = S.gather_rng(s.env)
    if not s.env.is_main:
        return None
    return {
        "format": S.CKPT_FORMAT,
        "version": S.CKPT_VERSION,
        "step": int(step),
        "epoch": s.loader_epoch(),
        # The writer copies every tensor to CPU before returning: training may go on at once.
        "model": s.head.model.state_dict(),
        "optimizers": s.optim.state_dict(),
        "loader": s.loader.state_dict(),
        "rng": rng,
        "carry": carry_sd,
        "config": s.cfg.to_dict(),
        "metrics": _plain(metrics),
        "world_size": s.env.world_size,
        "block_path": _block_path(),
    }


def _block_path() -> str | None:
    from hrm.model import cpu_path

    chosen = cpu_path.selected()
    return chosen.path if chosen is not None else None


def _plain(obj: Any) -> Any:
    # weights_only loading accepts only plain containers and numbers
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


def _writer(s: Any) -> Any:
    if s.writer is None:
        from hrm.train.checkpoint import CheckpointWriter

        def failed(info: dict[str, Any]) -> None:
            s.log_event("error", f"checkpoint at step {info['step']} not written: {info['error']}")

        s.writer = CheckpointWriter(checkpoints_dir(s.run_dir), keep_last=int(s.cfg.train.keep_last), on_error=failed)
    return s.writer


def write_checkpoint(s: Any, step: int, carry: Any, metrics: dict[str, Any], wait: bool) -> str | None:
    t0 = time.perf_counter()
    ckpt = build_checkpoint(s, step, carry, metrics)
    if ckpt is None:
        if wait:  # rank 0 writes; the others wait for it at a named barrier, not in the next step's all-reduce
            D.barrier_after_rank0(s.env, "checkpoint written")
        return None
    score = (metrics.get("eval") or {}).get("exact_accuracy")
    path = checkpoint_path(s.run_dir, step)
    stall = time.perf_counter() - t0

    def done(info: dict[str, Any]) -> None:
        rel = _display(s.run_dir, Path(info["path"]))
        s.event("checkpoint", step, path=rel, size=info["size"], seconds=info["seconds"], stall_s=round(stall, 4))

    _writer(s).save(ckpt, path, score=score, on_done=done)
    if wait:
        wait_writes(s)
        D.barrier_after_rank0(s.env, "checkpoint written")
    s.last_checkpoint = _display(s.run_dir, path)
    return s.last_checkpoint


def pending_writes(s: Any) -> bool:
    return s.writer is not None and s.writer.pending()


def wait_writes(s: Any) -> None:
    if s.writer is not None:
        s.writer.wait()


def close_writer(s: Any) -> None:
    s.writer.close()
    s.writer = None
