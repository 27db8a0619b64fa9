"""Knowing where every rank waits, so a collective that never completes ends the run with a
`failed` status naming the collective and the rank that did not arrive.

On NCCL a collective that exceeds the process group's timeout is not an exception: the NCCL
watchdog aborts the process (SIGABRT) and nothing after it runs. So each rank marks the collectives
it waits on (`waiting`, or `issued` … `synced` for asynchronous ones, whose wait happens at the next
host sync), and a thread of ours reports a wait that has lasted `margin` seconds less than the
backend's timeout: before NCCL can abort. Rank 0 reports into the run's status (it owns
events.jsonl); the other ranks log the same line to their stderr.

Every rank also publishes its current wait to the launcher's key-value store (from the thread, off
the training path), so rank 0's report names the rank(s) that are not in the same collective."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


# The watch of this process (set by hrm.train.distributed when the group starts), so code below the
# trainer (the sparse embedding's optimizer) can mark its collectives without being handed it.
_active: CollectiveWatch | None = None


def set_active(watch: CollectiveWatch | None) -> None:
    global _active
    _active = watch


@contextmanager
def collective(name: str, blocking: bool = True, timeout_s: float | None = None) -> Iterator[None]:
    """Mark a collective on this process's watch (a no-op without one). blocking=False for one that
    returns at once (NCCL): it stays marked until a probe (a CUDA event recorded after it) says it
    completed, or the next host sync (`synced`)."""
    w = _active
    if w is None:
        yield
    elif blocking:
        with w.waiting(name, timeout_s):
            yield
    else:
        yield
        w.issued(name, timeout_s, done=w.make_probe() if w.make_probe is not None else None)


def synced() -> None:
    """A host sync completed: every collective issued before it has too."""
    if _active is not None:
        _active.synced()


def _completed(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:  # a lost device: the collective will not complete either
        return False


def report_margin(timeout_s: float) -> float:
    """How long before the backend's timeout we report: a tenth of it, between 1 and 30 s."""
    return min(30.0, max(1.0, 0.1 * timeout_s))


class CollectiveWatch:
    """One per rank. `store` (a torch.distributed Store, optional) carries each rank's wait."""

    def __init__(self, rank: int, world_size: int, timeout_s: float, store: Any | None = None) -> None:
        self.rank, self.world_size, self.timeout_s = rank, world_size, float(timeout_s)
        self.store = store
        self.report: Callable[[str], None] = lambda msg: log.error("%s", msg)
        self.step: Callable[[], int] = lambda: -1
        self.fired: str | None = None  # the message, once reported (describe_failure prefers it)
        # Set on CUDA: records an event after an asynchronous collective; its query() says it completed.
        self.make_probe: Callable[[], Callable[[], bool]] | None = None
        # Set on CUDA: this rank's allocator numbers, published beside its wait for rank 0's sampler.
        self.info: Callable[[], str] | None = None
        self._published_info: str | None = None
        self.poll = min(1.0, report_margin(self.timeout_s) / 4)
        self._beat = 0  # bumped at every check: a rank whose value stops changing is not running
        self._seen: dict[int, tuple[str, float]] = {}  # rank -> (its value, when first seen), while we wait
        self._lock = threading.Lock()
        # Collectives not yet known to have completed, oldest first: (name, since, limit, step, done probe).
        self._pending: list[tuple[str, float, float, int, Callable[[], bool] | None]] = []
        self._published: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- marking waits (main thread) -------------------------------------------------------------
    def issued(self, name: str, timeout_s: float | None = None, done: Callable[[], bool] | None = None) -> None:
        """A collective was started; the oldest one not completed is the one reported."""
        entry = (name, time.monotonic(), float(timeout_s or self.timeout_s), self.step(), done)
        with self._lock:
            self._pending.append(entry)

    def synced(self) -> None:
        with self._lock:
            self._pending.clear()

    @contextmanager
    def waiting(self, name: str, timeout_s: float | None = None) -> Iterator[None]:
        """A blocking collective (or a host sync that waits on one)."""
        self.issued(name, timeout_s)
        try:
            yield
        finally:
            self.synced()

    def current(self) -> tuple[str, int, float, float] | None:
        """(collective, step, seconds waited, its timeout) of the oldest incomplete one, or None."""
        with self._lock:
            while self._pending and self._pending[0][4] is not None and _completed(self._pending[0][4]):
                self._pending.pop(0)
            if not self._pending:
                return None
            name, since, limit, step, _ = self._pending[0]
            return name, step, time.monotonic() - since, limit

    # --- the thread ----------------------------------------------------------------------------
    def start(self) -> CollectiveWatch:
        self._thread = threading.Thread(target=self._run, name="hrm-collective-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
            except Exception:  # the watch must never take the trainer down
                log.exception("collective watch failed; it keeps going")

    def check(self) -> str | None:
        """Publish this rank's wait; report it once when it is within the margin of its timeout."""
        cur = self.current()
        self._beat += 1
        wait = "-" if cur is None else f"{cur[0]}|{cur[1]}"
        self._published = self._publish("rank", f"{wait}|{self._beat}", self._published)
        if self.info is not None:
            self._published_info = self._publish("info", self.info(), self._published_info)
        if cur is None or self.fired:
            self._seen.clear()
            return None
        name, step, waited, limit = cur
        if waited >= limit / 2:
            self._observe()  # from half the timeout on: who is still running, and where
        if waited < limit - report_margin(limit):
            return None
        msg = (
            f"rank {self.rank} waited {waited:.0f} s in collective '{name}' (step {step}) of a {limit:.0f} s timeout"
            f"{self._late_ranks(name, step)}; the run is aborted (train.dist_timeout_s sets the timeout)"
        )
        self.fired = msg
        self.report(msg)
        return msg

    def _publish(self, key: str, value: str, last: str | None) -> str | None:
        """Set `<key><rank>` when it changed; returns what the store now holds (as far as we know)."""
        if self.store is None or value == last:
            return last
        try:
            self.store.set(f"{key}{self.rank}", value)
            return value
        except Exception as e:  # the store is a convenience: the report still names this rank
            log.debug("collective watch: store.set failed: %s", e)
            return last

    def _read(self, key: str) -> str | None:
        if self.store is None:
            return None
        try:
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception as e:
            log.debug("collective watch: reading %s failed: %s", key, e)
            return None

    def peer_info(self, rank: int) -> str | None:
        """What rank `rank` last published as its `info` (None when nothing yet)."""
        return self._read(f"info{rank}")

    def _observe(self) -> None:
        now = time.monotonic()
        for r in range(self.world_size):
            if r != self.rank:
                value = self._read(f"rank{r}") or "?"
                if self._seen.get(r, ("",))[0] != value:
                    self._seen[r] = (value, now)

    def _late_ranks(self, name: str, step: int) -> str:
        """': not arrived: rank 1 (silent for 3 s, …)' from what the others published while we waited:
        a rank whose value stopped changing is not running (stopped, stuck in native code, gone); one that
        runs but waits elsewhere is named with where it waits."""
        if self.store is None:
            return ": another rank has not arrived"
        self._observe()
        now, late = time.monotonic(), []
        for r, (value, since) in sorted(self._seen.items()):
            wait = value.rsplit("|", 1)[0]
            where = {"-": "not in a collective", "?": "never published"}.get(wait, wait.replace("|", " at step "))
            silent = now - since
            if silent >= 3 * self.poll:
                late.append(f"rank {r} (silent for {silent:.0f} s; last: {where})")
            elif wait != f"{name}|{step}":
                late.append(f"rank {r} ({where})")
        return f": not arrived: {', '.join(late)}" if late else ": every rank is in it (a stuck device or network)"
