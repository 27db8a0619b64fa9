from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hrm.data.format import PuzzleDatasetMetadata, write_split
from hrm.data.loader import TrainLoader, iter_test_batches

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _dataset(
    root: Path, puzzles_per_group: list[int], examples_per_puzzle: int = 1, seq_len: int = 6, split: str = "train"
) -> dict[str, np.ndarray]:
    """A dataset whose example e has inputs [e+1, ...] (so examples are identifiable) and label 0 on cell 0."""
    n_puzzles = sum(puzzles_per_group)
    n_ex = n_puzzles * examples_per_puzzle
    inputs = (np.arange(n_ex)[:, None] + 1 + np.zeros(seq_len, int)).astype(np.int32)
    labels = np.full((n_ex, seq_len), 3, dtype=np.int32)
    labels[:, 0] = 0  # ignore_label_id: must come out as -100
    arrays = dict(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=np.arange(n_puzzles, dtype=np.int32) + 1,
        puzzle_indices=np.arange(n_puzzles + 1, dtype=np.int32) * examples_per_puzzle,
        group_indices=np.concatenate([[0], np.cumsum(puzzles_per_group)]).astype(np.int32),
    )
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=n_ex + 2,
        seq_len=seq_len,
        num_puzzle_identifiers=n_puzzles + 1,
        total_groups=len(puzzles_per_group),
        mean_puzzle_examples=examples_per_puzzle,
        sets=["all"],
    )
    write_split(root, split, {"all": arrays}, meta)
    return arrays


def _example_ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return (batch["inputs"][:, 1] - 1).tolist()


def test_batches_follow_the_reference_rules(tmp_path):
    arrays = _dataset(tmp_path, [1] * 50)
    loader = TrainLoader(tmp_path, global_batch_size=8, seed=3)
    assert loader.batches_per_iter == 6  # 50 // 8; the short last batch is dropped
    first = np.random.Generator(np.random.Philox(3 + 1)).permutation(50)  # start k uses Philox(seed + k)
    seen: list[int] = []
    for _ in range(6):
        set_name, batch, eff = loader.next_batch()
        ids = _example_ids(batch)
        assert set_name == "all" and eff == 8 and len(set(ids)) == 8  # 8 distinct groups
        assert batch["inputs"].dtype == batch["labels"].dtype == batch["puzzle_identifiers"].dtype == torch.int32
        assert (batch["labels"][:, 0] == -100).all() and (batch["labels"][:, 1:] == 3).all()
        assert batch["puzzle_identifiers"].tolist() == [int(arrays["puzzle_identifiers"][i]) for i in ids]
        seen += ids
    assert seen == first[:48].tolist()
    assert loader.epoch == pytest.approx(48 / 50)
    _, batch, _ = loader.next_batch()  # the next start: a fresh permutation from Philox(seed + 2)
    assert _example_ids(batch) == np.random.Generator(np.random.Philox(5)).permutation(50)[:8].tolist()
    assert loader.epoch == pytest.approx(1 + 8 / 50)


def test_one_puzzle_per_group_and_examples_without_replacement(tmp_path):
    _dataset(tmp_path, [3, 1, 2, 4, 2, 3] * 4, examples_per_puzzle=3)
    arrays_pidx = np.arange(0, 15 * 4 + 1) * 3
    loader = TrainLoader(tmp_path, global_batch_size=8, seed=0)
    chosen = set()
    for _ in range(loader.batches_per_iter * 20):
        _, batch, eff = loader.next_batch()
        ex = _example_ids(batch)
        pz = (np.searchsorted(arrays_pidx, ex, side="right") - 1).tolist()
        assert eff == 8 and len(set(ex)) == 8
        # a batch is runs of examples from one puzzle each: min(3, room left) of them
        runs = [pz[0]]
        for a, b in zip(pz, pz[1:]):
            if a != b:
                runs.append(b)
        assert len(runs) == len(set(runs))  # within one epoch a batch never holds a group twice
        sizes = [pz.count(r) for r in runs]
        assert all(s == 3 for s in sizes[:-1]) and sizes[-1] == 8 - 3 * (len(runs) - 1)
        chosen.update(runs)
    assert len(chosen) == 60  # every puzzle of every group gets picked sometime


def test_resume_continues_the_exact_order(tmp_path):
    _dataset(tmp_path, [2, 1, 3] * 7)
    a = TrainLoader(tmp_path, global_batch_size=4, seed=11)
    for _ in range(7):  # crosses an iterator start (5 batches each)
        a.next_batch()
    path = tmp_path / "state.pt"
    torch.save({"loader": a.state_dict()}, path)
    state = torch.load(path, weights_only=True)["loader"]
    b = TrainLoader(tmp_path, global_batch_size=4, seed=11)
    b.load_state_dict(state)
    assert b.epoch == a.epoch
    for _ in range(12):
        (sa, ba, ea), (sb, bb, eb) = a.next_batch(), b.next_batch()
        assert sa == sb and ea == eb
        for k in ba:
            assert torch.equal(ba[k], bb[k])
    with pytest.raises(ValueError, match="global_batch_size=4"):
        TrainLoader(tmp_path, global_batch_size=8, seed=11).load_state_dict(state)


def test_ranks_take_slices_of_the_same_global_batch(tmp_path):
    _dataset(tmp_path, [1] * 40)
    whole = TrainLoader(tmp_path, global_batch_size=8, seed=2)
    parts = [TrainLoader(tmp_path, global_batch_size=8, rank=r, world_size=2, seed=2) for r in (0, 1)]
    for _ in range(7):
        _, full, eff = whole.next_batch()
        halves = [p.next_batch() for p in parts]
        assert all(h[2] == eff == 8 and h[1]["inputs"].shape[0] == 4 for h in halves)
        assert torch.equal(torch.cat([h[1]["inputs"] for h in halves]), full["inputs"])
    # the state of one rank resumes the other rank count
    two_rank_state = parts[0].state_dict()
    one = TrainLoader(tmp_path, global_batch_size=8, seed=2)
    one.load_state_dict(two_rank_state)
    assert torch.equal(one.next_batch()[1]["inputs"], whole.next_batch()[1]["inputs"])
    with pytest.raises(ValueError, match="multiple of the world size"):
        TrainLoader(tmp_path, global_batch_size=9, world_size=2)


def test_test_batches_are_sequential_sliced_and_padded(tmp_path):
    _dataset(tmp_path, [1] * 10, split="test")
    for world in (1, 2):
        got, effs = [], []
        for rank in range(world):
            for _set_name, batch, eff in iter_test_batches(tmp_path, 4, rank=rank, world_size=world):
                assert batch["inputs"].shape == (4 // world, 6)
                real = batch["puzzle_identifiers"] != 0
                pad = ~real
                assert (batch["inputs"][pad] == 0).all() and (batch["labels"][pad] == -100).all()
                assert (batch["labels"][real, 0] == -100).all()
                got += _example_ids({"inputs": batch["inputs"][real]})
                effs.append(eff)
        assert sorted(got) == list(range(10))
        assert effs[:3] == [4, 4, 2]
    firsts = [b for _, b, _ in iter_test_batches(tmp_path, 4, max_examples=5)]
    assert [int((b["puzzle_identifiers"] != 0).sum()) for b in firsts] == [4, 1]


def test_too_small_dataset_for_the_batch_is_refused(tmp_path):
    _dataset(tmp_path, [1] * 3)
    with pytest.raises(ValueError, match="lower the batch size"):
        TrainLoader(tmp_path, global_batch_size=4).next_batch()


def test_real_maze_dataset_batches(tmp_path):
    root = SHARED / "maze-30x30-hard-1k" / "npy"
    if not root.is_dir():
        pytest.skip("../shared/data/maze-30x30-hard-1k is absent")
    loader = TrainLoader(root, global_batch_size=32, seed=0)
    _, batch, _ = loader.next_batch()
    assert batch["inputs"].shape == (32, 900) and int(batch["inputs"].max()) <= 4
    assert int(batch["labels"].min()) >= 1  # maze labels are never 0: every cell supervised
    batches = list(iter_test_batches(root, 384))
    assert [b[2] for b in batches] == [384, 384, 232] and batches[-1][1]["inputs"].shape == (384, 900)
