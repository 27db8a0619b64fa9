"""The reference on-disk dataset format (HRM-SPEC §5.1), torch-free.

Layout: ``<root>/<split>/dataset.json`` plus, per set name, ``<set>__inputs.npy``, ``<set>__labels.npy``,
``<set>__puzzle_identifiers.npy``, ``<set>__puzzle_indices.npy`` and ``<set>__group_indices.npy``;
``<root>/identifiers.json`` maps identifier → name. Group ⊃ puzzles ⊃ examples (CSR offsets).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hrm.progress import raise_if_interrupted

log = logging.getLogger(__name__)

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset on disk is missing, incomplete or inconsistent."""


class OutputExistsError(FileExistsError):
    """The output directory of a build already exists and --force was not given."""


@dataclass
class PuzzleDatasetMetadata:
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    sets: list[str] = field(default_factory=lambda: ["all"])
    total_puzzles: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["total_puzzles"] is None:  # older reference metadata has no such field
            del d["total_puzzles"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PuzzleDatasetMetadata:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        optional = ("total_puzzles", "ignore_label_id", "sets")
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k not in optional]
        if missing:
            raise DatasetError(f"dataset.json lacks the field(s) {', '.join(missing)}")
        return cls(**known)


def _split_dir(root: Path | str, split: str) -> Path:
    return Path(root) / split


def read_metadata(root: Path | str, split: str) -> PuzzleDatasetMetadata:
    path = _split_dir(root, split) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: {root} is not a built dataset with a '{split}' split "
            f"(build one with `hrm-data sudoku|maze --out DIR`)"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable dataset metadata ({e})") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a JSON object, found {type(d).__name__}")
    return PuzzleDatasetMetadata.from_dict(d)


def _check_arrays(arrays: dict[str, np.ndarray], seq_len: int, where: str) -> None:
    """Raise DatasetError unless the five arrays form a consistent group ⊃ puzzle ⊃ example tree."""
    missing = [f for f in FIELDS if f not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing array(s) {', '.join(missing)}")
    for name, a in arrays.items():
        if not np.issubdtype(a.dtype, np.integer):
            raise DatasetError(f"{where}: {name} has dtype {a.dtype}; expected an integer dtype")
    inp, lab = arrays["inputs"], arrays["labels"]
    if inp.ndim != 2 or inp.shape != lab.shape or inp.shape[1] != seq_len:
        raise DatasetError(f"{where}: inputs {inp.shape} and labels {lab.shape} must both be [N, seq_len={seq_len}]")
    pidx, gidx, pid = arrays["puzzle_indices"], arrays["group_indices"], arrays["puzzle_identifiers"]
    if pidx.ndim != 1 or len(pidx) != len(pid) + 1 or pidx[0] != 0 or pidx[-1] != len(inp):
        raise DatasetError(
            f"{where}: puzzle_indices must be [N_puzzles+1] offsets from 0 to {len(inp)} "
            f"(found length {len(pidx)}, ends {pidx[:1].tolist()}..{pidx[-1:].tolist()})"
        )
    if gidx.ndim != 1 or len(gidx) < 1 or gidx[0] != 0 or gidx[-1] != len(pid):
        raise DatasetError(f"{where}: group_indices must be offsets from 0 to N_puzzles={len(pid)}")
    if np.any(np.diff(pidx) < 0) or np.any(np.diff(gidx) <= 0):
        raise DatasetError(f"{where}: puzzle_indices must not decrease and every group must hold a puzzle")


def groups_to_arrays(
    groups: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], identifier: int = 0
) -> dict[str, np.ndarray]:
    """Flatten groups of (input, label) puzzles (one example each) into the five CSR arrays."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("groups_to_arrays needs at least one group and no empty group")
    inputs = np.stack([np.asarray(x).reshape(-1) for g in groups for x, _ in g])
    labels = np.stack([np.asarray(y).reshape(-1) for g in groups for _, y in g])
    if inputs.shape != labels.shape:
        raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} differ in shape")
    fits_uint8 = min(int(inputs.min()), int(labels.min())) >= 0 and max(int(inputs.max()), int(labels.max())) < 256
    dtype = np.uint8 if fits_uint8 else np.int32  # the reference's token arrays are uint8
    n = len(inputs)
    sizes = np.array([len(g) for g in groups])
    return {
        "inputs": inputs.astype(dtype),
        "labels": labels.astype(dtype),
        "puzzle_identifiers": np.full(n, identifier, dtype=np.int32),
        "puzzle_indices": np.arange(n + 1, dtype=np.int32),
        "group_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
    }


def write_split(
    root: Path | str, split: str, arrays_by_set: dict[str, dict[str, np.ndarray]], metadata: PuzzleDatasetMetadata
) -> Path:
    """Write ``<root>/<split>/dataset.json`` and the arrays of every set; returns the split directory."""
    if sorted(arrays_by_set) != sorted(metadata.sets):
        raise ValueError(f"metadata.sets {metadata.sets} does not match the sets given {sorted(arrays_by_set)}")
    out = _split_dir(root, split)
    out.mkdir(parents=True, exist_ok=True)
    for set_name, arrays in arrays_by_set.items():
        _check_arrays(arrays, metadata.seq_len, f"{split}/{set_name}")
        for name in FIELDS:
            a = np.asarray(arrays[name])
            if name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
                a = a.astype(np.int32, copy=False)
            np.save(out / f"{set_name}__{name}.npy", a)
    (out / "dataset.json").write_text(json.dumps(metadata.to_dict()))
    return out


def load_split(root: Path | str, split: str, set_name: str = "all", mmap: bool = True) -> dict[str, np.ndarray]:
    """Load one set of one split as the five arrays (memory-mapped by default); any integer dtype is accepted."""
    meta = read_metadata(root, split)
    if set_name not in meta.sets:
        raise DatasetError(f"{_split_dir(root, split)}: no set '{set_name}' (sets: {', '.join(meta.sets)})")
    d = _split_dir(root, split)
    arrays = {}
    for name in FIELDS:
        path = d / f"{set_name}__{name}.npy"
        if not path.is_file():
            raise DatasetError(f"{path} not found: the dataset at {root} is incomplete; rebuild it with --force")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: not a readable .npy array ({e})") from e
    _check_arrays(arrays, meta.seq_len, f"{d}/{set_name}")
    return arrays


def write_identifiers(root: Path | str, names: Sequence[str]) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "identifiers.json").write_text(json.dumps(list(names)))


def dataset_summary(root: Path | str) -> dict[str, dict]:
    """{split: {examples, puzzles, groups, seq_len, vocab_size}} for each split present; raises if none."""
    out = {}
    for split in SPLITS:
        if not (_split_dir(root, split) / "dataset.json").is_file():
            continue
        meta = read_metadata(root, split)
        n_ex = n_pz = n_gr = 0
        for s in meta.sets:
            a = load_split(root, split, s)
            n_ex += len(a["inputs"])
            n_pz += len(a["puzzle_identifiers"])
            n_gr += len(a["group_indices"]) - 1
        out[split] = dict(examples=n_ex, puzzles=n_pz, groups=n_gr, seq_len=meta.seq_len, vocab_size=meta.vocab_size)
    if not out:
        raise DatasetError(f"{root}: no train/ or test/ split with a dataset.json")
    return out


# --- dihedral symmetries (HRM-SPEC §5.1) ---------------------------------------------------------------

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    """0 id, 1 rot90, 2 rot180, 3 rot270, 4 flip-lr, 5 flip-ud, 6 transpose, 7 flip-lr∘rot90 (first two axes)."""
    if tid == 0:
        return arr
    if tid in (1, 2, 3):
        return np.rot90(arr, k=tid)
    if tid == 4:
        return np.fliplr(arr)
    if tid == 5:
        return np.flipud(arr)
    if tid == 6:
        return np.swapaxes(arr, 0, 1)
    if tid == 7:
        return np.fliplr(np.rot90(arr, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


def inverse_dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    return dihedral_transform(arr, DIHEDRAL_INVERSE[tid])


# --- atomic builds --------------------------------------------------------------------------------------


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temps(out: Path) -> None:
    """Delete temp dirs of earlier builds of `out` whose process is gone (e.g. killed with SIGKILL)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def check_output_dir(out: Path | str, force: bool) -> None:
    out = Path(out)
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass --force to replace it (or choose another --out)")


@contextlib.contextmanager
def atomic_output_dir(out: Path | str, force: bool) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success fsync it and rename it to `out`; on any failure remove it.

    An existing non-empty `out` is refused unless `force`, so a finished dataset is never half-overwritten:
    with `force` the old one is replaced only after the new one is complete.
    """
    out = Path(out).absolute()
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        raise_if_interrupted()  # a Ctrl-C swallowed by a finalizer during the build still publishes nothing
        _fsync_tree(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:  # put the previous dataset back
                os.rename(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:  # KeyboardInterrupt and ENOSPC included: never leave a half-built dataset
        shutil.rmtree(tmp, ignore_errors=True)
        raise
