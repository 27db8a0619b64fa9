"""The checkpoint index (hrm.run.ckpt_index and the writer's prune): "latest" is the highest step on
the live branch, in write order from index.json, never by file time; a prune drops files from the
index before deleting them, so a kill at any point leaves no entry for a missing file."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from hrm.run.ckpt_index import latest_checkpoint, list_checkpoints, live_branch
from hrm.train import checkpoint as ckpt_mod
from hrm.train.checkpoint import CheckpointWriter, load_checkpoint


def _write(tmp_path: Path, steps: list[int], keep_last: int = 10, scores: dict[int, float] | None = None) -> Path:
    writer = CheckpointWriter(tmp_path, keep_last=keep_last)
    for step in steps:
        writer.save({"step": step, "w": torch.full((4,), float(step))}, score=(scores or {}).get(step))
        writer.wait()
    return tmp_path / "checkpoints"


def _index(ckpts: Path) -> dict:
    return json.loads((ckpts / "index.json").read_text())


def test_touching_an_old_checkpoint_does_not_make_it_latest(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [100, 200, 300])
    future = time.time() + 3600
    os.utime(ckpts / "step-00000100.pt", (future, future))  # a backup tool, a copy with -p, a touch
    assert latest_checkpoint(tmp_path).name == "step-00000300.pt"
    shutil.copy2(ckpts / "step-00000200.pt", tmp_path / "x.pt")
    os.replace(tmp_path / "x.pt", ckpts / "step-00000200.pt")  # rewritten in place, newest mtime
    assert latest_checkpoint(tmp_path).name == "step-00000300.pt"


def test_latest_is_the_highest_step_of_the_live_branch(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [1000, 2000, 3000, 2500, 2700])  # resumed from 2000: 3000 is abandoned
    assert [c.step for c in live_branch(tmp_path)] == [1000, 2000, 2500, 2700]
    assert latest_checkpoint(tmp_path).name == "step-00002700.pt"
    old = time.time() - 3600
    os.utime(ckpts / "step-00002700.pt", (old, old))
    assert latest_checkpoint(tmp_path).name == "step-00002700.pt"
    assert [c.step for c in list_checkpoints(tmp_path)] == [1000, 2000, 2500, 2700, 3000]


def test_a_file_the_index_has_not_seen_yet_is_the_newest(tmp_path: Path) -> None:
    """Killed between the rename and the index update: the renamed file is complete and newest."""
    ckpts = _write(tmp_path, [10, 20, 30, 15])
    index_before = _index(ckpts)
    shutil.copy(ckpts / "step-00000015.pt", ckpts / "step-00000018.pt")
    assert _index(ckpts) == index_before
    assert latest_checkpoint(tmp_path).name == "step-00000018.pt"


def test_without_an_index_latest_is_the_highest_step(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [5, 9, 7])
    (ckpts / "index.json").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000009.pt"
    (ckpts / "index.json").write_text("{garbage")
    assert latest_checkpoint(tmp_path).name == "step-00000009.pt"


class _Killed(BaseException):
    """Stands in for SIGKILL at one file-system change."""


@pytest.mark.parametrize("kill_at", range(1, 8))
def test_a_kill_at_any_point_of_a_prune_leaves_no_entry_for_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: int
) -> None:
    ckpts = _write(tmp_path, [1, 2, 3], keep_last=3)
    writer = CheckpointWriter(tmp_path, keep_last=1)
    final = ckpts / "step-00000004.pt"
    torch.save({"step": 4}, final)
    changes = {"n": 0}
    real_unlink, real_write = Path.unlink, ckpt_mod._write_json_atomic

    def count() -> None:
        changes["n"] += 1
        if changes["n"] == kill_at:
            raise _Killed

    def unlink(self: Path, missing_ok: bool = False) -> None:
        count()
        real_unlink(self, missing_ok=missing_ok)

    def write(path: Path, data: object) -> None:
        count()
        real_write(path, data)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(ckpt_mod, "_write_json_atomic", write)
    try:
        writer._record_and_prune(final, 4, None, final.stat().st_size)
        finished = True
    except _Killed:
        finished = False
    monkeypatch.undo()
    index = _index(ckpts)
    named = [e["file"] for e in index["checkpoints"]]
    assert all((ckpts / n).is_file() for n in named), (kill_at, named)
    for c in list_checkpoints(tmp_path):  # whatever a reader is offered loads
        assert load_checkpoint(c.path)["step"] == c.step
    assert latest_checkpoint(tmp_path).name == "step-00000004.pt"
    if finished:
        assert named == ["step-00000004.pt"] and "deleting" not in index
    # the next writer finishes an interrupted prune
    CheckpointWriter(tmp_path, keep_last=1)
    index = _index(ckpts)
    assert "deleting" not in index
    assert all((ckpts / e["file"]).is_file() for e in index["checkpoints"])


def test_files_being_deleted_are_never_offered(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [1, 2, 3])
    index = _index(ckpts)
    index["checkpoints"] = [e for e in index["checkpoints"] if e["file"] != "step-00000003.pt"]
    index["deleting"] = ["step-00000003.pt"]
    (ckpts / "index.json").write_text(json.dumps(index))
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 2]
    assert latest_checkpoint(tmp_path).name == "step-00000002.pt"
    CheckpointWriter(tmp_path)
    assert not (ckpts / "step-00000003.pt").exists() and "deleting" not in _index(ckpts)


def test_prune_keeps_the_last_written_and_the_best(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [100, 200, 300, 150], keep_last=2, scores={100: 0.9, 300: 0.1})
    assert sorted(e["file"] for e in _index(ckpts)["checkpoints"]) == [
        "step-00000100.pt",
        "step-00000150.pt",
        "step-00000300.pt",
    ]
    assert latest_checkpoint(tmp_path).name == "step-00000150.pt"


def test_a_branch_point_makes_the_resumed_checkpoint_latest_until_the_new_branch_writes(tmp_path: Path) -> None:
    ckpts = _write(tmp_path, [1000, 2000, 3000], keep_last=3)
    ckpt_mod.mark_branch_point(ckpts, "step-00002000.pt")  # resumed from 2000; nothing written since
    assert latest_checkpoint(tmp_path).name == "step-00002000.pt"
    assert [c.step for c in live_branch(tmp_path)] == [1000, 2000]
    assert [e["step"] for e in _index(ckpts)["checkpoints"]] == [1000, 3000, 2000]  # the write order moved
    writer = CheckpointWriter(tmp_path, keep_last=3)
    writer.save({"step": 2500, "w": torch.zeros(1)})
    writer.wait()
    # keep_last keeps the three latest writes (the abandoned 3000 among them, still on disk to go back to)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2000, 2500, 3000]
    assert [c.step for c in live_branch(tmp_path)] == [2000, 2500]
    ckpt_mod.mark_branch_point(ckpts, "step-00002500.pt")  # already the newest write: nothing changes
    assert [e["step"] for e in _index(ckpts)["checkpoints"]] == [3000, 2000, 2500]
