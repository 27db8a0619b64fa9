"""The thin entry: start the process group, agree on the run directory, set up logging, write
config.yaml, build the session, train, close, tear the group down."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hrm.run.config import Config
from hrm.run.errors import describe
from hrm.run.layout import log_path

log = logging.getLogger("hrm.train")


class _NoTraceback(logging.Formatter):
    """stderr gets one line per record; the traceback stays in trainer.log (or --debug)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def setup_logging(run_dir: Path | None, rank: int, debug: bool = False) -> None:
    """Rank 0 logs to stderr and to run_dir/trainer.log (unless stderr already is that file, as
    when the app launches us with output redirected there); other ranks log warnings to stderr.
    Tracebacks go to trainer.log; to stderr only with `debug` (or when stderr is trainer.log)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hrm", False):
            root.removeHandler(h)
    spec = f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(levelname)s %(name)s: %(message)s"
    full, short = logging.Formatter(spec), _NoTraceback(spec)
    stderr_is_log = rank == 0 and run_dir is not None and _same_file(sys.stderr, log_path(run_dir))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(full if debug or stderr_is_log else short)
    handlers: list[logging.Handler] = [err]
    if rank == 0 and run_dir is not None and not stderr_is_log:
        fh = _LogFile(log_path(run_dir), encoding="utf-8")
        fh.setFormatter(full)
        handlers.append(fh)
    for h in handlers:
        h._hrm = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(logging.INFO)


class _LogFile(logging.FileHandler):
    """trainer.log. On a full disk logging's default prints a traceback on stderr for every line (and the
    final flush fails the exit): here one line says so, and stderr keeps the log."""

    _failed = False

    def handleError(self, record: logging.LogRecord | None) -> None:
        if not self._failed:
            self._failed = True
            why = sys.exc_info()[1]
            why = getattr(why, "strerror", None) or why
            sys.stderr.write(
                f"hrm-train: {self.baseFilename}: cannot write ({why}); free space there to keep the log\n"
            )

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            self.handleError(None)


def _same_file(stream: Any, path: Path) -> bool:
    try:
        a, b = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def launch(
    cfg: Config,
    run_dir: Path,
    *,
    resume: str | None,
    stop_at_step: int | None,
    take_over: bool = False,
    debug: bool = False,
) -> int:
    """Train `cfg` in `run_dir`; the exit code: 0 finished or stopped with the final checkpoint on
    disk, 1 failed (the final state not saved included), 2 refused before anything was written."""
    from hrm.run.config import config_from_dict
    from hrm.run.lock import TrainerAlreadyRunning, acquire, release
    from hrm.train import distributed as D
    from hrm.train.fit import MemoryPlanError
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
            # Locked before anything in the directory is touched (trainer.log): a refused start changes
            # nothing. Session.open finds the lock already ours, and writes config.yaml once its start
            # point is validated.
            try:
                acquire(run_dir, take_over=take_over)
            except TrainerAlreadyRunning as e:
                print(f"hrm-train: {e}", file=sys.stderr)
                return 2
            run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(run_dir, env.rank, debug)
        log.info("run directory %s (rank %d of %d, %s)", run_dir, env.rank, env.world_size, env.device)
        if env.device.type == "cpu":
            from hrm.train.host_alloc import keep_freed_memory

            keep_freed_memory()
        try:
            session = Session.open(cfg, run_dir, env, resume=resume, stop_at_step=stop_at_step)
        except (TrainerAlreadyRunning, CheckpointError, MemoryPlanError) as e:
            _to_log_only(f"hrm-train: {e}")
            print(f"hrm-train: {e}", file=sys.stderr)
            return 2
        except Exception as e:
            code, msg = describe(e)  # one line naming the file, the problem and the fix
            _to_log_only("start-up failed:\n" + "".join(traceback.format_exception(e)) + f"hrm-train: {msg}")
            print(f"hrm-train: {msg}", file=sys.stderr)
            return code
        try:
            return run_training(session)
        finally:
            session.close()
    finally:
        if env.is_main:
            release(run_dir)  # usually Session.close has already released it
        D.cleanup(env)
        _remove_handlers()


def _to_log_only(line: str) -> None:
    """A refusal printed on stderr is also kept in trainer.log (when that is another file)."""
    for h in logging.getLogger().handlers:
        if getattr(h, "_hrm", False) and isinstance(h, logging.FileHandler) and h.stream is not None:
            try:
                h.stream.write(line + "\n")
                h.flush()
            except OSError:  # a full disk: stderr has the line
                pass


def _remove_handlers() -> None:
    """Called in-process (tests, notebooks), the next run must not write into this run's log."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hrm", False):
            root.removeHandler(h)
            h.close()
