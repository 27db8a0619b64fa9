"""The training data order of a run configured like a reference run equals the reference's (HRM-SPEC §5.2,
sapientinc/HRM pretrain.py: epochs_per_iter = eval_interval in epochs, or all epochs when it is null)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hrm.data.format import PuzzleDatasetMetadata, write_split
from hrm.run.config import load_preset
from hrm.train.build import DataInfo, build_loader
from hrm.train.distributed import DistEnv

GROUPS, PUZZLES_PER_GROUP, BATCH, SEED = 10, 3, 4, 7


def _sudoku_like(root: Path) -> DataInfo:
    """GROUPS groups of PUZZLES_PER_GROUP one-example puzzles (an original and its augmented copies, as the
    Sudoku builds); example e has input cell 0 = e + 1, so batches can be read back as example indices."""
    n = GROUPS * PUZZLES_PER_GROUP
    arrays = dict(
        inputs=(np.arange(n)[:, None] + 1 + np.zeros(4, int)).astype(np.int32),
        labels=np.full((n, 4), 2, np.int32),
        puzzle_identifiers=np.zeros(n, np.int32),
        puzzle_indices=np.arange(n + 1, dtype=np.int32),
        group_indices=np.arange(0, n + 1, PUZZLES_PER_GROUP, dtype=np.int32),
    )
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=n + 2,
        seq_len=4,
        num_puzzle_identifiers=1,
        total_groups=GROUPS,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )
    write_split(root, "train", {"all": arrays}, meta)
    return DataInfo(root, "sudoku", 4, n + 2, 1, n, 0, GROUPS, 1.0)


def _reference_batches(epochs_per_iter: int, starts: int) -> list[list[int]]:
    """The reference sampler written out from its description, one group visit at a time: iterator start k
    seeds Philox(seed + k), concatenates epochs_per_iter permutations of the groups, then per visited group
    draws one of its puzzles uniformly (one example each here); full batches only."""
    batches = []
    for k in range(1, starts + 1):
        rng = np.random.Generator(np.random.Philox(seed=SEED + k))
        order = np.concatenate([rng.permutation(GROUPS) for _ in range(epochs_per_iter)])
        picks = [int(rng.integers(g * PUZZLES_PER_GROUP, (g + 1) * PUZZLES_PER_GROUP)) for g in order]
        batches += [picks[i : i + BATCH] for i in range(0, len(picks) - BATCH + 1, BATCH)]
    return batches


def _ours(cfg_overrides: list[str], info: DataInfo, n: int) -> list[list[int]]:
    loader = build_loader(
        load_preset("tiny", [f"train.global_batch_size={BATCH}", f"train.seed={SEED}", *cfg_overrides]), info, DistEnv()
    )
    return [(loader.next_batch()[1]["inputs"][:, 0] - 1).tolist() for _ in range(n)]


def test_eval_interval_null_draws_every_epoch_of_the_run_in_one_pass_as_the_reference(tmp_path: Path) -> None:
    info = _sudoku_like(tmp_path)
    epochs = 6  # 60 group visits: 15 batches, all from iterator start 1 (the reference's total_iters = 1)
    steps = epochs * GROUPS // BATCH
    ours = _ours([f"train.epochs={epochs}", "train.eval_interval=null"], info, steps + 2)
    assert ours[:steps] == _reference_batches(epochs_per_iter=epochs, starts=1)
    # one epoch per pass (what null meant before) is another order from the third batch on
    assert ours[:steps] != _reference_batches(epochs_per_iter=1, starts=steps)[:steps]
    # past the run's last step the loader goes on with the next start, as the reference's would
    assert ours[steps:] == _reference_batches(epochs_per_iter=epochs, starts=2)[steps : steps + 2]


@pytest.mark.parametrize("eval_steps,epochs_each", [(5, 2), (15, 6)])
def test_eval_interval_in_steps_maps_to_the_reference_epochs_per_iter(
    eval_steps: int, epochs_each: int, tmp_path: Path
) -> None:
    # the reference's eval_interval is in epochs: 5 steps · batch 4 / 10 examples = 2 epochs per pass
    info = _sudoku_like(tmp_path)
    ours = _ours(["train.epochs=6", f"train.eval_interval={eval_steps}"], info, 15)
    assert ours == _reference_batches(epochs_per_iter=epochs_each, starts=6 // epochs_each)[:15]


def test_total_steps_with_eval_interval_null_covers_the_run_in_one_pass(tmp_path: Path) -> None:
    info = _sudoku_like(tmp_path)
    cfg = load_preset("tiny", [f"train.global_batch_size={BATCH}", "train.total_steps=11", "train.eval_interval=null"])
    loader = build_loader(cfg, info, DistEnv())
    assert loader.epochs_per_iter == 5  # 11 steps · 4 / 10 examples = 4.4 epochs, rounded up
    assert loader.batches_per_iter >= 11
