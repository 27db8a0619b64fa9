"""Evaluation on what the trainer wrote: `hrm-eval` on a real run's checkpoint (no --data: the run's own
dataset) reports the trainer's own eval numbers at that step, and the per-segment predictions and Q logits
in the eval event's samples are what the checkpointed model computes for that sample, segment by segment."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.train import PY, TINY, events, run

from hrm.data.format import load_split
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead
from hrm.model.reference import load_any_checkpoint, load_model_weights

pytestmark = pytest.mark.slow  # trains a tiny run, then hrm-eval processes on its checkpoints

# Evaluate the whole test split (16 puzzles) in two batches of 8, at steps 2 and 4.
RUN = [
    *TINY,
    "train.eval_max_examples=16",
    "train.total_steps=4",
    "train.eval_interval=2",
    "train.checkpoint_interval=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hrm.train.cli import main

    d = tmp_path_factory.mktemp("eval-run") / "run"
    assert main([*RUN, "--run-dir", str(d)]) == 0
    return d


def _eval_events(run_dir: Path) -> dict[int, dict]:
    return {e["step"]: e for e in events(run_dir) if e["kind"] == "eval"}


@pytest.mark.parametrize("step", [2, 4])
def test_hrm_eval_on_a_trainer_checkpoint_equals_the_trainers_eval(trained: Path, step: int) -> None:
    ev = _eval_events(trained)[step]
    ckpt = trained / "checkpoints" / f"step-{step:08d}.pt"
    p = run([PY, "-m", "hrm.eval", "--checkpoint", str(ckpt), "--json", "--device", "cpu"])
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    run_event = next(e for e in events(trained) if e["kind"] == "run")
    assert r["data"] == run_event["dataset"]["path"] and r["step"] == step
    assert r["num_examples"] == ev["num_examples"] == 16
    m = r["metrics"]
    for k in ("accuracy", "exact_accuracy", "lm_loss", "q_halt_loss", "q_halt_accuracy", "act_steps_mean", "loss"):
        assert m[k] == pytest.approx(ev[k], rel=1e-9, abs=1e-12), k
    for k in ("count", "changed_cells", "act_steps_hist", "changed_accuracy"):
        assert m[k] == ev[k], k


def test_hrm_eval_without_data_names_the_fix(trained: Path, tmp_path: Path) -> None:
    """A checkpoint copied away from its run, whose dataset is gone from the cache: one line, exit 2."""
    obj = torch.load(trained / "checkpoints" / "step-00000002.pt", weights_only=True)
    obj["config"]["data"]["seed"] = 12345  # a recipe that was never built
    lone = tmp_path / "lone.pt"
    torch.save(obj, lone)
    p = run([PY, "-m", "hrm.eval", "--checkpoint", str(lone), "--device", "cpu"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "the dataset its run trained on is not there" in p.stderr and "--data" in p.stderr


def _head_at(ckpt: Path, seq_len: int) -> ACTLossHead:
    loaded = load_any_checkpoint(ckpt)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(loaded.build_config(seq_len=seq_len, batch_size=1)))
    load_model_weights(head, loaded.state_dict)
    return head.eval()


def test_eval_samples_record_every_segment_as_the_model_computes_it(trained: Path) -> None:
    ev = _eval_events(trained)[4]
    run_event = next(e for e in events(trained) if e["kind"] == "run")
    hms = run_event["config"]["model"]["halt_max_steps"]
    test = load_split(Path(run_event["dataset"]["path"]), "test", "all")
    head = _head_at(trained / "checkpoints" / "step-00000004.pt", np.asarray(test["inputs"]).shape[1])
    samples = ev["samples"]
    assert len(samples) == 8 and all(len(s["segments"]) == hms for s in samples)
    _check_against_direct_runs(head, samples, test, hms)
    # the halting histogram counts every evaluated row by that same rule
    assert sum(ev["act_steps_hist"]) == ev["num_examples"]


def test_halt_segment_where_the_q_head_halts_early(trained: Path) -> None:
    """The trained tiny model never wants to halt before the last segment; shift its Q-halt bias so about
    half the rows want to at the first one, and check the same records through the evaluation loop."""
    from hrm.data.loader import iter_test_batches
    from hrm.train.evaluate import eval_batches

    run_event = next(e for e in events(trained) if e["kind"] == "run")
    root, hms = Path(run_event["dataset"]["path"]), run_event["config"]["model"]["halt_max_steps"]
    test = load_split(root, "test", "all")
    head = _head_at(trained / "checkpoints" / "step-00000004.pt", np.asarray(test["inputs"]).shape[1])
    batch = next(iter_test_batches(root, 16))[1]
    with torch.no_grad():
        _, out = head.model(head.initial_carry(batch), batch)
        head.model.inner.q_head.bias[0] -= (out["q_halt_logits"] - out["q_continue_logits"]).median()
    tot = eval_batches(head, iter_test_batches(root, 8), torch.device("cpu"), hms, n_samples=8)
    assert len({s["halt_segment"] for s in tot.samples}) >= 2
    _check_against_direct_runs(head, tot.samples, test, hms)


def _check_against_direct_runs(head: ACTLossHead, samples: list[dict], test: dict, hms: int) -> None:
    """Each sample, alone in a batch from a fresh carry: the prediction and Q logits after every segment,
    and the first segment where q_halt > q_continue (else the last)."""
    inputs = np.array(test["inputs"])
    for s in samples:
        row = int(np.flatnonzero((inputs == np.asarray(s["input"])).all(axis=1))[0])
        pid = int(np.searchsorted(np.asarray(test["puzzle_indices"]), row, side="right") - 1)
        batch = {
            "inputs": torch.as_tensor(inputs[row : row + 1], dtype=torch.int32),
            "labels": torch.as_tensor(np.array(test["labels"][row : row + 1]), dtype=torch.int32),
            "puzzle_identifiers": torch.as_tensor(np.asarray(test["puzzle_identifiers"])[pid : pid + 1]),
        }
        carry = head.initial_carry(batch)
        want_halt = hms
        with torch.no_grad():
            for seg, rec in enumerate(s["segments"], start=1):
                carry, out = head.model(carry, batch)
                assert rec["pred"] == out["logits"][0].argmax(-1).tolist(), seg
                qh, qc = float(out["q_halt_logits"][0]), float(out["q_continue_logits"][0])
                assert rec["q_halt"] == pytest.approx(qh, abs=1e-4) and rec["q_continue"] == pytest.approx(qc, abs=1e-4)
                if qh > qc and want_halt == hms and seg < hms:
                    want_halt = seg
        assert s["halt_segment"] == want_halt
        assert s["prediction"] == s["segments"][-1]["pred"]


def _tree(d: Path) -> dict[str, bytes]:
    """Every file of a run but the trainer's log (a refused start notes itself there, with its traceback)."""
    from hrm.run.layout import LOG_FILE

    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != LOG_FILE}


def test_hrm_eval_refuses_a_trainer_checkpoint_with_one_flipped_byte(trained: Path, tmp_path: Path) -> None:
    """torch.load never checks the zip CRCs: a flipped byte in a tensor loaded as wrong weights and
    hrm-eval reported metrics of a model nobody trained (found by bench/faults.py)."""
    from support.train import flip_a_data_byte

    bad = tmp_path / "flipped.pt"
    bad.write_bytes((trained / "checkpoints" / "step-00000002.pt").read_bytes())
    flip_a_data_byte(bad)  # inside the largest tensor's bytes (the middle of the file may be zip padding)
    with zipfile.ZipFile(bad) as zf:
        assert zf.testzip() is not None  # the byte is inside a tensor record, not the zip's padding
    p = run([PY, "-m", "hrm.eval", "--checkpoint", str(bad), "--device", "cpu"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and "Traceback" not in p.stderr and p.stdout == "", (p.stdout, p.stderr)
    assert len(lines) == 1 and str(bad) in lines[0] and "CRC" in lines[0], lines


def test_resume_from_a_foreign_pickle_is_one_line_and_changes_nothing(trained: Path, tmp_path: Path) -> None:
    """A plain pickle (not a zip) made torch.load print its pickle-protocol UserWarning on stderr, and the
    refusal quoted torch's advice to load with weights_only=False (found by bench/faults.py)."""
    import pickle
    import shutil

    d = tmp_path / "run"
    shutil.copytree(trained, d)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "epoch": 3}))
    zipped = tmp_path / "objects.pt"
    torch.save({"model": {"w": torch.ones(2)}, "when": np.float64(1.0)}, zipped)  # a zip with a non-tensor object
    before = _tree(d)
    for path in (foreign, zipped):
        p = run([PY, "-m", "hrm.train", "--run-dir", str(d), "--resume", str(path)])
        msg = [ln for ln in p.stderr.splitlines() if ln.startswith("hrm-train")]
        assert p.returncode != 0 and "Traceback" not in p.stderr and "Warning" not in p.stderr, p.stderr
        assert len(msg) == 1 and str(path) in msg[0] and "weights_only" not in msg[0], p.stderr
        assert _tree(d) == before
