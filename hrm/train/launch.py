"""The thin entry: start the process group, agree on the run directory, set up logging, write
config.yaml, build the session, train, close, tear the group down."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hrm.run.layout import config_path, log_path

log = logging.getLogger("hrm.train")


def setup_logging(run_dir: Path | None, rank: int) -> None:
    """Rank 0 logs to stderr and to run_dir/trainer.log (unless stderr already is that file, as
    when the app launches us with output redirected there); other ranks log warnings to stderr."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hrm", False):
            root.removeHandler(h)
    fmt = logging.Formatter(f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if rank == 0 and run_dir is not None:
        path = log_path(run_dir)
        if not _same_file(sys.stderr, path):
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        h._hrm = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(logging.INFO)


def _same_file(stream: Any, path: Path) -> bool:
    try:
        a, b = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def launch(
    cfg: Any, run_dir: Path, *, fresh: bool, resume: str | None, stop_at_step: int | None, take_over: bool = False
) -> int:
    from hrm.run.config import config_from_dict, load_config, save_config
    from hrm.run.lock import TrainerAlreadyRunning, acquire, release
    from hrm.train import distributed as D
    from hrm.train.session import Session
    from hrm.train.state import CheckpointError
    from hrm.train.trainer import run_training

    try:
        env = D.init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    except RuntimeError as e:
        print(f"hrm-train: {e}", file=sys.stderr)
        return 2
    try:
        # Rank 0 decides (its clock named the run); every rank trains on exactly its config.
        cfg_dict, run_dir_s = D.broadcast_object(env, (cfg.to_dict(), str(run_dir)))
        cfg, run_dir = config_from_dict(cfg_dict), Path(run_dir_s)
        if env.is_main:
            # Locked before anything in the directory is touched (config.yaml, trainer.log): a refused
            # start changes nothing. Session.open finds the lock already ours.
            try:
                acquire(run_dir, take_over=take_over)
            except TrainerAlreadyRunning as e:
                print(f"hrm-train: {e}", file=sys.stderr)
                return 2
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg_path = config_path(run_dir)
            if fresh or not cfg_path.is_file():
                save_config(cfg, cfg_path)
            elif load_config(cfg_path).to_dict() != cfg.to_dict():
                # Resumed with overrides (e.g. more steps): config.yaml stays the run's current truth.
                save_config(cfg, cfg_path)
        setup_logging(run_dir, env.rank)
        log.info("run directory %s (rank %d of %d, %s)", run_dir, env.rank, env.world_size, env.device)
        if env.device.type == "cpu":
            from hrm.train.host_alloc import keep_freed_memory

            keep_freed_memory()
        try:
            session = Session.open(cfg, run_dir, env, resume=resume, stop_at_step=stop_at_step)
        except (TrainerAlreadyRunning, CheckpointError) as e:
            print(f"hrm-train: {e}", file=sys.stderr)
            return 2
        except Exception as e:
            log.error("start-up failed: %s", e)
            print(f"hrm-train: start-up failed: {e}", file=sys.stderr)
            return 1
        try:
            return run_training(session)
        finally:
            session.close()
    finally:
        if env.is_main:
            release(run_dir)  # usually Session.close has already released it
        D.cleanup(env)
        _remove_handlers()


def _remove_handlers() -> None:
    """Called in-process (tests, notebooks), the next run must not write into this run's log."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hrm", False):
            root.removeHandler(h)
            h.close()
