"""TRM through the same trainer, checkpoints, resume and hrm-eval as HRM (real runs of the tiny preset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.train import TINY, effective, events, latest_ckpt, model_of, train_here

TRM = [
    *TINY,
    "model.arch=trm",
    "model.H_cycles=2",
    "model.L_cycles=2",
    "model.puzzle_emb_len=2",
    "train.total_steps=6",
    "train.eval_interval=3",
    "train.checkpoint_interval=3",
]
MLP_T = ["model.mlp_t=true", "model.pos_encodings=none"]
pytestmark = pytest.mark.slow  # four short training runs and two evaluations


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("variant", [[], MLP_T], ids=["attention", "mlp_t"])
def test_trm_resumes_bitwise_and_hrm_eval_reads_its_checkpoint(tmp_path: Path, variant: list[str]) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_here(*TRM, *variant, "--run-dir", str(straight)) == 0
    assert train_here(*TRM, *variant, "--run-dir", str(resumed), "--stop-at-step", "3") == 0
    assert train_here("--run-dir", str(resumed), "--resume", "latest") == 0

    run = next(e for e in events(straight) if e["kind"] == "run")
    assert run["config"]["model"]["arch"] == "trm"
    ta, tb = effective(events(straight)), effective(events(resumed))
    assert sorted(ta) == list(range(1, 7)) == sorted(tb)
    for step in ta:
        assert ta[step]["loss"] == tb[step]["loss"], step
        assert "q_continue_loss" not in ta[step] or ta[step]["q_continue_loss"] in (None, 0, 0.0)
    wa, wb = model_of(latest_ckpt(straight)), model_of(latest_ckpt(resumed))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(".H_level." in k for k in wa)
    if variant:
        assert any(".mlp_t." in k for k in wa)

    ev = effective(events(straight), "eval")[6]
    data = run["dataset"]["path"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hrm.eval",
            "--checkpoint",
            str(latest_ckpt(straight)),
            "--data",
            data,
            "--max-examples",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["metrics"]["exact_accuracy"] == pytest.approx(ev["exact_accuracy"], abs=1e-9)


def test_weight_ema_is_checkpointed_resumed_exactly_and_evaluated(tmp_path: Path) -> None:
    """train.ema: the average is in every checkpoint, a resume continues it bitwise, and evaluation (the
    trainer's eval events and hrm-eval on the checkpoint) runs on it, not on the raw weights."""
    from hrm.eval import evaluate_checkpoint

    args = [*TRM, *MLP_T, "train.ema=true", "train.ema_rate=0.5"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_here(*args, "--run-dir", str(straight)) == 0
    assert train_here(*args, "--run-dir", str(resumed), "--stop-at-step", "3") == 0
    assert train_here("--run-dir", str(resumed), "--resume", "latest") == 0

    ca = torch.load(latest_ckpt(straight), map_location="cpu", weights_only=True)
    cb = torch.load(latest_ckpt(resumed), map_location="cpu", weights_only=True)
    assert ca["ema"].keys() == cb["ema"].keys() and all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])
    assert any(not torch.equal(ca["ema"][k], ca["model"][k]) for k in ca["ema"])
    ev = effective(events(straight), "eval")[6]
    assert ev["weights"] == "ema"
    assert effective(events(resumed), "eval")[6]["lm_loss"] == ev["lm_loss"]

    on_ema = evaluate_checkpoint(latest_ckpt(straight), device="cpu", max_examples=8)  # TINY evaluates 8
    assert on_ema["weights"] == "ema"
    assert on_ema["metrics"]["lm_loss"] == pytest.approx(ev["lm_loss"], rel=1e-9)
    raw = dict(ca)
    del raw["ema"]
    torch.save(raw, tmp_path / "raw.pt")
    on_raw = evaluate_checkpoint(tmp_path / "raw.pt", data=on_ema["data"], device="cpu", max_examples=8)
    assert on_raw["weights"] == "model" and on_raw["metrics"]["lm_loss"] != pytest.approx(ev["lm_loss"], rel=1e-6)
