from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm.data.format import (
    DIHEDRAL_INVERSE,
    DatasetError,
    OutputExistsError,
    PuzzleDatasetMetadata,
    atomic_output_dir,
    dataset_summary,
    dihedral_transform,
    groups_to_arrays,
    inverse_dihedral_transform,
    load_split,
    read_metadata,
    write_identifiers,
    write_split,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (real datasets) is absent")


def _meta(seq_len: int, groups: int, **kw) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=6,
        seq_len=seq_len,
        num_puzzle_identifiers=1,
        total_groups=groups,
        mean_puzzle_examples=1.0,
        sets=["all"],
        **kw,
    )


@needs_shared
@pytest.mark.parametrize("split", ["train", "test"])
def test_real_maze_arrays_load_as_they_are(split):
    root = SHARED / "maze-30x30-hard-1k" / "npy"
    meta = read_metadata(root, split)
    assert (meta.vocab_size, meta.seq_len, meta.total_groups) == (6, 900, 1000)
    a = load_split(root, split)
    assert a["inputs"].shape == (1000, 900) and a["inputs"].dtype == np.uint8
    assert isinstance(a["inputs"], np.memmap)
    assert set(np.unique(a["inputs"])) <= {1, 2, 3, 4}
    assert len(a["group_indices"]) == 1001


@needs_shared
def test_real_sudoku_arrays_load_as_they_are():
    # this copy holds the train split's files directly in npy/ (no train/ subdir)
    root = SHARED / "sudoku-extreme-train-1k"
    meta = read_metadata(root, "npy")
    assert (meta.vocab_size, meta.seq_len, meta.total_puzzles) == (11, 81, 1000)
    a = load_split(root, "npy")
    assert a["labels"].shape == (1000, 81)
    assert a["labels"].min() >= 2  # every label cell is a digit token


def test_round_trip_groups_of_several_puzzles(tmp_path):
    rng = np.random.default_rng(0)
    groups = [[(rng.integers(1, 6, 16), rng.integers(1, 6, 16)) for _ in range(k)] for k in (1, 3, 2)]
    arrays = groups_to_arrays(groups)
    assert arrays["group_indices"].tolist() == [0, 1, 4, 6]
    assert arrays["puzzle_indices"].tolist() == list(range(7))
    assert arrays["inputs"].dtype == np.uint8
    meta = _meta(16, 3, total_puzzles=6)
    write_split(tmp_path, "train", {"all": arrays}, meta)
    write_identifiers(tmp_path, ["<blank>"])
    back = load_split(tmp_path, "train", mmap=False)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    assert read_metadata(tmp_path, "train") == meta
    assert json.loads((tmp_path / "identifiers.json").read_text()) == ["<blank>"]
    assert dataset_summary(tmp_path) == {"train": dict(examples=6, puzzles=6, groups=3, seq_len=16, vocab_size=6)}


def test_int64_arrays_are_accepted(tmp_path):
    # the reference builder writes int64 token arrays when it augments
    arrays = groups_to_arrays([[(np.ones(4), np.full(4, 2))]])
    arrays["inputs"] = arrays["inputs"].astype(np.int64)
    arrays["labels"] = arrays["labels"].astype(np.int64)
    write_split(tmp_path, "train", {"all": arrays}, _meta(4, 1))
    assert load_split(tmp_path, "train")["inputs"].dtype == np.int64


def test_metadata_without_total_puzzles_is_written_like_the_old_reference(tmp_path):
    write_split(tmp_path, "test", {"all": groups_to_arrays([[(np.ones(4), np.ones(4))]])}, _meta(4, 1))
    d = json.loads((tmp_path / "test" / "dataset.json").read_text())
    assert "total_puzzles" not in d and d["sets"] == ["all"]


def test_inconsistent_arrays_are_refused(tmp_path):
    arrays = groups_to_arrays([[(np.ones(4), np.ones(4))], [(np.ones(4), np.ones(4))]])
    write_split(tmp_path, "train", {"all": arrays}, _meta(4, 2))
    np.save(tmp_path / "train" / "all__puzzle_indices.npy", np.array([0, 1], dtype=np.int32))
    with pytest.raises(DatasetError, match="puzzle_indices"):
        load_split(tmp_path, "train")
    with pytest.raises(DatasetError, match="hrm-data"):
        read_metadata(tmp_path, "test")
    with pytest.raises(ValueError, match="seq_len=5"):
        write_split(tmp_path, "x", {"all": arrays}, _meta(5, 2))


def test_existing_output_is_refused_without_force(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_output_dir(out, force=False):
            pass
    assert (out / "keep").read_text() == "old"
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert sorted(p.name for p in out.iterdir()) == ["new"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_failed_build_leaves_nothing_and_keeps_the_old(tmp_path, exc):
    out = tmp_path / "ds"
    with pytest.raises(type(exc)):
        with atomic_output_dir(out, force=False) as tmp:
            (tmp / "half").write_text("x")
            raise exc
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(type(exc)):
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "half").write_text("x")
            raise exc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and (out / "keep").read_text() == "old"


def test_temp_dir_of_a_killed_build_is_cleaned_up(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".ds.tmp-{dead_pid}-abcd1234"
    stale.mkdir()
    with atomic_output_dir(out, force=False) as tmp:
        (tmp / "f").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_dihedral_transforms_form_the_group_with_the_inverse_table():
    a = np.arange(12).reshape(3, 4)
    outs = [dihedral_transform(a, t) for t in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
    np.testing.assert_array_equal(outs[1], np.rot90(a))
    np.testing.assert_array_equal(outs[6], a.T)
    np.testing.assert_array_equal(outs[7], np.rot90(a, 2).T)  # anti-transpose
    for t in range(8):
        np.testing.assert_array_equal(inverse_dihedral_transform(outs[t], t), a)
        assert DIHEDRAL_INVERSE[DIHEDRAL_INVERSE[t]] == t
    with pytest.raises(ValueError):
        dihedral_transform(a, 8)


def test_a_ctrl_c_swallowed_by_a_finalizer_still_publishes_nothing(tmp_path) -> None:
    """CPython drops a KeyboardInterrupt raised inside __del__; the hrm-data guard remembers it, so the
    build stops at the next check and the half-built directory is removed."""
    out = tmp_path / "ds"
    script = f"""
import os, signal
from pathlib import Path
from hrm import progress
from hrm.data.format import atomic_output_dir
progress.install_interrupt_guard()
class Bomb:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
try:
    with atomic_output_dir(Path({str(out)!r}), False) as tmp:
        (tmp / "part").write_text("x")
        Bomb()
        print("swallowed", flush=True)
except KeyboardInterrupt:
    print("stopped", flush=True)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["swallowed", "stopped"], r.stderr
    assert list(tmp_path.iterdir()) == []
