"""A run's clock, folded from its events: time spent in each state, and the recent step rate.

Training time counts only `running`; paused time is kept apart; the gaps between trainer processes
(stopped, died, waiting for a resume) count as neither. The step rate that the ETA uses comes from
pairs of consecutive train events with no status or run event between them, so a pause, a stop or
a resume never stretches a step.
"""

from __future__ import annotations

from collections import defaultdict, deque

RATE_PAIRS = 50  # consecutive train-event pairs the recent rate averages over
_BEFORE_RUNNING = frozenset({"starting", "building", "unknown"})


class RunClock:
    def __init__(self) -> None:
        self.spent: defaultdict[str, float] = defaultdict(float)  # seconds in each closed interval
        self.state = "unknown"
        self.since: float | None = None
        self._pairs: deque[tuple[int, float]] = deque(maxlen=RATE_PAIRS)
        self._sum_steps = 0
        self._sum_dt = 0.0
        self._prev: tuple[int, float] | None = None  # the last train event's (step, t) of this stretch

    def _switch(self, state: str, t: float, closed_at: float | None = None) -> None:
        end = t if closed_at is None else closed_at
        if self.since is not None and end > self.since:
            self.spent[self.state] += end - self.since
        self.state, self.since = state, t
        self._prev = None  # the next train event starts a new stretch of running steps

    def on_status(self, state: str, t: float) -> None:
        self._switch(state, t)

    def on_run(self, t: float, previous_t: float | None) -> None:
        """A trainer process (re)started: what the last one was doing ends at its last event."""
        self._switch("starting", t, closed_at=previous_t)

    def on_train(self, step: int, t: float) -> None:
        if self.state in _BEFORE_RUNNING:
            self._switch("running", t)  # a train event means steps run, whatever was said before
        if self._prev is not None:
            ds, dt = step - self._prev[0], t - self._prev[1]
            if ds > 0 and dt > 0:
                if len(self._pairs) == self._pairs.maxlen:
                    old_ds, old_dt = self._pairs[0]
                    self._sum_steps -= old_ds
                    self._sum_dt -= old_dt
                self._pairs.append((ds, dt))
                self._sum_steps += ds
                self._sum_dt += dt
        self._prev = (step, t)

    def seconds_per_step(self) -> float | None:
        """Mean wall time of a running step over the recent pairs (None before two train events)."""
        return self._sum_dt / self._sum_steps if self._sum_steps > 0 else None

    def time_in(self, state: str, end: float | None) -> float:
        """Seconds spent in `state`, the current interval counted up to `end` (now for a live run,
        the last event's time for one that is over)."""
        total = self.spent.get(state, 0.0)
        if self.state == state and self.since is not None and end is not None and end > self.since:
            total += end - self.since
        return total
