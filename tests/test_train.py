"""The trainer end to end on the tiny preset: the events it writes, numerical health (a NaN stops
or pauses without overwriting the last good checkpoint), seeding from reference weights, ctl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.train import (
    TINY,
    effective,
    events,
    kill_group,
    latest_ckpt,
    model_of,
    nan_loss_cmd,
    run,
    show,
    start,
    statuses,
    train_cmd,
    wait_state,
)

# A NaN loss from step 2 on (the loss alone: the weights of step 1 are sound and checkpointed).
NAN_FROM = 2
CKPT_EVERY_STEP = ["train.checkpoint_interval=1"]


def test_run_writes_the_documented_events(tmp_path: Path) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main([*TINY, "train.total_steps=4", "train.eval_interval=2", "--run-dir", str(d)]) == 0
    evs = events(d)
    assert all(e["v"] == 1 and isinstance(e["t"], float) for e in evs)
    r = next(e for e in evs if e["kind"] == "run")
    assert r["task"] == "sudoku" and r["grid"] == [9, 9] and r["world_size"] == 1 and r["resumed_from"] is None
    assert r["num_params"] > 0 and r["total_steps"] == 4 and r["dataset"]["train_examples"] > 0
    tr = effective(evs)
    assert sorted(tr) == [1, 2, 3, 4]
    for k in (
        "lr",
        "loss",
        "lm_loss",
        "q_halt_loss",
        "q_continue_loss",
        "accuracy",
        "exact_accuracy",
        "q_halt_accuracy",
        "act_steps_mean",
        "halted_frac",
        "examples_per_s",
        "step_time_s",
        "grad_norm",
        "epoch",
        "count",
    ):
        assert k in tr[4], k
    assert tr[1]["lr"] < tr[4]["lr"]  # warmup: the step counter moves before the lr is set
    ev = effective(evs, "eval")
    assert sorted(ev) == [2, 4]
    hist, samples = ev[4]["act_steps_hist"], ev[4]["samples"]
    assert len(hist) == r["config"]["model"]["halt_max_steps"] and sum(hist) == ev[4]["num_examples"]
    assert 0 < len(samples) <= 8 and all(len(s["input"]) == len(s["prediction"]) == 81 for s in samples)
    ck = [e for e in evs if e["kind"] == "checkpoint"]
    assert ck and all((d / e["path"]).is_file() and e["size"] > 0 for e in ck)
    assert [s["state"] for s in statuses(d)][-2:] == ["running", "finished"]
    saved = torch.load(latest_ckpt(d), map_location="cpu", weights_only=True)
    assert saved["format"] == "hrm-tui-checkpoint" and saved["version"] == 1 and saved["step"] == 4
    assert set(saved) >= {"model", "optimizers", "loader", "rng", "carry", "config", "metrics", "epoch"}
    assert all(k.startswith("inner.") for k in saved["model"])  # the unwrapped model's own keys


@pytest.mark.slow  # a real trainer process
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "run"
    r = run(nan_loss_cmd(NAN_FROM, *TINY, *CKPT_EVERY_STEP, "train.total_steps=6", "--run-dir", str(d)))
    assert r.returncode == 1, r.stderr[-2000:]
    last = statuses(d)[-1]
    assert last["state"] == "failed" and "non-finite loss at step 2" in last["error"]
    assert any(e["kind"] == "log" and e["level"] == "error" and "non-finite" in e["message"] for e in events(d))
    assert [p.name for p in (d / "checkpoints").glob("step-*.pt")] == ["step-00000001.pt"]
    assert sorted(effective(events(d))) == [1]
    assert all(torch.isfinite(v).all() for v in model_of(latest_ckpt(d)).values() if v.is_floating_point())


@pytest.mark.slow  # a real trainer process, paused then stopped
def test_nonfinite_loss_pauses_when_asked(tmp_path: Path) -> None:
    from hrm.run.control import send_command

    d, log = tmp_path / "run", tmp_path / "log"
    args = [*TINY, *CKPT_EVERY_STEP, "train.total_steps=100", "train.on_nonfinite=pause", "--run-dir", str(d)]
    p = start(nan_loss_cmd(NAN_FROM, *args), log)
    try:
        paused = wait_state(d, "paused", 90)
        assert "non-finite" in paused["reason"]
        # The NaN step was skipped: the weights are still those of step 1, already saved.
        r = send_command(d, "checkpoint", timeout=60)
        assert r["ok"] and r["path"] == "checkpoints/step-00000001.pt", r
        r = send_command(d, "stop", timeout=60)
        assert r["ok"] and r["checkpoint"] == "checkpoints/step-00000001.pt", r
        assert p.wait(60) == 0, show(log)
    finally:
        kill_group(p)
    assert [q.name for q in (d / "checkpoints").glob("step-*.pt")] == ["step-00000001.pt"]


def test_reference_weights_seed_a_run(tmp_path: Path) -> None:
    from hrm.train.cli import main

    src = tmp_path / "src"
    assert main([*TINY, "train.total_steps=2", "--run-dir", str(src)]) == 0
    weights = model_of(latest_ckpt(src))
    ref = tmp_path / "step_2"  # the reference's layout: a bare state_dict with its prefixes
    torch.save({f"_orig_mod.model.{k}": v for k, v in weights.items()}, ref)
    d = tmp_path / "run"
    assert (
        main(
            [
                *TINY,
                "train.total_steps=1",
                "optim.lr=1e-12",
                "optim.puzzle_emb_lr=1e-12",
                "optim.weight_decay=0",
                "optim.puzzle_emb_weight_decay=0",
                f"train.init_from={ref}",
                "--run-dir",
                str(d),
            ]
        )
        == 0
    )
    logs = [e["message"] for e in events(d) if e["kind"] == "log"]
    assert any("weights only" in m and "optimizer state" in m for m in logs), logs
    after = model_of(latest_ckpt(d))
    for k, v in weights.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=1e-6)


def test_ctl_reports_a_finished_run_and_bad_targets(tmp_path: Path) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main([*TINY, "train.total_steps=1", "--run-dir", str(d)]) == 0
    r = run([*train_cmd("ctl", str(d), "status")], timeout=60)
    assert r.returncode == 0
    reply = json.loads(r.stdout)
    assert reply["state"] == "finished" and reply["live"] is False
    r = run([*train_cmd("ctl", str(d), "pause")], timeout=60)
    assert r.returncode == 1 and "no trainer is listening" in r.stdout
    r = run([*train_cmd("ctl", str(tmp_path / "nope"), "pause")], timeout=60)
    assert r.returncode == 2 and "no run directory" in r.stderr


def test_existing_run_dir_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main([*TINY, "train.total_steps=1", "--run-dir", str(d)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--run-dir", str(d)]) == 2
    assert "--resume latest" in capsys.readouterr().err
    assert main(["--run-dir", str(tmp_path / "empty")]) == 2
    assert "give a preset" in capsys.readouterr().err


def test_loader_walks_eval_interval_epochs_per_iterator_start(tmp_path: Path) -> None:
    # As the reference: one iterator start covers eval_interval steps' worth of epochs, so only the
    # last short batch of that stretch is dropped, not one per epoch.
    import numpy as np

    from hrm.data.format import PuzzleDatasetMetadata, groups_to_arrays, write_split
    from hrm.run.config import load_preset
    from hrm.train.build import DataInfo, build_loader
    from hrm.train.distributed import DistEnv

    groups = [[(np.full(4, 1 + i % 3, np.uint8), np.full(4, 2, np.uint8))] for i in range(20)]
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=5,
        seq_len=4,
        num_puzzle_identifiers=1,
        total_groups=20,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )
    write_split(tmp_path, "train", {"all": groups_to_arrays(groups)}, meta)
    info = DataInfo(
        root=tmp_path,
        task="sudoku",
        seq_len=4,
        vocab_size=5,
        num_puzzle_identifiers=1,
        train_examples=20,
        test_examples=0,
        total_groups=20,
        mean_puzzle_examples=1.0,
    )
    cfg = load_preset("tiny", ["train.global_batch_size=8", "train.eval_interval=5"])  # 5·8/20 = 2 epochs
    loader = build_loader(cfg, info, DistEnv())
    assert loader.epochs_per_iter == 2
    assert loader.batches_per_iter == 5  # 40 groups → 5 full batches; one epoch alone would give 2


@pytest.mark.slow  # imports Dynamo
def test_train_compile_wraps_the_same_module_and_is_off_by_default() -> None:
    """train.compile hands the step a torch.compile wrapper of the very head whose parameters the
    optimizers and checkpoints hold (compiling itself is lazy and is not run here: ~1 min on CPU)."""
    from hrm.run.config import apply_overrides, load_preset
    from hrm.train import build as B

    cfg = load_preset("tiny")
    head = torch.nn.Linear(2, 2)
    assert B.train_forward(cfg, head) is head
    compiled = B.train_forward(apply_overrides(cfg, ["train.compile=true"]), head)
    assert compiled is not head and compiled._orig_mod is head
    assert [id(p) for p in compiled.parameters()] == [id(p) for p in head.parameters()]
