"""Evaluation over the test split, as the reference does it (HRM-SPEC §4): a fresh carry per batch,
the model called until every row halted (in eval mode: exactly halt_max_steps calls), metrics of
the final call SUM-reduced over ranks and divided by the count.

Added for viewers: the halting histogram (the first segment where the model's own Q-head would
halt, q_halt > q_continue, else halt_max_steps) and a few sample predictions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from hrm.model.losses import METRIC_KEYS, changed_cell_sums
from hrm.train import distributed as D

log = logging.getLogger(__name__)

MAX_SAMPLES = 8


def _batches(data_root: Path, global_batch: int, env: D.DistEnv, max_examples: int | None, split: str):
    from hrm.data.loader import iter_test_batches

    for item in iter_test_batches(
        data_root, global_batch, rank=env.rank, world_size=env.world_size, max_examples=max_examples, split=split
    ):
        # (set_name, batch, effective) like the train loader; tolerate (batch, effective).
        if len(item) == 3:
            yield item[1], int(item[2])
        else:
            yield item[0], int(item[1])


@torch.inference_mode()
def evaluate(
    head: torch.nn.Module,
    data_root: Path,
    global_batch: int,
    env: D.DistEnv,
    halt_max_steps: int,
    max_examples: int | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Returns the eval event's fields: metrics, act_steps_hist, samples, num_examples, seconds."""
    t0 = time.perf_counter()
    was_training = head.training
    head.eval()
    sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64)
    hist = torch.zeros(halt_max_steps, dtype=torch.float64)
    changed = torch.zeros(2, dtype=torch.float64)  # [correct, total] over cells whose label differs from the input
    samples: list[dict[str, list[int]]] = []
    n_examples = 0
    try:
        for batch, effective in _batches(data_root, global_batch, env, max_examples, split):
            batch = {k: v.to(env.device) for k, v in batch.items()}
            metrics, first_halt, preds = _run_batch(head, batch, halt_max_steps)
            sums += torch.stack([metrics.get(k, torch.zeros(())).detach().double().cpu() for k in METRIC_KEYS])
            valid = (batch["labels"] != -100).any(dim=-1).cpu()  # padding rows have no labels
            hist += torch.bincount(first_halt.cpu()[valid] - 1, minlength=halt_max_steps)[:halt_max_steps].double()
            changed += _changed_cells(batch, preds)
            n_examples += effective
            if env.is_main and len(samples) < MAX_SAMPLES:
                samples += _samples(batch, preds, valid, MAX_SAMPLES - len(samples))
    finally:
        head.train(was_training)
    # One collective for the three (NCCL needs them on the device; gloo takes CPU tensors).
    packed = D.all_reduce_sum(env, torch.cat([sums, hist, changed]).to(env.device)).cpu()
    sums, hist, changed = packed.split([len(METRIC_KEYS), halt_max_steps, 2])
    count = max(float(sums[METRIC_KEYS.index("count")]), 1.0)
    out: dict[str, Any] = {k: float(sums[i]) / count for i, k in enumerate(METRIC_KEYS) if k != "count"}
    out["act_steps_mean"] = out.pop("steps")
    out["count"] = int(sums[METRIC_KEYS.index("count")])
    # The cells the model must change: Sudoku blanks, maze path cells (so this is path recall).
    out["changed_accuracy"] = float(changed[0] / changed[1]) if changed[1] > 0 else None
    out["changed_cells"] = int(changed[1])
    out["loss"] = out["lm_loss"] + 0.5 * (out["q_halt_loss"] + out["q_continue_loss"])
    out.update(
        act_steps_hist=[int(x) for x in hist.tolist()],
        samples=samples,
        split=split,
        num_examples=n_examples,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return out


def _run_batch(head: torch.nn.Module, batch: dict[str, torch.Tensor], halt_max_steps: int):
    carry = head.initial_carry(batch)
    B = batch["inputs"].shape[0]
    first_halt = torch.full((B,), halt_max_steps, dtype=torch.long, device=batch["inputs"].device)
    seg = 0
    while True:
        seg += 1
        carry, _loss, metrics, outputs, all_halted = head(
            carry=carry, batch=batch, return_keys=("logits", "q_halt_logits", "q_continue_logits")
        )
        wants = (
            (outputs["q_halt_logits"] > outputs["q_continue_logits"])
            if "q_continue_logits" in outputs
            else outputs["q_halt_logits"] > 0
        )
        first_halt = torch.where(
            wants & (first_halt == halt_max_steps) & (seg < halt_max_steps),
            torch.full_like(first_halt, seg),
            first_halt,
        )
        if bool(all_halted) or seg >= 4 * halt_max_steps:
            break
    preds = outputs["logits"].argmax(dim=-1) if "logits" in outputs else None
    return metrics, first_halt, preds


def _changed_cells(batch: dict[str, torch.Tensor], preds: torch.Tensor | None) -> torch.Tensor:
    if preds is None:
        return torch.zeros(2, dtype=torch.float64)
    return changed_cell_sums(preds, batch["inputs"], batch["labels"]).cpu()


def _samples(
    batch: dict[str, torch.Tensor], preds: torch.Tensor | None, valid: torch.Tensor, n: int
) -> list[dict[str, list[int]]]:
    if preds is None:
        return []
    out = []
    for i in torch.nonzero(valid).flatten().tolist()[:n]:
        out.append(
            {
                "input": batch["inputs"][i].tolist(),
                "prediction": preds[i].tolist(),
                "label": batch["labels"][i].tolist(),
            }
        )
    return out
