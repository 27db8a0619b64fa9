"""ACT loss head (HRM-SPEC §2): stablemax / softmax cross-entropy, Q-halt and Q-continue BCE, metric sums."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hrm.model.hrm_act import Batch, Carry, HierarchicalReasoningModel_ACTV1
from hrm.model.trm import TinyRecursiveReasoningModel_ACTV1

ACTModel = HierarchicalReasoningModel_ACTV1 | TinyRecursiveReasoningModel_ACTV1

IGNORE_LABEL_ID = -100

# The head's metric sums, sorted like the reference's stacking order (a missing key counts as 0).
# The one list: the train step and evaluation both reduce exactly these.
METRIC_KEYS = (
    "accuracy",
    "count",
    "exact_accuracy",
    "lm_loss",
    "q_continue_loss",
    "q_halt_accuracy",
    "q_halt_loss",
    "steps",
)


def changed_cell_sums(
    preds: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """float64 [correct, total] over the cells the model must change (label present and different from
    the input: Sudoku blanks, maze path cells, so correct/total is path recall there), counted in `rows`
    (bool [B]; all rows when None). Stays on the device: no host sync."""
    mask = (labels != IGNORE_LABEL_ID) & (inputs != labels)
    if rows is not None:
        mask = mask & rows.view(-1, 1)
    correct = (mask & (preds == labels)).sum()
    return torch.stack([correct, mask.sum()]).to(torch.float64)


def _stablemax_s(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    """s(x) = x+1 for x ≥ 0, 1/(1−x+ε) for x < 0: a positive, monotone, only linearly growing exp."""
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = _stablemax_s(x)
    return torch.log(s_x / torch.sum(s_x, dim=dim, keepdim=True))


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token −log stablemax(logits)[label] in float64; 0 where label == ignore_index."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, index=safe_labels.unsqueeze(-1), dim=-1).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32; 0 where label == ignore_index."""
    return F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        labels.to(torch.long).reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(labels.shape)


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


class ACTLossHead(nn.Module):
    """Wraps the ACT model as `.model` (state_dict keys `model.inner.*`) and adds the loss and metric sums."""

    def __init__(self, model: ACTModel, loss_type: str = "stablemax_cross_entropy") -> None:
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"loss_type {loss_type!r} is not one of {sorted(LOSS_FUNCTIONS)}")
        self.model = model
        self.loss_type = loss_type
        self.loss_fn = LOSS_FUNCTIONS[loss_type]

    def initial_carry(self, batch: Batch) -> Carry:
        return self.model.initial_carry(batch)

    def forward(
        self, carry: Carry, batch: Batch, return_keys: Iterable[str] = ()
    ) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Returns (new_carry, loss, metric sums, requested detached outputs, all_halted).

        Every row is supervised at every segment (deep supervision); metrics count only rows that halted
        on this call and have at least one label.
        """
        new_carry, outputs = self.model(carry, batch)
        labels = new_carry.current_data["labels"]  # the carry's data, not the fed batch
        logits = outputs["logits"]

        with torch.no_grad():
            mask = labels != IGNORE_LABEL_ID
            loss_counts = mask.sum(-1)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)
            is_correct = mask & (torch.argmax(logits, dim=-1) == labels)
            seq_is_correct = is_correct.sum(-1) == loss_counts
            valid = new_carry.halted & (loss_counts > 0)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_is_correct).sum(),
                "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(valid, new_carry.steps, 0).sum(),
            }

        lm_loss = (self.loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID) / loss_divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(
            outputs["q_halt_logits"], seq_is_correct.to(outputs["q_halt_logits"].dtype), reduction="sum"
        )
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()

        q_continue_loss: torch.Tensor | int = 0
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
            )
            metrics["q_continue_loss"] = q_continue_loss.detach()

        detached = {k: outputs[k].detach() for k in return_keys if k in outputs}
        loss = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
        return new_carry, loss, metrics, detached, new_carry.halted.all()
