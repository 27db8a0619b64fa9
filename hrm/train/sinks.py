"""Metric sinks: mirror our events (events.jsonl is the first sink) to TensorBoard and W&B.

Every sink takes the event dicts the trainer writes (`kind`, `step`, fields) through
`log_event(event)` and is finished with `close()`. The optional backends are imported inside their
constructors, so this module is torch-free and costs nothing when no sink is configured.

- `TensorBoardSink(log_dir)`: scalars through tensorboard's own event-file writer (no torch).
  A resumed `run` event at step S writes TensorBoard's restart marker, so TensorBoard drops the
  abandoned points with step > S, exactly as our readers do.
- `WandbSink(dir, ...)`: W&B, offline unless told otherwise (`mode="online"`).
- `NullSink`, `FanOutSink` (one failing backend is logged and dropped; training goes on).
- `replay(events_path, sink)`: mirror an existing run after the fact.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

__all__ = [
    "MetricSink",
    "NullSink",
    "FanOutSink",
    "TensorBoardSink",
    "WandbSink",
    "event_scalars",
    "build_sinks",
    "replay",
]

# Fields that identify an event rather than measure anything.
_META = frozenset({"v", "t", "kind", "step"})
_RUN_SCALARS = ("num_params", "total_steps", "world_size")


class MetricSink(Protocol):
    def log_event(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _number(value: Any) -> float | None:
    """A finite int/float as float; anything else (bool, None, NaN, text, lists) is not a scalar."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def event_scalars(event: dict[str, Any]) -> dict[str, float]:
    """The scalars of one event, tagged like the reference's W&B keys ("train/lm_loss", ...).

    train/eval/system: every numeric field under "<kind>/"; per-GPU fields as
    "system/gpu<index>/<field>"; run: num_params, total_steps, world_size; checkpoint: size,
    seconds. Lists (act_steps_hist, samples), text and nulls are left out.
    """
    kind = event.get("kind")
    out: dict[str, float] = {}
    if kind in ("train", "eval", "system", "checkpoint"):
        for key, value in event.items():
            if key in _META:
                continue
            x = _number(value)
            if x is not None:
                out[f"{kind}/{key}"] = x
        if kind == "system":
            for i, gpu in enumerate(event.get("gpus") or []):
                if not isinstance(gpu, dict):
                    continue
                index = gpu.get("index", i)
                for key, value in gpu.items():
                    x = _number(value)
                    if x is not None and key != "index":
                        out[f"system/gpu{index}/{key}"] = x
    elif kind == "run":
        for key in _RUN_SCALARS:
            x = _number(event.get(key))
            if x is not None:
                out[f"run/{key}"] = x
    return out


def _resumed_step(event: dict[str, Any]) -> int | None:
    if event.get("kind") == "run" and event.get("resumed_from"):
        return int(event.get("step", 0))
    return None


class _Sink:
    """`log(kind, step, fields)` for callers that hold the parts rather than the event dict."""

    def log_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def log(self, kind: str, step: int, fields: dict[str, Any]) -> None:
        self.log_event({"kind": kind, "step": int(step), **fields})


class NullSink(_Sink):
    """Accepts everything, writes nothing."""

    def log_event(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class FanOutSink(_Sink):
    """Sends each event to several sinks. A sink that raises is logged once and dropped: a
    dashboard going away must never stop training."""

    def __init__(self, sinks: Iterable[MetricSink]) -> None:
        self.sinks = list(sinks)

    def log_event(self, event: dict[str, Any]) -> None:
        for sink in list(self.sinks):
            try:
                sink.log_event(event)
            except Exception:  # noqa: BLE001 - any backend failure
                log.warning(
                    "metric sink %s failed; it is disabled for the rest of the run", type(sink).__name__, exc_info=True
                )
                self.sinks.remove(sink)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                log.warning("closing metric sink %s failed", type(sink).__name__, exc_info=True)
        self.sinks = []


class TensorBoardSink(_Sink):
    """Scalars to TensorBoard event files in `log_dir` (tensorboard's writer; no torch)."""

    def __init__(self, log_dir: str | os.PathLike[str], flush_secs: float = 10.0) -> None:
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as exc:
            raise ImportError(
                "the TensorBoard sink needs the tensorboard package: pip install 'hrm-tui[tensorboard]'"
            ) from exc
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self.log_dir = Path(log_dir)
        self._writer = EventFileWriter(str(self.log_dir), flush_secs=flush_secs)

    def log_event(self, event: dict[str, Any]) -> None:
        step = int(event.get("step", 0))
        wall = float(event.get("t") or time.time())
        resumed = _resumed_step(event)
        if resumed is not None:
            # TensorBoard's restart marker: readers purge every point with step >= marker step.
            self._writer.add_event(
                self._event_pb2.Event(
                    wall_time=wall,
                    step=resumed + 1,
                    session_log=self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START),
                )
            )
        scalars = event_scalars(event)
        if not scalars:
            return
        Value = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(value=[Value(tag=k, simple_value=v) for k, v in scalars.items()])
        self._writer.add_event(self._event_pb2.Event(wall_time=wall, step=step, summary=summary))
        if event.get("kind") != "train":
            self._writer.flush()  # rare events show up at once; train points every flush_secs

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink(_Sink):
    """Scalars to Weights & Biases; offline by default (sync later with `wandb sync DIR`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        project: str = "hrm-tui",
        name: str | None = None,
        mode: Literal["online", "offline", "disabled"] = "offline",
        config: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ImportError("the W&B sink needs the wandb package: pip install 'hrm-tui[wandb]'") from exc
        self._wandb = wandb
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb mode must be offline, online or disabled, got {mode!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project,
            name=name,
            id=run_id,
            dir=str(self.directory),
            mode=mode,
            config=config or {},
            settings=_wandb_settings(wandb),
        )
        self._last_step = -1
        self._lock = threading.Lock()  # the trainer's system-sampler thread logs too

    @property
    def run_dir(self) -> Path | None:
        """The W&B run directory (…/wandb/offline-run-…/files's parent)."""
        d = getattr(self._run, "dir", None)
        return Path(d).parent if d else None

    def log_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "run" and isinstance(event.get("config"), dict):
            self._run.config.update(event["config"], allow_val_change=True)
        scalars = event_scalars(event)
        if not scalars:
            return
        with self._lock:
            # W&B steps only go forward; a late sample (system thread) joins the current step.
            step = max(int(event.get("step", 0)), self._last_step)
            self._run.log(scalars, step=step)
            self._last_step = step

    def close(self) -> None:
        self._run.finish()
        # finish() returns before the W&B service has written the log; teardown waits for it, so
        # the offline run is complete on disk when close() returns. The trainer owns W&B in its process.
        self._wandb.teardown()


def _wandb_settings(wandb: Any) -> Any:
    """No system-stats thread (our `system` events already carry those), no console capture. The
    setting's name changed across wandb releases; fall back to the defaults when neither exists."""
    for kwargs in ({"x_disable_stats": True, "console": "off"}, {"_disable_stats": True, "console": "off"}):
        try:
            return wandb.Settings(**kwargs)
        except Exception:  # noqa: BLE001 - unknown field in this wandb version
            continue
    return None


def build_sinks(
    sinks_cfg: Any,
    run_dir: str | os.PathLike[str],
    *,
    run_name: str | None = None,
    task: str | None = None,
) -> MetricSink:
    """The sinks a run's config asks for (`sinks.tensorboard`, `sinks.wandb`, `sinks.wandb_mode`,
    `sinks.wandb_project`), writing under the run directory (tensorboard/, wandb/). Only rank 0
    builds sinks. NullSink when none is on. The W&B project defaults to the reference's
    "<Task> ACT-torch"."""
    get = sinks_cfg.get if isinstance(sinks_cfg, dict) else (lambda k, d=None: getattr(sinks_cfg, k, d))
    run_dir = Path(run_dir)
    sinks: list[MetricSink] = []
    if get("tensorboard", False):
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if get("wandb", False):
        project = get("wandb_project", None) or (f"{task.capitalize()} ACT-torch" if task else "hrm-tui")
        sinks.append(
            WandbSink(
                run_dir, project=project, name=run_name or run_dir.name, mode=get("wandb_mode", "offline") or "offline"
            )
        )
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else FanOutSink(sinks)


def replay(events_path: str | os.PathLike[str], sink: MetricSink, kinds: Iterable[str] | None = None) -> int:
    """Send every event of an existing run to `sink` (superseded steps of a resume left out).
    Returns how many events were sent. The caller closes the sink."""
    from hrm.run.events import drop_superseded, read_events

    wanted = set(kinds) if kinds is not None else None
    sent = 0
    for event in drop_superseded(read_events(events_path)):
        if wanted is None or event.get("kind") in wanted or _resumed_step(event) is not None:
            sink.log_event(event)
            sent += 1
    return sent
