"""The train event's viewer metrics — changed_accuracy (Sudoku blanks, maze path), param_norm, act_steps_hist —
checked against a direct computation and against the weights the trainer checkpointed, and the step's single
host read: no tensor → host copy besides the one reduced vector."""

from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from support.train import TINY, effective, events
from torch.utils._python_dispatch import TorchDispatchMode

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead
from hrm.train import distributed as D
from hrm.train.steering import FLAGS
from hrm.train.step import forward_backward, pack, param_sq, trained_tensors, unpack

B, SEQ, VOCAB, HMS = 6, 9, 5, 3


def _head() -> ACTLossHead:
    torch.manual_seed(0)
    cfg = HRMConfig(
        batch_size=B,
        seq_len=SEQ,
        vocab_size=VOCAB,
        hidden_size=16,
        num_heads=2,
        H_layers=1,
        L_layers=1,
        H_cycles=1,
        L_cycles=1,
        halt_max_steps=HMS,
        halt_exploration_prob=0.5,
        puzzle_emb_ndim=8,
        num_puzzle_identifiers=4,
    )
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    q = head.model.inner.q_head
    with torch.no_grad():  # a q head that halts about half the rows at once (the reference's init never halts)
        q.weight.normal_(0, 1.0)
        _, _, _, out, _ = head(
            head.initial_carry(_batch(0)), _batch(0), return_keys=("q_halt_logits", "q_continue_logits")
        )
        q.bias[0] -= (out["q_halt_logits"] - out["q_continue_logits"]).median()
    return head.train()


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, VOCAB, (B, SEQ), generator=g, dtype=torch.int32)
    inputs = torch.where(torch.rand(B, SEQ, generator=g) < 0.5, labels, 0)  # half the cells blank
    labels[-1] = -100  # a row without labels never counts
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.randint(0, 4, (B,), generator=g)}


def test_step_fields_equal_a_direct_computation() -> None:
    """changed_accuracy, act_steps_hist and the carried parameter norm of several real steps, recomputed
    with plain Python from the model's own outputs on the same carry and the same random draws."""
    head, env = _head(), D.init_distributed("cpu")
    params = [p for p in head.parameters() if p.requires_grad]
    twin = copy.deepcopy(head)
    carry = head.initial_carry(_batch(0))
    twin_carry = copy.deepcopy(carry)
    seen_hist = Counter()
    for step in range(6):
        batch = _batch(step)
        torch.manual_seed(100 + step)
        carry, t = forward_backward(head, carry, batch, B, env, params, HMS)
        norm_sq = param_sq(trained_tensors(head))
        res = unpack(D.all_reduce_sum(env, pack(env, t, norm_sq, torch.zeros(len(FLAGS)))), B)
        head.zero_grad()

        torch.manual_seed(100 + step)
        with torch.no_grad():
            twin_carry, _loss, metrics, out, _ = twin(twin_carry, batch, return_keys=("logits",))
        preds = out["logits"].argmax(-1).tolist()
        data = twin_carry.current_data
        correct = total = 0
        hist = [0] * HMS
        for r in range(B):
            lab, inp = data["labels"][r].tolist(), data["inputs"][r].tolist()
            if not bool(twin_carry.halted[r]) or all(x == -100 for x in lab):
                continue
            hist[int(twin_carry.steps[r]) - 1] += 1
            for p, x, y in zip(preds[r], inp, lab):
                if y != -100 and x != y:
                    total += 1
                    correct += p == y
        assert res.metrics["act_steps_hist"] == hist
        assert sum(hist) == res.metrics["count"] == int(metrics["count"])
        assert res.metrics["changed_accuracy"] == (pytest.approx(correct / total) if total else None)
        expected_norm = math.sqrt(
            sum(float((x.detach().double() ** 2).sum()) for x in twin.parameters()) + _table_sq(twin)
        )
        assert res.prev_param_norm == pytest.approx(expected_norm, rel=1e-12)
        seen_hist.update(i for i, n in enumerate(hist) if n)
    assert len(seen_hist) >= 2, "the steps should halt rows at more than one ACT step"


def _table_sq(head: ACTLossHead) -> float:
    return float((head.model.inner.puzzle_emb.weights.double() ** 2).sum())


def _checkpoint_norm(path: Path, param_names: set[str]) -> float:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    keys = [k for k in state if k in param_names or k.endswith("puzzle_emb.weights")]
    return math.sqrt(sum(float((state[k].double() ** 2).sum()) for k in keys))


def test_train_events_match_the_checkpointed_weights(tmp_path: Path) -> None:
    """A real run: each step's param_norm is the norm of the weights checkpointed at that step, whether it
    travelled in the next step's reduction (no checkpoint there) or was read at the checkpoint; the halting
    histogram adds up to the rows counted and to act_steps_mean."""
    from hrm.train.cli import main

    every, sparse = tmp_path / "every", tmp_path / "sparse"
    common = [*TINY, "train.total_steps=6", "train.eval_interval=100", "train.keep_last=10"]
    assert main([*common, "train.checkpoint_interval=1", "--run-dir", str(every)]) == 0
    assert main([*common, "train.checkpoint_interval=100", "--run-dir", str(sparse)]) == 0
    tr_every, tr_sparse = effective(events(every)), effective(events(sparse))
    assert sorted(tr_every) == sorted(tr_sparse) == [1, 2, 3, 4, 5, 6]

    names = {f"inner.{n}" for n, _ in _head().model.inner.named_parameters()}
    for step, ev in tr_every.items():
        ckpt = every / "checkpoints" / f"step-{step:08d}.pt"
        assert ev["param_norm"] == pytest.approx(_checkpoint_norm(ckpt, names), rel=1e-12), step
        # the same number, carried by the next step's reduction in the run without checkpoints
        assert tr_sparse[step]["param_norm"] == ev["param_norm"], step
    for ev in tr_every.values():
        hist = ev["act_steps_hist"]
        assert len(hist) == 3 and sum(hist) == ev["count"]
        if ev["count"]:
            assert sum((i + 1) * n for i, n in enumerate(hist)) / ev["count"] == pytest.approx(ev["act_steps_mean"])
            assert 0.0 <= ev["changed_accuracy"] <= 1.0
        else:
            assert ev["changed_accuracy"] is None


def test_act_off_has_no_histogram(tmp_path: Path) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main([*TINY, "model.halt_max_steps=1", "train.total_steps=2", "--run-dir", str(d)]) == 0
    tr = effective(events(d))
    assert all("act_steps_hist" not in e and e["count"] == 8 and e["param_norm"] > 0 for e in tr.values())
    assert all(0.0 <= e["changed_accuracy"] <= 1.0 for e in tr.values())


# Operators that make the host wait for the device (a .item(), a data-dependent output size).
_SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "is_nonzero", "equal", "item")


class _HostReads(TorchDispatchMode):
    """Records every syncing operator by the storage it reads. On the CPU every tensor is a host tensor,
    so the test names the ones that live on the host by design and checks that nothing else is read."""

    def __init__(self, host: set[int]) -> None:
        super().__init__()
        self.host, self.allowed, self.other = host, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.__name__.split(".")[0]
        if any(name == s or name.startswith(s + "_") for s in _SYNCING):
            src = next(a for a in args if isinstance(a, torch.Tensor))
            if src.untyped_storage().data_ptr() in self.host:
                self.allowed += 1
            else:
                self.other.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_train_step_reads_the_device_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over several real trainer steps (ACT on, rows halting): one reduction and one host read (`tolist`)
    per step, and no syncing operator on any tensor but the reduced vector and the optimizers' step
    counters (kept on the CPU by design)."""
    from hrm.run.config import load_preset
    from hrm.train.session import Session
    from hrm.train.trainer import Trainer

    cfg = load_preset("tiny", ["train.total_steps=100", "train.eval_interval=100", "train.checkpoint_interval=100"])
    s = Session.open(cfg, tmp_path / "run", D.init_distributed("cpu"))
    try:
        t = Trainer(s)
        s.status("running")
        for _ in range(2):  # first-call paths; creates the optimizer state
            t._train_one()
        host = {
            v.untyped_storage().data_ptr()
            for opt in s.optim.optimizers
            for st in opt.state.values()
            for k, v in st.items()
            if k == "step" and isinstance(v, torch.Tensor)
        }
        assert host, "the optimizers keep step counters"
        reduces, reads = [], []
        real_reduce, real_tolist = D.all_reduce_sum, torch.Tensor.tolist

        def reduce(env: D.DistEnv, v: torch.Tensor) -> torch.Tensor:
            out = real_reduce(env, v)
            reduces.append(v.numel())
            host.add(out.untyped_storage().data_ptr())
            return out

        monkeypatch.setattr(D, "all_reduce_sum", reduce)
        monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.numel()) or real_tolist(self))
        mode = _HostReads(host)
        with mode:
            for _ in range(5):
                t._train_one()
        monkeypatch.undo()
        assert mode.other == []
        assert mode.allowed > 0  # the mode did see the step counters and the flags being read
        assert len(reduces) == len(reads) == 5 and reads == reduces
        assert t.step == 7 and sum(t.last_train["act_steps_hist"]) == t.last_train["count"]
    finally:
        s.close()


def test_log_interval_aggregates_the_new_fields(tmp_path: Path) -> None:
    """With train.log_interval=3 one event stands for three steps: the histograms summed, the loss and
    changed_accuracy averaged, the parameter norm of the last step (same runs, same steps otherwise)."""
    from hrm.train.cli import main

    each, every3 = tmp_path / "each", tmp_path / "every3"
    common = [*TINY, "train.total_steps=6", "train.eval_interval=100", "train.checkpoint_interval=100"]
    assert main([*common, "--run-dir", str(each)]) == 0
    assert main([*common, "train.log_interval=3", "--run-dir", str(every3)]) == 0
    one, agg = effective(events(each)), effective(events(every3))
    assert sorted(agg) == [3, 6]
    for end in (3, 6):
        steps = [one[s] for s in range(end - 2, end + 1)]
        assert agg[end]["steps_aggregated"] == 3
        assert agg[end]["act_steps_hist"] == [sum(col) for col in zip(*(e["act_steps_hist"] for e in steps))]
        assert agg[end]["param_norm"] == one[end]["param_norm"]
        assert agg[end]["loss"] == pytest.approx(sum(e["loss"] for e in steps) / 3, rel=1e-12)
        # a step where no row halted has no changed_accuracy: the mean is over the steps that have one
        changed = [e["changed_accuracy"] for e in steps if e["changed_accuracy"] is not None]
        assert changed, "tiny halts every row by the third step"
        assert agg[end]["changed_accuracy"] == pytest.approx(sum(changed) / len(changed), rel=1e-12)
