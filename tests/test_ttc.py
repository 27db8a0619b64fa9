"""Test-time compute in hrm-eval: variants that map back exactly, picks that do what they say, and settings
that reduce to the plain evaluation (K identical trajectories, the trained segment count)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.train import TINY, latest_ckpt

from hrm.ttc import Variant, pick, variants

SOLVED = np.array([int(c) for c in "534678912672195348198342567859761423426853791713924856961537284287419635345286179"])


def _valid_sudoku(digits: np.ndarray) -> bool:
    g = digits.reshape(9, 9)
    groups = [g[i] for i in range(9)] + [g[:, i] for i in range(9)]
    groups += [g[r : r + 3, c : c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    return all(sorted(x) == list(range(1, 10)) for x in groups)


def test_sudoku_variants_keep_solutions_valid_and_map_back_exactly() -> None:
    tokens = torch.as_tensor(SOLVED + 1).view(1, 81)  # token = digit + 1
    vs = variants("sudoku", 6, 81, 11, seed=3)
    assert np.array_equal(vs[0].src, np.arange(81)) and np.array_equal(vs[0].token_map, np.arange(11))
    for v in vs:
        moved = v.apply(tokens)
        assert _valid_sudoku(moved.view(-1).numpy() - 1)
        assert torch.equal(v.invert(moved), tokens)
    assert len({tuple(v.apply(tokens).view(-1).tolist()) for v in vs}) == 6


def test_maze_variants_are_the_eight_dihedral_maps() -> None:
    x = torch.arange(49).view(1, 49) % 6
    vs = variants("maze", 8, 49, 6)
    assert len({tuple(v.src.tolist()) for v in vs}) == 8
    for v in vs:
        assert torch.equal(v.invert(v.apply(x)), x)
    with pytest.raises(ValueError, match="8 dihedral"):
        variants("maze", 9, 49, 6)


def test_pick_by_qhalt_and_by_vote() -> None:
    a, b = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)
    preds = torch.stack([a, b, b])  # [K=3, B=1, S=4]
    q = torch.tensor([[5.0], [-1.0], [0.0]])
    assert torch.equal(pick(preds, q, "qhalt"), a)  # the surest trajectory
    assert torch.equal(pick(preds, q, "vote"), b)  # two of three agree
    tie = torch.stack([a, b])
    assert torch.equal(pick(tie, torch.tensor([[0.0], [1.0]]), "vote"), b)  # a tie goes to the surer one


def test_identity_variant_is_a_no_op() -> None:
    v = Variant(np.arange(5), np.arange(3))
    x = torch.tensor([[0, 1, 2, 1, 0]])
    assert torch.equal(v.apply(x), x) and torch.equal(v.invert(x), x)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hrm.train.cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = tmp_path_factory.mktemp("ttc") / "run"
        assert main([*TINY, "train.total_steps=4", "train.checkpoint_interval=4", "--run-dir", str(d)]) == 0
    finally:
        torch.set_num_threads(before)
    return latest_ckpt(d)


def test_trained_segments_and_identical_trajectories_equal_the_plain_evaluation(checkpoint: Path) -> None:
    from hrm.eval import evaluate_checkpoint
    from hrm.ttc import evaluate_test_time

    plain = evaluate_checkpoint(checkpoint, device="cpu")["metrics"]
    same = evaluate_test_time(str(checkpoint), trajectories=3, augment=False, device="cpu")
    rows = {(r["segments"], r["trajectories"], r["pick"]): r for r in same["settings"]}
    n = same["trained_segments"]
    assert sorted({r["segments"] for r in same["settings"]}) == list(range(1, n + 1))
    for key in ((n, 1, "-"), (n, 3, "qhalt"), (n, 3, "vote")):
        assert rows[key]["exact_accuracy"] == pytest.approx(plain["exact_accuracy"], abs=1e-12), key
        assert rows[key]["changed_accuracy"] == pytest.approx(plain["changed_accuracy"], abs=1e-12), key
        assert rows[key]["count"] == plain["count"]
    # More segments than trained: the first n rows do not change.
    more = evaluate_test_time(str(checkpoint), segments=n + 2, device="cpu")
    longer = {r["segments"]: r for r in more["settings"]}
    assert longer[n]["exact_accuracy"] == rows[(n, 1, "-")]["exact_accuracy"]
    assert max(longer) == n + 2 and longer[n + 2]["seconds"] > longer[n]["seconds"]


@pytest.mark.slow  # the CLI in a fresh process importing torch
def test_the_cli_prints_one_table(checkpoint: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hrm.eval",
            "--checkpoint",
            str(checkpoint),
            "--trajectories",
            "3",
            "--segments",
            "4",
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {(r["trajectories"], r["pick"]) for r in result["settings"]} >= {(1, "-"), (3, "qhalt"), (3, "vote")}
    table = subprocess.run(
        [sys.executable, "-m", "hrm.eval", "--checkpoint", str(checkpoint), "--trajectories", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert table.returncode == 0 and "blanks" in table.stdout and "qhalt" in table.stdout, table.stdout + table.stderr
