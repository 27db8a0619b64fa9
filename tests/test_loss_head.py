"""Stablemax cross-entropy and the ACT loss head on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hrm.model.hrm_act import Carry, InnerCarry
from hrm.model.losses import ACTLossHead, log_stablemax, softmax_cross_entropy, stablemax_cross_entropy


def test_stablemax_hand_computed() -> None:
    # s(2)=3, s(−1)=1/2, s(0)=1 → p = [3, 0.5, 1] / 4.5
    logits = torch.tensor([[[2.0, -1.0, 0.0]]])
    assert torch.allclose(
        log_stablemax(logits.double()), torch.log(torch.tensor([3, 0.5, 1], dtype=torch.float64) / 4.5)
    )
    loss = stablemax_cross_entropy(logits, torch.tensor([[0]]))
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(-math.log(3 / 4.5), rel=1e-15)
    assert stablemax_cross_entropy(logits, torch.tensor([[1]])).item() == pytest.approx(-math.log(0.5 / 4.5), rel=1e-15)
    assert stablemax_cross_entropy(logits, torch.tensor([[-100]])).item() == 0.0


def test_stablemax_is_computed_in_float64_from_bf16_logits() -> None:
    logits = torch.tensor([[[1000.0, -3.0]]], dtype=torch.bfloat16)
    loss = stablemax_cross_entropy(logits, torch.tensor([[1]]))
    assert loss.dtype == torch.float64 and math.isfinite(loss.item())
    assert loss.item() == pytest.approx(-math.log(0.25 / (1001 + 0.25)), rel=1e-12)


def test_softmax_cross_entropy_ignores_minus_100() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 1.0]]])
    loss = softmax_cross_entropy(logits, torch.tensor([[1, -100]]))
    assert loss.shape == (1, 2) and loss[0, 1].item() == 0.0
    assert loss[0, 0].item() == pytest.approx(-math.log(3 / 4), rel=1e-6)


def test_softmax_cross_entropy_takes_sliced_logits() -> None:
    # The model's logits drop the puzzle position, a non-contiguous slice of a batch: training
    # with loss_type=softmax_cross_entropy must accept it.
    row = [[9.0, 9.0], [0.0, math.log(3.0)], [5.0, 1.0]]
    logits = torch.tensor([row, row])[:, 1:]
    assert not logits.is_contiguous()
    loss = softmax_cross_entropy(logits, torch.tensor([[1, -100], [1, -100]]))
    assert loss.shape == (2, 2) and loss[:, 1].tolist() == [0.0, 0.0]
    assert loss[:, 0].tolist() == pytest.approx([-math.log(3 / 4)] * 2, rel=1e-6)


class _Fixed(nn.Module):
    """Stands in for the ACT model: returns a prepared carry and outputs."""

    def __init__(self, carry: Carry, outputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.carry, self.outputs = carry, outputs

    def forward(self, carry: Carry, batch: dict) -> tuple[Carry, dict[str, torch.Tensor]]:
        return self.carry, dict(self.outputs)


def _one_hot_logits(pred: list[list[int]], vocab: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), vocab).float() * 2.0  # argmax = pred


def test_loss_head_sums_on_a_hand_made_batch() -> None:
    labels = torch.tensor(
        [
            [1, 2, 3],  # all correct, halted
            [1, 2, -100],  # one wrong of 2 valid, halted
            [-100, -100, -100],  # no labels (padding), halted → not counted
            [3, 3, 3],
        ]
    )  # correct but not halted → not counted
    pred = [[1, 2, 3], [1, 0, 0], [0, 0, 0], [3, 3, 3]]
    halted = torch.tensor([True, True, True, False])
    steps = torch.tensor([3, 2, 4, 1], dtype=torch.int32)
    q_halt = torch.tensor([1.0, 1.0, -1.0, -2.0])
    q_cont = torch.tensor([0.5, -0.5, 0.0, 0.0])
    target = torch.tensor([0.25, 0.75, 0.5, 1.0])
    carry = Carry(
        InnerCarry(torch.zeros(4, 1, 1), torch.zeros(4, 1, 1)),
        steps,
        halted,
        {"labels": labels, "inputs": labels.clone(), "puzzle_identifiers": torch.zeros(4, dtype=torch.int32)},
    )
    logits = _one_hot_logits(pred)
    head = ACTLossHead(
        _Fixed(carry, dict(logits=logits, q_halt_logits=q_halt, q_continue_logits=q_cont, target_q_continue=target))
    )
    # the fed batch's labels are all ignored: the head must read the carry's
    fed = {"labels": torch.full_like(labels, -100)}
    new_carry, loss, m, out, all_halted = head(carry, fed, return_keys=("logits", "missing"))

    seq_correct = torch.tensor([1.0, 0.0, 1.0, 1.0])  # padding row counts as "correct"
    assert int(m["count"]) == 2
    assert m["accuracy"].item() == pytest.approx(1.0 + 0.5)
    assert int(m["exact_accuracy"]) == 1
    assert int(m["q_halt_accuracy"]) == 1  # row 0: q≥0 and correct; row 1: q≥0 but wrong
    assert int(m["steps"]) == 3 + 2

    per_token = stablemax_cross_entropy(logits, labels)
    lm = (per_token.sum(-1) / torch.tensor([3, 2, 1, 3])).sum()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    qh = bce(q_halt, seq_correct, reduction="sum")
    qc = bce(q_cont, target, reduction="sum")
    assert m["lm_loss"].item() == pytest.approx(lm.item(), rel=1e-12)
    assert m["q_halt_loss"].item() == pytest.approx(qh.item(), rel=1e-6)
    assert m["q_continue_loss"].item() == pytest.approx(qc.item(), rel=1e-6)
    assert loss.item() == pytest.approx((lm + 0.5 * (qh + qc)).item(), rel=1e-6)
    assert loss.dtype == torch.float64
    assert set(out) == {"logits"} and not bool(all_halted)


def test_no_q_continue_term_without_target() -> None:
    labels = torch.tensor([[1, 2]])
    carry = Carry(
        InnerCarry(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)),
        torch.ones(1, dtype=torch.int32),
        torch.ones(1, dtype=torch.bool),
        {"labels": labels},
    )
    q = torch.tensor([0.0])
    head = ACTLossHead(_Fixed(carry, dict(logits=_one_hot_logits([[1, 2]]), q_halt_logits=q, q_continue_logits=q)))
    _, loss, m, _, all_halted = head(carry, {})
    assert "q_continue_loss" not in m and bool(all_halted)
    assert loss.item() == pytest.approx(m["lm_loss"].item() + 0.5 * math.log(2), rel=1e-6)


def test_unknown_loss_type_is_refused() -> None:
    with pytest.raises(ValueError, match="loss_type"):
        ACTLossHead(nn.Identity(), loss_type="hinge")
