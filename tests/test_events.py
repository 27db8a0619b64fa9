from __future__ import annotations

import json
import math
import time
from pathlib import Path

from support.train import wait_for

from hrm.run.events import EventTailer, EventWriter, drop_superseded, read_events


def test_writer_stamps_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("run", 0, task="sudoku", grid=[9, 9])
        w.write("train", 1, loss=1.5, lr=1e-3, bad=math.nan)
        w.write("status", 1, state="running")
    events = read_events(path)
    assert [e["kind"] for e in events] == ["run", "train", "status"]
    assert all(e["v"] == 1 and isinstance(e["t"], float) for e in events)
    assert events[0]["grid"] == [9, 9]
    assert events[1]["loss"] == 1.5 and events[1]["bad"] is None  # NaN is not JSON: null


def test_train_is_buffered_but_other_kinds_flush_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, flush_s=60.0)
    w.write("status", 0, state="starting")  # flushes (and the first write flushes anyway)
    w.write("train", 1, loss=1.0)
    w.write("train", 2, loss=0.9)
    assert [e["step"] for e in read_events(path)] == [0]  # train lines still buffered
    w.write("log", 2, level="info", message="hello")
    assert [e["kind"] for e in read_events(path)] == ["status", "train", "train", "log"]
    w.close()


def test_buffered_train_lines_appear_within_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, flush_s=0.1)
    w.write("train", 1, loss=1.0)
    w.write("train", 2, loss=0.9)  # the writer goes quiet (a long eval): the timer still flushes
    wait_for(lambda: len(read_events(path)) >= 2, 30, "the timer's flush", interval=0.01)
    assert [e["step"] for e in read_events(path)] == [1, 2]
    w.close()
    w.close()  # idempotent


def test_tailer_keeps_torn_line_pending_and_follows_growth(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTailer(path)
    assert tail.read() == []  # missing file reads as empty
    full = json.dumps({"v": 1, "kind": "train", "step": 1}) + "\n"
    torn = json.dumps({"v": 1, "kind": "train", "step": 2})
    path.write_text(full + torn[:10])
    assert [e["step"] for e in tail.read()] == [1]
    assert tail.pending_bytes == 10
    assert tail.read() == []  # nothing new
    with open(path, "a") as f:
        f.write(torn[10:] + "\n" + json.dumps({"kind": "eval", "step": 3}) + "\n")
    assert [e["step"] for e in tail.read()] == [2, 3]
    assert tail.offset == path.stat().st_size and tail.pending_bytes == 0
    # read_events ignores a torn last line
    with open(path, "a") as f:
        f.write('{"kind": "tr')
    assert len(read_events(path)) == 3


def test_tailer_resumes_from_offset_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"step": 1}\nnot json\n[1,2]\n{"step": 2}\n')
    tail = EventTailer(path)
    assert [e["step"] for e in tail.read()] == [1, 2]
    assert tail.bad_lines == 2
    later = EventTailer(path, offset=tail.offset)
    with open(path, "a") as f:
        f.write('{"step": 3}\n')
    assert [e["step"] for e in later.read()] == [3]


def test_new_writer_terminates_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind":"train","step":1}\n{"kind":"tra')  # writer killed mid-line
    with EventWriter(path) as w:
        w.write("run", 1, resumed_from="checkpoints/step-00000001.pt")
    tail = EventTailer(path)
    events = tail.read()
    assert [e["kind"] for e in events] == ["train", "run"]
    assert tail.bad_lines == 1


def test_tailer_restarts_when_file_replaced(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    tail = EventTailer(path)
    assert len(tail.read()) == 2
    path.write_text('{"step": 9}\n')
    assert [e["step"] for e in tail.read()] == [9]
    # replaced by a new, longer file (another inode): read from its start too
    other = tmp_path / "other.jsonl"
    other.write_text("".join(f'{{"step": {i}}}\n' for i in range(20, 25)))
    other.replace(path)
    assert [e["step"] for e in tail.read()] == [20, 21, 22, 23, 24]


def test_tailer_reads_200k_lines_fast(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = json.dumps(
        {
            "v": 1,
            "t": 1.0,
            "kind": "train",
            "step": 0,
            "loss": 0.5,
            "lr": 1e-4,
            "accuracy": 0.9,
            "exact_accuracy": 0.1,
            "act_steps_mean": 3.2,
        }
    )
    path.write_text((line + "\n") * 200_000)
    # CPU time, not wall time: other jobs share the cores. The figure itself (0.6–1.2 s on these
    # VMs, which vary ±30 %) is measured by bench/ui.py (attach to a 200k-line run); this bound only
    # catches a fall off the one-C-call fast path (per-line parsing costs several times more).
    start = time.process_time()
    events = EventTailer(path).read()
    elapsed = time.process_time() - start
    assert len(events) == 200_000 and events[-1]["act_steps_mean"] == 3.2
    assert elapsed < 3.0, f"reading 200k lines took {elapsed:.2f} s of CPU"


def test_drop_superseded_on_resume() -> None:
    events = [
        {"kind": "run", "step": 0, "resumed_from": None},
        {"kind": "train", "step": 1},
        {"kind": "train", "step": 2},
        {"kind": "train", "step": 3},
        {"kind": "eval", "step": 3},
        {"kind": "run", "step": 2, "resumed_from": "checkpoints/step-00000002.pt"},
        {"kind": "train", "step": 3},
    ]
    kept = drop_superseded(events)
    assert [(e["kind"], e["step"]) for e in kept] == [("run", 0), ("train", 1), ("train", 2), ("run", 2), ("train", 3)]
