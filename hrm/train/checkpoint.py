"""Writing and reading checkpoint files: atomic, in the background, pruned.

`CheckpointWriter.save` copies every tensor to CPU (a clone: training mutates parameters in place)
while the caller waits, then a background thread writes `checkpoints/.tmp-step-N.pt.<pid>`, fsyncs
it, renames it to `step-N.pt`, fsyncs the directory, updates index.json and prunes. A failed write
(a full disk) removes its temp file and leaves every earlier checkpoint as it was.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hrm.run.ckpt_index import (
    being_deleted,
    best_checkpoint,
    checkpoints_dir,
    checkpoints_in_write_order,
    latest_checkpoint,
    list_checkpoints,
    parse_step,
    read_index,
)
from hrm.run.layout import CKPT_DIR, checkpoint_name
from hrm.run.layout import CKPT_INDEX_FILE as INDEX_NAME
from hrm.train.write_errors import describe_write_error

__all__ = [
    "CheckpointWriter",
    "CheckpointCorrupt",
    "load_checkpoint",
    "to_cpu",
    "snapshot",
    "latest_checkpoint",
    "list_checkpoints",
    "best_checkpoint",
    "checkpoint_name",
    "checkpoints_dir",
    "describe_write_error",
    "mark_branch_point",
]

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]


class CheckpointCorrupt(RuntimeError):
    """A checkpoint file that is truncated, corrupt or not loadable with weights_only=True."""


def to_cpu(obj: Any, reuse: Any = None) -> Any:
    """A deep copy of a state tree with every tensor copied to CPU (containers rebuilt).

    reuse: an earlier snapshot of the same structure; its CPU tensors of matching shape and dtype
    are overwritten in place, which avoids allocating (and page-faulting) hundreds of MB per save.
    CUDA tensors go to pinned buffers asynchronously; the caller must synchronize (see `snapshot`).
    """
    if isinstance(obj, torch.Tensor):
        src = obj.detach()
        if (
            isinstance(reuse, torch.Tensor)
            and reuse.device.type == "cpu"
            and reuse.shape == src.shape
            and reuse.dtype == src.dtype
        ):
            return reuse.copy_(src, non_blocking=src.is_cuda)
        if src.is_cuda:
            out = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            return out.copy_(src, non_blocking=True)
        return src.to("cpu", copy=True)
    if isinstance(obj, dict):  # dict or OrderedDict (state_dict)
        prev = reuse if isinstance(reuse, dict) else {}
        return type(obj)((k, to_cpu(v, prev.get(k))) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        olds = reuse if isinstance(reuse, (list, tuple)) and len(reuse) == len(obj) else [None] * len(obj)
        items = [to_cpu(v, r) for v, r in zip(obj, olds)]
        return items if isinstance(obj, list) else tuple(items)
    if hasattr(obj, "copy") and type(obj).__module__ == "numpy":
        return obj.copy()
    return obj


def snapshot(state: Any, reuse: Any = None) -> Any:
    """to_cpu, then wait for any device-to-host copies: the result is safe to hand to a thread."""
    out = to_cpu(state, reuse)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _safe_call(callback: Callback, info: dict[str, Any]) -> None:
    try:
        callback(info)
    except Exception:  # a reporting bug must not hide that the checkpoint itself is fine
        log.exception("checkpoint callback failed")


class CheckpointWriter:
    """Background, atomic checkpoint writer for one run.

    directory: the run directory or its checkpoints/ directory. keep_last: how many of the most
    recent checkpoints to keep; the best by score (eval exact accuracy) is kept as well.
    on_done(info) gets {path, step, size, seconds, score}; on_error(info) gets {path, step, error}.
    Both run on the writer thread.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        keep_last: int = 3,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        reuse_buffers: bool = True,
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        directory = Path(directory)
        self.dir = directory if directory.name == CKPT_DIR else directory / CKPT_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.on_done = on_done
        self.on_error = on_error
        self.last_error: str | None = None
        self.failed_steps: dict[int, str] = {}  # step -> why its checkpoint was not written
        # Called on the writer thread after the file is durable, before it becomes visible: the
        # trainer makes the events of every step the checkpoint covers durable first.
        self.before_publish = before_publish
        # Keeping the last snapshot's CPU tensors costs one copy of the state in host memory and
        # turns later saves into plain memcpy (no allocation): the training-loop stall shrinks.
        self.reuse_buffers = reuse_buffers
        self._last_snapshot: Any = None
        self._thread: threading.Thread | None = None
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        # Temp files of a writer killed mid-write are garbage; ours carry our pid, so others' are stale.
        for p in self.dir.glob(".tmp-*"):
            try:
                p.unlink()
            except OSError:
                pass
        # A prune killed after its index write: finish it before any new file could take one of those names.
        index = read_index(self.dir)
        if being_deleted(index):
            try:
                for name in being_deleted(index):
                    (self.dir / name).unlink(missing_ok=True)
                _write_json_atomic(
                    self.dir / INDEX_NAME, {"checkpoints": index["checkpoints"], "best": index.get("best")}
                )
            except OSError as exc:
                log.warning("finishing an interrupted checkpoint prune failed: %s", exc)

    def save(
        self,
        state: dict[str, Any],
        path: str | os.PathLike[str] | None = None,
        *,
        step: int | None = None,
        score: float | None = None,
        on_done: Callback | None = None,
    ) -> Path:
        """Copy `state` to CPU now, write it in the background; returns the final path.
        The step comes from `step`, else state["step"], else the file name of `path`."""
        if step is None:
            step = int(state["step"]) if "step" in state else parse_step(Path(path).name) if path else None
        if step is None:
            raise ValueError("save() needs a step: pass step=, or a state with 'step', or a step-N.pt path")
        final = Path(path) if path is not None else self.dir / checkpoint_name(step)
        if final.parent.resolve() != self.dir.resolve():
            raise ValueError(f"checkpoint {final} must be inside {self.dir}")
        self.wait()  # one write at a time: back-pressure, and the previous snapshot is free to reuse
        copy = snapshot(state, self._last_snapshot if self.reuse_buffers else None)
        self._last_snapshot = copy if self.reuse_buffers else None
        self._thread = threading.Thread(
            target=self._write, name="hrm-ckpt", daemon=False, args=(copy, final, step, score, on_done or self.on_done)
        )
        self._thread.start()
        return final

    def _write(
        self, state: dict[str, Any], final: Path, step: int, score: float | None, on_done: Callback | None
    ) -> None:
        tmp = self.dir / f".tmp-{final.name}.{os.getpid()}"
        start = time.perf_counter()
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            if self.before_publish is not None:
                self.before_publish()
            os.replace(tmp, final)
            _fsync_dir(self.dir)
        except BaseException as exc:  # ENOSPC, EIO, ...: drop the temp file, keep older checkpoints
            why = describe_write_error(exc, final)  # before the unlink: a full disk is still full
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            self.last_error = f"checkpoint at step {step} not written: {why}"
            self.failed_steps[step] = why
            log.error("%s", self.last_error, exc_info=exc)
            if self.on_error is not None:
                _safe_call(self.on_error, {"path": str(final), "step": step, "error": why})
            if not isinstance(exc, Exception):
                raise
            return
        seconds = time.perf_counter() - start
        size = final.stat().st_size
        info = {"path": str(final), "step": step, "size": size, "seconds": seconds, "score": score}
        try:
            self._record_and_prune(final, step, score, size)
        except OSError as exc:  # the checkpoint itself is safe; a stale index is only cosmetic
            log.warning("checkpoint index/prune failed: %s", exc)
        if on_done is not None:
            _safe_call(on_done, info)

    def _record_and_prune(self, final: Path, step: int, score: float | None, size: int) -> None:
        index = read_index(self.dir)
        # Write order comes from the index (files it never saw, from a crash between rename and index
        # update, join by step before this one); file times play no part.
        entries = [e for e in _entries_in_write_order(self.dir, index) if e["file"] != final.name]
        entries.append({"file": final.name, "step": step, "score": score, "size": size, "time": time.time()})
        scored = [e for e in entries if isinstance(e.get("score"), (int, float))]
        best = max(scored, key=lambda e: (e["score"], e["step"]))["file"] if scored else None
        keep = {e["file"] for e in entries[-self.keep_last :]} | ({best} if best else set())
        kept = [e for e in entries if e["file"] in keep]
        doomed = [e["file"] for e in entries if e["file"] not in keep]
        doomed += [n for n in being_deleted(index) if n != final.name and n not in doomed]
        if doomed:
            # The index drops the files before they go: a kill in between never leaves it naming a missing file.
            _write_json_atomic(self.dir / INDEX_NAME, {"checkpoints": kept, "best": best, "deleting": doomed})
            for name in doomed:
                (self.dir / name).unlink(missing_ok=True)
        _write_json_atomic(self.dir / INDEX_NAME, {"checkpoints": kept, "best": best})

    def pending(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the background write (if any) has finished."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.wait()


def _entries_in_write_order(ckpt_dir: Path, index: dict[str, Any]) -> list[dict[str, Any]]:
    """index.json entries of the complete checkpoints on disk, in write order; a file the index never saw
    gets a fresh entry."""
    recorded = {e["file"]: e for e in index["checkpoints"] if isinstance(e, dict) and isinstance(e.get("file"), str)}
    return [
        recorded.get(c.path.name) or {"file": c.path.name, "step": c.step, "score": None, "size": c.size}
        for c in checkpoints_in_write_order(ckpt_dir)
    ]


def mark_branch_point(ckpt_dir: Path, name: str) -> None:
    """Record that training goes on from checkpoint `name` (a resume): it moves to the end of the write
    order, so the live branch (`live_branch`, what `--resume latest` and the app use) runs through it even
    before the new branch writes its first checkpoint, and higher steps written earlier count as abandoned."""
    index = read_index(ckpt_dir)
    order = _entries_in_write_order(ckpt_dir, index)
    if not (ckpt_dir / name).is_file() or (order and order[-1]["file"] == name) or being_deleted(index):
        return  # nothing to move (an interrupted prune is finished by the next writer first)
    moved = [e for e in order if e["file"] == name]
    rest = [e for e in order if e["file"] != name]
    _write_json_atomic(ckpt_dir / INDEX_NAME, {"checkpoints": rest + moved, "best": index.get("best")})


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """torch.load(weights_only=True) after checking the file is whole: a truncated or corrupt file
    raises CheckpointCorrupt naming the file, and nothing of it is loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointCorrupt(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointCorrupt(f"checkpoint {path} is empty (the write never finished); use an earlier checkpoint")
    if not zipfile.is_zipfile(path):  # torch.load would try the legacy format, warning on stderr first
        raise CheckpointCorrupt(
            f"checkpoint {path} is truncated or not one of ours (no zip archive); use an earlier one"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every record and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointCorrupt(f"checkpoint {path} is corrupt ({exc}); use an earlier checkpoint") from None
    if bad is not None:
        raise CheckpointCorrupt(
            f"checkpoint {path} is corrupt (record {bad} fails its CRC check); use an earlier checkpoint"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, which would run the file's code: never say that
        msg = f"checkpoint {path} holds objects other than tensors: not one of ours; use one this trainer wrote"
        raise CheckpointCorrupt(msg) from None
    except Exception as exc:
        raise CheckpointCorrupt(
            f"checkpoint {path} is not loadable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); use an earlier checkpoint"
        ) from None
