"""hrm-eval end to end on a tiny dataset written in the reference format, for our and reference checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hrm.data.format import PuzzleDatasetMetadata, groups_to_arrays, write_split
from hrm.eval import main
from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead

SEQ, VOCAB, N_TEST = 9, 6, 7
MODEL = dict(puzzle_emb_ndim=32, hidden_size=32, num_heads=2, H_layers=1, L_layers=1, halt_max_steps=3, expansion=2.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 5), ("test", N_TEST)):
        groups = [[(rng.integers(1, VOCAB, SEQ), rng.integers(1, VOCAB, SEQ))] for _ in range(n)]
        meta = PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=VOCAB,
            seq_len=SEQ,
            num_puzzle_identifiers=1,
            total_groups=n,
            mean_puzzle_examples=1.0,
        )
        write_split(root, split, {"all": groups_to_arrays(groups)}, meta)
    return root


def _trained_head(seed: int) -> ACTLossHead:
    torch.manual_seed(seed)
    head = ACTLossHead(
        HierarchicalReasoningModel_ACTV1(HRMConfig(batch_size=4, seq_len=SEQ, vocab_size=VOCAB, **MODEL))
    )
    with torch.no_grad():  # make the untrained model say something non-trivial
        head.model.inner.q_head.weight.normal_()
        head.model.inner.puzzle_emb.weights.normal_()
    return head


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _expected_metrics(head: ACTLossHead, root: Path, batch_size: int) -> dict[str, float]:
    """Plainly computed: per batch, halt_max_steps calls from a fresh carry, sums of the last call / count."""
    from hrm.data.loader import iter_test_batches

    head.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for _, batch, _ in iter_test_batches(root, batch_size):
            carry = head.initial_carry(batch)
            for _ in range(MODEL["halt_max_steps"]):
                carry, _, metrics, _, _ = head(carry, batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / sums["count"] for k, v in sums.items() if k != "count"}


def test_eval_our_checkpoint_json_and_saved_outputs(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    head = _trained_head(1)
    ckpt = tmp_path / "step-00000020.pt"
    torch.save(
        {
            "format": "hrm-tui-checkpoint",
            "step": 20,
            "model": head.model.state_dict(),
            "config": {"model": {**MODEL, "loss_type": "stablemax_cross_entropy"}, "train": {"global_batch_size": 4}},
        },
        ckpt,
    )
    out_dir = tmp_path / "outs"
    code, out, err = _run(
        capsys,
        "--checkpoint",
        str(ckpt),
        "--data",
        str(dataset),
        "--json",
        "--save-outputs",
        str(out_dir),
        "--device",
        "cpu",
    )
    assert code == 0, err
    result = json.loads(out)
    assert (result["kind"], result["step"], result["num_examples"], result["batch_size"]) == ("hrm-tui", 20, N_TEST, 4)
    assert result["segments"] == MODEL["halt_max_steps"]
    m = result["metrics"]
    assert m["count"] == N_TEST and m["steps"] == pytest.approx(MODEL["halt_max_steps"])
    expected = _expected_metrics(head, dataset, 4)
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert result["sets"]["all"]["count"] == N_TEST

    saved = {
        k: np.load(out_dir / f"{k}.npy")
        for k in ("inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits")
    }
    assert saved["logits"].shape == (N_TEST, SEQ, VOCAB) and saved["q_halt_logits"].shape == (N_TEST,)
    test_inputs = np.load(dataset / "test" / "all__inputs.npy")
    assert np.array_equal(saved["inputs"], test_inputs.astype(np.int32))  # test-set order
    exact = (saved["logits"].argmax(-1) == saved["labels"]).all(-1).mean()
    assert m["exact_accuracy"] == pytest.approx(exact)


def test_eval_reference_checkpoint_table(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    head = _trained_head(2)
    run = tmp_path / "ref"
    run.mkdir()
    torch.save({"_orig_mod." + k: v for k, v in head.state_dict().items()}, run / "step_300")
    arch = {
        **MODEL,
        "H_cycles": 2,
        "L_cycles": 2,
        "pos_encodings": "rope",
        "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    }
    (run / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "global_batch_size": 3}))
    code, out, err = _run(capsys, "--checkpoint", str(run / "step_300"), "--data", str(dataset), "--device", "cpu")
    assert code == 0, err
    assert "exact_accuracy" in out and "reference, step 300" in out
    expected = _expected_metrics(head, dataset, 3)
    code, out, _ = _run(
        capsys,
        "--checkpoint",
        str(run / "step_300"),
        "--config",
        str(run / "all_config.yaml"),
        "--data",
        str(dataset),
        "--json",
        "--max-examples",
        "3",
    )
    assert code == 0 and json.loads(out)["num_examples"] == 3
    code, out, _ = _run(capsys, "--checkpoint", str(run / "step_300"), "--data", str(dataset), "--json")
    assert json.loads(out)["metrics"]["lm_loss"] == pytest.approx(expected["lm_loss"], rel=1e-6)


def test_eval_errors_are_one_line(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    code, out, err = _run(capsys, "--checkpoint", str(bad), "--data", str(dataset))
    assert code == 2 and out == "" and err.count("\n") == 1 and str(bad) in err
    head = _trained_head(3)
    ckpt = tmp_path / "other.pt"
    torch.save(
        {
            "format": "hrm-tui-checkpoint",
            "step": 1,
            "model": head.model.state_dict(),
            "config": {"model": {**MODEL, "hidden_size": 64}},
        },
        ckpt,
    )
    code, _, err = _run(capsys, "--checkpoint", str(ckpt), "--data", str(dataset))
    assert code == 2 and "expected shape" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "--checkpoint", str(ckpt), "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err


def test_eval_on_real_reference_format_sudoku(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The reference builder's arrays (uint8, ignore_label_id 0 → −100) as a test split."""
    root = tmp_path / "sudoku"
    root.mkdir()
    (root / "test").symlink_to(shared_data / "sudoku-extreme-train-1k" / "npy", target_is_directory=True)
    torch.manual_seed(0)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(HRMConfig(batch_size=16, seq_len=81, vocab_size=11, **MODEL)))
    ckpt = tmp_path / "s.pt"
    torch.save(
        {
            "format": "hrm-tui-checkpoint",
            "step": 0,
            "model": head.model.state_dict(),
            "config": {"model": MODEL, "train": {"global_batch_size": 16}},
        },
        ckpt,
    )
    out_dir = tmp_path / "o"
    code, out, err = _run(
        capsys,
        "--checkpoint",
        str(ckpt),
        "--data",
        str(root),
        "--json",
        "--max-examples",
        "40",
        "--save-outputs",
        str(out_dir),
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["num_examples"] == 40 and r["metrics"]["count"] == 40 and r["segments"] == MODEL["halt_max_steps"]
    labels = np.load(out_dir / "labels.npy")
    assert labels.shape == (40, 81) and labels.min() >= 2  # every cell supervised, digits 2..10
    assert 0.0 <= r["metrics"]["accuracy"] <= 1.0
