"""Training batches made ahead on a thread, in pinned (page-locked) host memory, for CUDA runs.

From pageable memory a `.to(cuda, non_blocking=True)` copy is not asynchronous: the host waits for
it, once per batch tensor, and the numpy gather of the next batch waits for the GPU to finish too.
Here a thread gathers the next batches while the GPU works and pins them, so the trainer's
non_blocking copy returns at once. CPU runs use TrainLoader itself (nothing to overlap with).

Resuming stays exact: each batch travels with the loader state right after it was drawn, and
`state_dict()` is the state after the last batch the trainer *took*, never one still queued."""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from hrm.data.loader import TrainLoader

Batch = tuple[str, dict[str, torch.Tensor], int]


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class PrefetchLoader:
    """TrainLoader's interface (next_batch, epoch, state_dict, load_state_dict) over a producer thread."""

    def __init__(self, loader: TrainLoader, depth: int = 2, pin: bool = True) -> None:
        self.loader, self.depth, self.pin = loader, int(depth), pin
        self._state, self._epoch = loader.state_dict(), loader.epoch
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def global_batch_size(self) -> int:
        return self.loader.global_batch_size

    @property
    def local_batch_size(self) -> int:
        return self.loader.local_batch_size

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                set_name, batch, eff = self.loader.next_batch()
                if self.pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                item = ((set_name, batch, eff), self.loader.state_dict(), self.loader.epoch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the trainer's thread, which raises it
            self._queue.put(_Failed(e))

    def next_batch(self) -> Batch:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="hrm-batch-prefetch", daemon=True)
            self._thread.start()
        got = self._queue.get()
        if isinstance(got, _Failed):
            self._halt()
            raise got.exc
        batch, self._state, self._epoch = got
        return batch

    @property
    def epoch(self) -> float:
        return self._epoch

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._halt()
        self.loader.load_state_dict(state)
        self._state, self._epoch = self.loader.state_dict(), self.loader.epoch

    def close(self) -> None:
        self._halt()

    def _halt(self) -> None:
        """Stop the thread and drop what it made ahead; the underlying loader is then re-synced."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread = None
        self._queue = queue.Queue(maxsize=self.depth)
        self._stop.clear()
        # The thread drew batches the trainer never took: rewind to the last one it did.
        self.loader.load_state_dict(self._state)


def device_loader(loader: TrainLoader, device: torch.device) -> TrainLoader | PrefetchLoader:
    """The loader a run on `device` uses: prefetching into pinned memory on CUDA, TrainLoader on CPU."""
    return PrefetchLoader(loader) if device.type == "cuda" else loader
