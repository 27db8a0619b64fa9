"""hrm.run.status: the state file the trainer rewrites, the backwards scan of events.jsonl for runs
without it, and the liveness rule (a live state whose trainer is gone reads `died`). The trainer's
own writes are checked on real runs in test_run_states.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrm.run import status as S
from hrm.run.events import EventWriter
from hrm.run.layout import events_path, state_path
from hrm.run.lock import acquire, release


def _events(run_dir: Path, rows: list[tuple[str, int, dict]]) -> None:
    with EventWriter(events_path(run_dir)) as w:
        for kind, step, fields in rows:
            w.write(kind, step, **fields)


def test_states_tuple_and_live_set() -> None:
    assert S.STATES == (
        "starting",
        "building",
        "running",
        "paused",
        "stopping",
        "stopped",
        "finished",
        "failed",
        "died",
    )
    assert S.LIVE_STATES == {"starting", "building", "running", "paused", "stopping"}
    assert S.LIVE_STATES.isdisjoint(S.ENDED_STATES) and S.LIVE_STATES | S.ENDED_STATES == set(S.STATES)


class _Clock:
    """status.py's view of `time`: wall time as it is, a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.mono = 1000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return time.time()


def test_state_file_round_trip_with_a_live_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(S, "time", clock)
    acquire(tmp_path)  # this process holds the run, as a trainer does
    try:
        f = S.StateFile(tmp_path, total_steps=100)
        f.set("running", step=0)
        clock.mono += 2.5  # 2.5 s of training
        f.at_step(7, force=True)
        st = S.read_status(tmp_path)
        assert (st.state, st.step, st.total_steps, st.live, st.source) == ("running", 7, 100, True, "state")
        f.set("paused", reason="pause command")
        st = S.read_status(tmp_path)
        assert st.state == "paused" and st.reason == "pause command" and st.live
        assert st.running_s == pytest.approx(2.5) and st.paused_time() >= st.paused_s
        f.set("stopped", step=9, reason="stop command", checkpoint="checkpoints/step-00000009.pt")
    finally:
        release(tmp_path)
    st = S.read_status(tmp_path)
    assert (st.state, st.step, st.live, st.checkpoint) == ("stopped", 9, False, "checkpoints/step-00000009.pt")
    data = json.loads(state_path(tmp_path).read_text())
    assert data["pid"] and data["host"] and data["t"] > 0
    # A new trainer of the same directory carries the counters on.
    g = S.StateFile(tmp_path)
    assert g.running_s == pytest.approx(st.running_s, abs=1e-3) and g.paused_s == pytest.approx(st.paused_s, abs=1e-3)


def test_running_state_without_its_trainer_is_died_at_the_last_logged_step(tmp_path: Path) -> None:
    _events(tmp_path, [("status", 0, {"state": "running"})] + [("train", s, {"loss": 1.0}) for s in range(1, 123)])
    st = S.read_status(tmp_path)  # no state file: from the events
    assert (st.state, st.step, st.live, st.source) == ("died", 122, False, "events")
    # The state file's step is written at most twice a second: the events may be ahead of it.
    f = S.StateFile(tmp_path, total_steps=500)
    f.set("running", step=120)
    st = S.read_status(tmp_path)
    assert (st.state, st.step, st.total_steps) == ("died", 122, 500)
    assert "running" in (st.reason or "")


def test_a_trainer_of_another_process_that_exited_reads_died(tmp_path: Path) -> None:
    code = (
        "import sys; from hrm.run.lock import acquire; from hrm.run.status import StateFile;"
        f"acquire({str(tmp_path)!r}); f = StateFile({str(tmp_path)!r}, 10); f.set('running', 3)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    st = S.read_status(tmp_path)
    assert st.state == "died" and st.step == 3 and not st.live


def test_ended_states_from_events_without_a_state_file(tmp_path: Path) -> None:
    _events(
        tmp_path,
        [
            ("run", 0, {"total_steps": 40}),
            ("status", 0, {"state": "running"}),
            *[("train", s, {"loss": 1.0}) for s in range(1, 41)],
            ("status", 40, {"state": "finished", "reason": "completed 40 steps"}),
        ],
    )
    st = S.read_status(tmp_path)
    assert (st.state, st.step, st.total_steps, st.reason, st.live) == ("finished", 40, 40, "completed 40 steps", False)


def test_nothing_recorded_is_starting_not_died(tmp_path: Path) -> None:
    st = S.read_status(tmp_path)
    assert (st.state, st.step, st.source, st.live) == ("starting", 0, "none", False)
    acquire(tmp_path)
    try:
        assert S.read_status(tmp_path).live
    finally:
        release(tmp_path)


def test_a_new_trainer_on_an_ended_run_reads_starting(tmp_path: Path) -> None:
    """A resume validates its checkpoint before it writes anything: meanwhile the old end is not news."""
    code = (
        "from hrm.run.status import StateFile;"
        f"f = StateFile({str(tmp_path)!r}, 10); f.set('stopped', 4, reason='stop command')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert S.read_status(tmp_path).state == "stopped"
    acquire(tmp_path)
    try:
        st = S.read_status(tmp_path)
        assert (st.state, st.live, st.step) == ("starting", True, 4)
    finally:
        release(tmp_path)


def test_backwards_scan_finds_the_newest_status_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    rows = [("run", 0, {"total_steps": 5000, "config": {"x": "y" * 300}}), ("status", 0, {"state": "running"})]
    rows += [("train", s, {"loss": 1.0, "note": "z" * (s % 50)}) for s in range(1, 3001)]
    rows += [("status", 3000, {"state": "paused", "reason": "pause command"})]
    rows += [("system", 3000, {"cpu": 1.0})]
    _events(tmp_path, rows)
    with open(events_path(tmp_path), "ab") as f:
        f.write(b'{"v":1,"t":1.0,"kind":"status","step":3001,"state":"runn')  # a writer killed mid-line
    st = S.status_from_events(tmp_path)
    assert (st.state, st.step, st.total_steps, st.reason) == ("paused", 3000, 5000, "pause command")
    assert S.last_event(events_path(tmp_path))["kind"] == "system"


def test_status_text_inside_a_field_is_not_a_status_event(tmp_path: Path) -> None:
    _events(
        tmp_path,
        [
            ("status", 0, {"state": "finished", "reason": "done"}),
            ("log", 0, {"message": '{"kind":"status","state":"running"}'}),
        ],
    )
    assert S.status_from_events(tmp_path).state == "finished"


def test_unwritable_state_file_is_remembered_not_raised(tmp_path: Path) -> None:
    f = S.StateFile(tmp_path / "gone")  # the directory does not exist: every write fails
    f.set("running", step=1)
    assert f.last_error and "gone" in f.last_error
