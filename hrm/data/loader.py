"""Training and test batches with the reference sampling (HRM-SPEC §5.2), resumable to the exact batch.

Train: iterator start k (k = 1, 2, ... per set, as the reference counts) draws everything from
``Generator(Philox(seed + k))``: the group order (``epochs_per_iter`` permutations of all groups, concatenated),
then for each visited group one puzzle uniformly, then min(its example count, room left) of its examples
without replacement. Batches fill by walking that order; the final short global batch is dropped; each
rank gets its slice of every global batch. The order of a whole iterator start is computed at once, with
numpy, so a batch costs one gather.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from hrm.data.format import load_split, read_metadata

IGNORE_LABEL_ID = -100


def _collate(
    inputs: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    ignore_label_id: int | None,
    local_batch: int,
    pad_id: int,
    blank_id: int,
) -> dict[str, torch.Tensor]:
    """int32 tensors; labels equal to ignore_label_id → −100; short batches padded to `local_batch`."""
    inputs = inputs.astype(np.int32)
    labels = labels.astype(np.int32)
    if ignore_label_id is not None:
        labels[labels == ignore_label_id] = IGNORE_LABEL_ID
    ids = ids.astype(np.int32)
    pad = local_batch - len(inputs)
    if pad > 0:
        inputs = np.concatenate([inputs, np.full((pad, inputs.shape[1]), pad_id, np.int32)])
        labels = np.concatenate([labels, np.full((pad, labels.shape[1]), IGNORE_LABEL_ID, np.int32)])
        ids = np.concatenate([ids, np.full(pad, blank_id, np.int32)])
    return {
        "inputs": torch.from_numpy(inputs),
        "labels": torch.from_numpy(labels),
        "puzzle_identifiers": torch.from_numpy(ids),
    }


def _local_size(global_batch_size: int, rank: int, world_size: int) -> int:
    if global_batch_size < 1 or world_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the world size {world_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return global_batch_size // world_size


class Plan(NamedTuple):
    """The full global batches of one iterator start."""

    examples: np.ndarray  # [n_batches, B] example indices
    puzzles: np.ndarray  # [n_batches, B] puzzle index of each example
    visits: np.ndarray  # [n_batches] group visits up to and including each batch


def plan_iteration(
    data: dict[str, np.ndarray], global_batch_size: int, rng: np.random.Generator, epochs_per_iter: int = 1
) -> Plan:
    """Every full global batch of one iterator start, drawn from `rng` (see the module docstring)."""
    gidx = np.asarray(data["group_indices"], dtype=np.int64)
    pidx = np.asarray(data["puzzle_indices"], dtype=np.int64)
    n_groups = len(gidx) - 1
    order = np.concatenate([rng.permutation(n_groups) for _ in range(epochs_per_iter)])
    puzzles = rng.integers(gidx[order], gidx[order + 1])  # one puzzle per visited group, uniformly
    sizes = pidx[puzzles + 1] - pidx[puzzles]
    B = global_batch_size
    if (sizes == 1).all():  # Sudoku/Maze: one example per puzzle, so a batch is B consecutive visits
        n = len(puzzles) // B
        return Plan(pidx[puzzles[: n * B]].reshape(n, B), puzzles[: n * B].reshape(n, B), B * np.arange(1, n + 1))
    ex_batches, pz_batches, visits, ex, pz, room = [], [], [], [], [], B
    for i, (p, size) in enumerate(zip(puzzles.tolist(), sizes.tolist())):
        take = min(size, room)
        ex.append(pidx[p] + rng.choice(size, take, replace=False))
        pz.append(np.full(take, p))
        room -= take
        if room == 0:
            ex_batches.append(np.concatenate(ex))
            pz_batches.append(np.concatenate(pz))
            visits.append(i + 1)
            ex, pz, room = [], [], B
    if not ex_batches:
        return Plan(np.zeros((0, B), np.int64), np.zeros((0, B), np.int64), np.zeros(0, np.int64))
    return Plan(np.stack(ex_batches), np.stack(pz_batches), np.array(visits))


class TrainLoader:
    """Endless training batches; `next_batch()` → (set_name, batch, global_effective_batch_size)."""

    def __init__(
        self,
        root: Path | str,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epochs_per_iter: int = 1,
        split: str = "train",
    ):
        self.root, self.seed, self.epochs_per_iter = Path(root), int(seed), int(epochs_per_iter)
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.local_batch_size = _local_size(global_batch_size, rank, world_size)
        self.metadata = read_metadata(root, split)
        self.data = {s: load_split(root, split, s) for s in self.metadata.sets}
        self.num_groups = sum(len(d["group_indices"]) - 1 for d in self.data.values())
        if epochs_per_iter < 1:
            raise ValueError(f"epochs_per_iter must be ≥ 1, got {epochs_per_iter}")
        self._iters = 0  # iterator starts so far (the reference's counter; the RNG of start k is seed + k)
        self._set_pos = 0  # which set the current start walks
        self._position = 0  # batches of the current start already served
        self._groups_done = 0  # group visits of finished starts (for .epoch)
        self._plan: Plan | None = None

    def _start(self) -> None:
        """Begin iterator start self._iters + 1 on the current set (also used to rebuild after load)."""
        data = self.data[self.metadata.sets[self._set_pos]]
        rng = np.random.Generator(np.random.Philox(seed=self.seed + self._iters + 1))
        self._plan = plan_iteration(data, self.global_batch_size, rng, self.epochs_per_iter)
        if len(self._plan.examples) == 0:
            raise ValueError(
                f"{self.root}: {len(data['group_indices']) - 1} groups × {self.epochs_per_iter} epoch(s) "
                f"cannot fill one global batch of {self.global_batch_size}; lower the batch size"
            )

    def _finish_start(self) -> None:
        data = self.data[self.metadata.sets[self._set_pos]]
        self._groups_done += (len(data["group_indices"]) - 1) * self.epochs_per_iter
        self._iters += 1
        self._set_pos = (self._set_pos + 1) % len(self.metadata.sets)
        self._position, self._plan = 0, None

    def next_batch(self) -> tuple[str, dict[str, torch.Tensor], int]:
        if self._plan is None:
            self._start()
        assert self._plan is not None  # _start sets it
        ex, pz, _ = self._plan
        if self._position >= len(ex):
            self._finish_start()
            return self.next_batch()
        set_name = self.metadata.sets[self._set_pos]
        data = self.data[set_name]
        lo = self.rank * self.local_batch_size
        e = ex[self._position, lo : lo + self.local_batch_size]
        p = pz[self._position, lo : lo + self.local_batch_size]
        self._position += 1
        order = np.argsort(e, kind="stable")  # memory-mapped reads in file order, then back to batch order
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        inputs = np.asarray(data["inputs"][e[order]])[inv]
        labels = np.asarray(data["labels"][e[order]])[inv]
        batch = _collate(
            inputs,
            labels,
            np.asarray(data["puzzle_identifiers"])[p],
            self.metadata.ignore_label_id,
            self.local_batch_size,
            self.metadata.pad_id,
            self.metadata.blank_identifier_id,
        )
        return set_name, batch, self.global_batch_size

    def __iter__(self) -> Iterator[tuple[str, dict[str, torch.Tensor], int]]:
        while True:
            yield self.next_batch()

    @property
    def epoch(self) -> float:
        """Group visits served so far / number of groups (fractional epochs)."""
        visits = int(self._plan.visits[self._position - 1]) if self._plan is not None and self._position else 0
        return (self._groups_done + visits) / max(1, self.num_groups)

    @property
    def batches_per_iter(self) -> int:
        """Full global batches in one iterator start of the current set."""
        if self._plan is None:
            self._start()
        assert self._plan is not None  # _start sets it
        return len(self._plan.examples)

    def state_dict(self) -> dict:
        return {
            "version": 1,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "epochs_per_iter": self.epochs_per_iter,
            "iters": self._iters,
            "set_pos": self._set_pos,
            "position": self._position,
            "groups_done": self._groups_done,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "global_batch_size", "epochs_per_iter"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"data loader state was saved with {key}={state[key]} but this run has "
                    f"{key}={getattr(self, key)}; the data order cannot be resumed exactly"
                )
        self._iters, self._set_pos = int(state["iters"]), int(state["set_pos"])
        self._position, self._groups_done = int(state["position"]), int(state["groups_done"])
        self._plan = None
        if self._position:
            self._start()


def iter_test_batches(
    root: Path | str,
    global_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    max_examples: int | None = None,
    split: str = "test",
) -> Iterator[tuple[str, dict[str, torch.Tensor], int]]:
    """Sequential test batches (each rank its slice; the last one padded): (set_name, batch, effective size)."""
    local = _local_size(global_batch_size, rank, world_size)
    meta = read_metadata(root, split)
    for set_name in meta.sets:
        data = load_split(root, split, set_name)
        total = len(data["inputs"]) if max_examples is None else min(max_examples, len(data["inputs"]))
        pidx = np.asarray(data["puzzle_indices"])
        for start in range(0, total, global_batch_size):
            end = min(total, start + global_batch_size)
            lo, hi = min(start + rank * local, end), min(start + (rank + 1) * local, end)
            puzzles = np.searchsorted(pidx, np.arange(lo, hi), side="right") - 1
            batch = _collate(
                np.asarray(data["inputs"][lo:hi]),
                np.asarray(data["labels"][lo:hi]),
                np.asarray(data["puzzle_identifiers"])[puzzles],
                meta.ignore_label_id,
                local,
                meta.pad_id,
                meta.blank_identifier_id,
            )
            yield set_name, batch, end - start
