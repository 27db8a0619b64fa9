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


def test_perturbed_adds_noise_scaled_to_the_state_rms() -> None:
    from hrm.model.hrm_act import Carry, InnerCarry
    from hrm.ttc import noise_generators, perturbed

    z = torch.full((2, 50, 64), 2.0)  # RMS 2 at every position
    carry = Carry(InnerCarry(z.clone(), -z.clone()), torch.zeros(2), torch.zeros(2, dtype=torch.bool), {})
    out = perturbed(carry, 0.1, noise_generators(0, 1)[0])
    d_H, d_L = out.inner_carry.z_H - z, out.inner_carry.z_L + z
    assert d_H.std().item() == pytest.approx(0.2, rel=0.05) and d_L.std().item() == pytest.approx(0.2, rel=0.05)
    assert not torch.equal(d_H, d_L)  # z_H and z_L draw their own noise
    assert torch.equal(carry.inner_carry.z_H, z)  # the carry given is not changed in place


def test_noise_on_the_latent_state_is_seeded_and_spares_the_first_segment_and_trajectory(checkpoint: Path) -> None:
    from hrm.eval import checked_batches, load_for_eval
    from hrm.ttc import identity_variant, noise_generators, run_trajectories

    loaded = load_for_eval(str(checkpoint), None, split="test", device="cpu")
    _set, batch, _n = next(iter(checked_batches(loaded, "test", 8)))
    vs = [identity_variant(loaded.cfg.seq_len, loaded.cfg.vocab_size)] * 3

    def run(noise: float, seed: int = 0):
        return run_trajectories(loaded.head, batch, vs, 3, noise=noise, gens=noise_generators(seed, 3))

    quiet, a, b, other = run(0.0), run(0.5), run(0.5), run(0.5, seed=1)
    for k in (1, 2):  # no noise: every trajectory is the plain one
        assert torch.equal(quiet.q_halt[k], quiet.q_halt[0]) and torch.equal(quiet.preds[k], quiet.preds[0])
    assert torch.equal(a.q_halt, b.q_halt) and torch.equal(a.preds, b.preds)  # the seed decides the noise
    assert not torch.equal(a.q_halt[1:, 1:], other.q_halt[1:, 1:])
    assert torch.equal(a.q_halt[0], quiet.q_halt[0])  # trajectory 0 is the puzzle itself, unperturbed
    assert torch.equal(a.q_halt[:, 0], quiet.q_halt[:, 0])  # segment 1 starts from the model's own init
    for k in (1, 2):  # then each perturbed trajectory thinks differently, with its own noise
        assert not torch.equal(a.q_halt[k, 1:], quiet.q_halt[0, 1:])
    assert not torch.equal(a.q_halt[1, 1:], a.q_halt[2, 1:])


def test_noise_keeps_the_plain_row_and_refuses_a_negative_scale(checkpoint: Path) -> None:
    from hrm.eval import evaluate_checkpoint, main
    from hrm.ttc import evaluate_test_time

    plain = evaluate_checkpoint(checkpoint, device="cpu")["metrics"]
    noisy = evaluate_test_time(str(checkpoint), trajectories=3, noise=0.3, device="cpu")
    assert noisy["noise"] == 0.3 and noisy["augment"] is False
    row = next(r for r in noisy["settings"] if (r["segments"], r["trajectories"]) == (noisy["trained_segments"], 1))
    assert row["exact_accuracy"] == pytest.approx(plain["exact_accuracy"], abs=1e-12)
    assert row["changed_accuracy"] == pytest.approx(plain["changed_accuracy"], abs=1e-12)
    assert main(["--checkpoint", str(checkpoint), "--trajectories", "2", "--noise", "-1", "--device", "cpu"]) == 2
