from __future__ import annotations

import datetime
import errno
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from hrm.train import checkpoint as ckpt_mod
from hrm.train.checkpoint import (
    CheckpointCorrupt,
    CheckpointWriter,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)


def _state(step: int) -> dict:
    torch.manual_seed(step)
    return {
        "step": step,
        "model": OrderedDict(w=torch.randn(64, 64), b=torch.zeros(64)),
        "optimizers": [{"exp_avg": torch.randn(8)}],
        "loader": {"epoch": 3, "order": [1, 2, 3]},
        "rng": {"torch": torch.get_rng_state()},
        "config": {"train": {"total_steps": 10}},
    }


def test_save_is_atomic_and_loads_back(tmp_path: Path) -> None:
    done: list[dict] = []
    writer = CheckpointWriter(tmp_path, keep_last=3, on_done=done.append)
    state = _state(1000)
    path = writer.save(state)
    writer.wait()
    assert path == tmp_path / "checkpoints" / "step-00001000.pt"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name != "index.json"] == [path.name]
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["loader"] == state["loader"]
    assert done == [
        {"path": str(path), "step": 1000, "size": path.stat().st_size, "seconds": done[0]["seconds"], "score": None}
    ]
    assert done[0]["seconds"] >= 0


def test_snapshot_is_taken_before_save_returns(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "checkpoints", keep_last=2)
    state = _state(5)
    expected = state["model"]["w"].clone()
    writer.save(state)
    state["model"]["w"].add_(1.0)  # training goes on and mutates parameters in place
    writer.wait()
    assert torch.equal(load_checkpoint(latest_checkpoint(tmp_path))["model"]["w"], expected)


def test_prune_keeps_last_k_and_the_best(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path, keep_last=2)
    scores = {100: 0.10, 200: 0.55, 300: 0.20, 400: None, 500: 0.30}
    for step, score in scores.items():
        writer.save({"step": step, "w": torch.ones(4) * step}, score=score)
    writer.wait()
    found = list_checkpoints(tmp_path)
    assert [c.step for c in found] == [200, 400, 500]
    assert [c.step for c in found if c.best] == [200]
    assert best_checkpoint(tmp_path).name == "step-00000200.pt"
    assert latest_checkpoint(tmp_path).name == "step-00000500.pt"
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["best"] == "step-00000200.pt" and [e["step"] for e in index["checkpoints"]] == [200, 400, 500]


def test_latest_is_the_live_branch_after_resume_from_an_older_checkpoint(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path, keep_last=5)
    for step in (1000, 2000, 3000):
        writer.save({"step": step})
    writer.wait()
    writer.save({"step": 2500})  # resumed from 2000, then checkpointed
    writer.wait()
    assert latest_checkpoint(tmp_path).name == "step-00002500.pt"


def test_temp_files_never_count_and_stale_ones_are_removed(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / ".tmp-step-00009000.pt.12345").write_bytes(b"half a checkpoint")
    (ckpts / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) is None and list_checkpoints(tmp_path) == []
    CheckpointWriter(tmp_path)
    assert not (ckpts / ".tmp-step-00009000.pt.12345").exists()


def test_truncated_and_corrupt_files_are_reported_not_loaded(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path)
    path = writer.save(_state(7))
    writer.wait()
    data = path.read_bytes()
    for name, blob in [("truncated", data[: len(data) // 2]), ("empty", b""), ("tail", data[:-10])]:
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(blob)
        with pytest.raises(CheckpointCorrupt, match=f"{name}.pt"):
            load_checkpoint(bad)
    flipped = bytearray(data)
    middle = data.index(b"data/0") + 200  # inside the first tensor's bytes
    flipped[middle] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointCorrupt, match="CRC"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointCorrupt, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"when": datetime.date(2026, 1, 1)}, path)  # an arbitrary object: not weights_only-safe
    with pytest.raises(CheckpointCorrupt, match="evil.pt"):
        load_checkpoint(path)


def test_full_disk_removes_temp_and_keeps_older_checkpoints(tmp_path: Path, monkeypatch) -> None:
    errors: list[dict] = []
    done: list[dict] = []
    writer = CheckpointWriter(tmp_path, keep_last=1, on_done=done.append, on_error=errors.append)
    good = writer.save(_state(1))
    writer.wait()
    good_bytes = good.read_bytes()

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(10)}, f)  # some bytes reach the disk first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    writer.save(_state(2))
    writer.wait()
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)

    assert len(errors) == 1 and errors[0]["step"] == 2
    why = errors[0]["error"]  # one line: the problem, the file, the way out
    assert why.startswith("no space left on device writing ") and "step-00000002.pt" in why, why
    assert "--resume latest" in why and "\n" not in why
    assert "no space left on device" in writer.last_error and writer.failed_steps == {2: why}
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["index.json", "step-00000001.pt"]  # no temp file, no step 2, step 1 untouched
    assert good.read_bytes() == good_bytes and len(done) == 1
    assert latest_checkpoint(tmp_path) == good


def test_torch_zip_writer_error_on_a_full_disk_is_called_no_space(tmp_path: Path, monkeypatch) -> None:
    """torch reports ENOSPC as an internal enforce failure; the free space tells what happened."""
    from hrm.train.checkpoint import describe_write_error

    class VFS:
        f_bavail, f_frsize = 3, 4096  # 12 KiB free

    monkeypatch.setattr(ckpt_mod.os, "statvfs", lambda _p: VFS())
    exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 518656 vs 518548")
    why = describe_write_error(exc, tmp_path / "checkpoints" / "step-00000003.pt")
    assert why.startswith("no space left on device writing ") and "12.0 KiB free" in why and "enforce" not in why


@pytest.mark.slow  # a torch process killed mid-write
def test_killed_writer_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    """SIGKILL during a write: whatever is on disk under a step name loads."""
    code = (
        "import sys, torch\n"
        "from hrm.train.checkpoint import CheckpointWriter\n"
        "w = CheckpointWriter(sys.argv[1], keep_last=100)\n"
        "for step in range(1, 10000):\n"
        "    w.save({'step': step, 'w': torch.randn(256, 256)})\n"
        "    if step == 3: print('ready', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    found = list_checkpoints(tmp_path)
    assert len(found) >= 2
    for c in found:
        assert load_checkpoint(c.path)["step"] == c.step
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == max(c.step for c in found)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointWriter(tmp_path, keep_last=0)
    writer = CheckpointWriter(tmp_path)
    with pytest.raises(ValueError, match="needs a step"):
        writer.save({"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="must be inside"):
        writer.save({"step": 1}, tmp_path / "elsewhere" / "step-00000001.pt")
    assert os.listdir(tmp_path / "checkpoints") == []


def test_reused_snapshot_buffers_hold_each_saves_own_values(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path, keep_last=5)
    state = _state(1)
    first = writer.save(state)
    buffer = writer._last_snapshot["model"]["w"]
    state["model"]["w"].mul_(2.0)
    state["step"] = 2
    state["loader"]["order"].append(4)
    second = writer.save(state)
    assert writer._last_snapshot["model"]["w"] is buffer  # copied in place, no new allocation
    state["model"]["w"].mul_(2.0)  # training goes on while step 2 is written
    writer.wait()
    one, two = load_checkpoint(first), load_checkpoint(second)
    assert torch.equal(two["model"]["w"], one["model"]["w"] * 2.0)
    assert one["loader"]["order"] == [1, 2, 3] and two["loader"]["order"] == [1, 2, 3, 4]
    assert (one["step"], two["step"]) == (1, 2)
