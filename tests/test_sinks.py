"""Metric sinks: TensorBoard files read back by tensorboard's own reader, W&B offline runs read
back from their transaction log, fan-out, replay of a real events.jsonl."""

from __future__ import annotations

import struct
import sys

import pytest

from hrm.run.events import EventWriter, read_events
from hrm.train.sinks import (
    FanOutSink,
    NullSink,
    TensorBoardSink,
    WandbSink,
    build_sinks,
    event_scalars,
    replay,
)


def train_event(step: int, loss: float, **extra) -> dict:
    return {
        "v": 1,
        "t": 1700000000.0 + step,
        "kind": "train",
        "step": step,
        "loss": loss,
        "lm_loss": loss * 0.9,
        "lr": 1e-4 * step,
        "accuracy": 0.01 * step,
        "count": 32,
        **extra,
    }


SYSTEM = {
    "v": 1,
    "t": 1.0,
    "kind": "system",
    "step": 2,
    "cpu_percent": 55.5,
    "rss": 123456789,
    "torch_alloc": None,
    "nvml": "NVML not available: no driver",
    "gpus": [{"index": 0, "name": "H100", "gpu_util": 97.0, "mem_used": 1e9, "temp_c": None}],
}
EVAL = {
    "v": 1,
    "t": 2.0,
    "kind": "eval",
    "step": 2,
    "exact_accuracy": 0.25,
    "accuracy": 0.8,
    "split": "test",
    "num_examples": 100,
    "act_steps_hist": [0, 3, 97],
    "samples": [{"input": [1, 2]}],
    "healthy": True,
}


def load_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_scalars_tags_and_leaves_out_non_scalars():
    assert event_scalars(train_event(3, 0.5)) == {
        "train/loss": 0.5,
        "train/lm_loss": 0.45,
        "train/lr": pytest.approx(3e-4),
        "train/accuracy": 0.03,
        "train/count": 32.0,
    }
    assert event_scalars(EVAL) == {"eval/exact_accuracy": 0.25, "eval/accuracy": 0.8, "eval/num_examples": 100.0}
    assert event_scalars(SYSTEM) == {
        "system/cpu_percent": 55.5,
        "system/rss": 123456789.0,
        "system/gpu0/gpu_util": 97.0,
        "system/gpu0/mem_used": 1e9,
    }
    run = {"kind": "run", "step": 0, "num_params": 27275266, "world_size": 2, "config": {"a": 1}, "resumed_from": None}
    assert event_scalars(run) == {"run/num_params": 27275266.0, "run/world_size": 2.0}
    assert event_scalars({"kind": "status", "step": 5, "state": "paused"}) == {}
    assert event_scalars(train_event(1, float("nan"))).get("train/loss") is None


def test_tensorboard_sink_values_read_back_by_tensorboard(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    events = [train_event(s, 1.0 / s) for s in range(1, 6)] + [SYSTEM, EVAL]
    for e in events:
        sink.log_event(e)
    sink.close()
    got = load_scalars(tmp_path / "tb")
    assert set(got) == {tag for e in events for tag in event_scalars(e)}
    for e in events:
        for tag, value in event_scalars(e).items():
            step_values = dict(got[tag])
            assert step_values[e["step"]] == pytest.approx(value, rel=1e-6)  # TB stores float32
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5]


def test_tensorboard_sink_resume_supersedes_later_steps(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    for s in range(1, 6):
        sink.log_event(train_event(s, 10.0 + s))
    sink.close()  # the trainer died after step 5; a new trainer resumes from the step-3 checkpoint
    sink = TensorBoardSink(tmp_path / "tb")
    sink.log_event({"kind": "run", "step": 3, "resumed_from": "checkpoints/step-00000003.pt", "num_params": 9})
    for s in (4, 5, 6):
        sink.log_event(train_event(s, 20.0 + s))
    sink.close()
    got = dict(load_scalars(tmp_path / "tb")["train/loss"])
    assert got == {1: 11.0, 2: 12.0, 3: 13.0, 4: 24.0, 5: 25.0, 6: 26.0}


def test_replay_of_a_real_events_file(tmp_path):
    path = tmp_path / "run" / "events.jsonl"
    with EventWriter(path) as w:
        w.write("run", 0, num_params=1000, world_size=1, resumed_from=None, config={"x": 1})
        for s in range(1, 4):
            w.write("train", s, loss=3.0 - s, lr=0.1)
        w.write("status", 3, state="stopping")
        w.write("run", 2, num_params=1000, world_size=1, resumed_from="checkpoints/step-00000002.pt")
        w.write("train", 3, loss=7.0, lr=0.1)
    with open(path, "a") as f:
        f.write('{"v":1,"kind":"train","step":4,"lo')  # torn last line: the writer was killed
    sink = TensorBoardSink(tmp_path / "tb")
    assert replay(path, sink) == 6  # run, train 1, train 2, status, run, train 3 (the new one)
    sink.close()
    assert load_scalars(tmp_path / "tb")["train/loss"] == [(1, 2.0), (2, 1.0), (3, 7.0)]
    assert len(read_events(path)) == 7


class Recorder:
    def __init__(self) -> None:
        self.events, self.closed = [], False

    def log_event(self, event):
        self.events.append(event)

    def close(self):
        self.closed = True


class Broken(Recorder):
    def log_event(self, event):
        raise OSError("disk full")


def test_fan_out_drops_a_failing_sink_and_keeps_the_rest(caplog):
    good, bad = Recorder(), Broken()
    fan = FanOutSink([bad, good, NullSink()])
    fan.log_event(train_event(1, 1.0))
    fan.log_event(train_event(2, 0.5))
    fan.close()
    assert [e["step"] for e in good.events] == [1, 2] and good.closed
    assert caplog.text.count("metric sink Broken failed") == 1


def test_build_sinks_from_the_run_config(tmp_path):
    from hrm.run.config import SinksConfig

    assert isinstance(build_sinks(SinksConfig(), tmp_path), NullSink)
    sink = build_sinks(SinksConfig(tensorboard=True), tmp_path)
    assert isinstance(sink, TensorBoardSink)
    sink.log_event(train_event(1, 0.75))
    sink.log("train", 2, {"loss": 0.5, "lr": 1e-4})  # the trainer's (kind, step, fields) form
    sink.close()
    assert load_scalars(tmp_path / "tensorboard")["train/loss"] == [(1, 0.75), (2, 0.5)]


def test_wandb_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'hrm-tui\[wandb\]'"):
        WandbSink(tmp_path)


# ---------------------------------------------------------------- W&B offline
def read_wandb_records(path):
    """Records of a W&B transaction log (LevelDB-log framing: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payload, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(payload)
            records.append(rec)
            payload = b""
    return records


@pytest.mark.slow  # imports wandb and runs its offline service
def test_wandb_sink_offline_writes_the_values(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'hrm-tui[wandb]')")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    sink = WandbSink(tmp_path / "run", name="sudoku-test")
    sink.log_event({"kind": "run", "step": 0, "num_params": 1234, "config": {"optim": {"lr": 7e-5}}})
    for s in (1, 2, 3):
        sink.log_event(train_event(s, 1.0 / s))
        if s == 2:
            sink.log_event(EVAL)  # eval after step 2's train event, as the trainer writes them
    sink.log_event(SYSTEM)  # sampled at step 2, written after step 3: W&B steps only go forward
    run_dir = sink.run_dir
    sink.close()
    assert run_dir is not None and run_dir.name.startswith("offline-run-")
    assert run_dir.is_relative_to(tmp_path / "run")
    (log_file,) = run_dir.glob("run-*.wandb")
    records = read_wandb_records(log_file)
    history = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): i.value_json for i in rec.history.item}
            history.append(items)
    import json

    rows = {int(json.loads(h["_step"])): {k: json.loads(v) for k, v in h.items()} for h in history}
    for s in (1, 2, 3):
        assert rows[s]["train/loss"] == pytest.approx(1.0 / s, rel=1e-12)
        assert rows[s]["train/lr"] == pytest.approx(1e-4 * s, rel=1e-12)
    assert rows[0]["run/num_params"] == 1234
    assert rows[2]["eval/exact_accuracy"] == 0.25 and rows[2]["train/loss"] == 0.5  # joined step 2's row
    assert rows[3]["system/gpu0/gpu_util"] == 97.0 and rows[3]["train/loss"] == pytest.approx(1 / 3)
    configs = [rec.config for rec in records if rec.WhichOneof("record_type") == "config"]
    assert any(json.loads(u.value_json) == {"lr": 7e-5} for c in configs for u in c.update if u.key == "optim")
