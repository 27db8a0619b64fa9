"""Evaluation over a dataset split, as the reference does it (HRM-SPEC §4): a fresh carry per batch, the
model called until every row halted (in eval mode: exactly halt_max_steps calls), the metric sums of the
final call added up and divided by the count. The one loop behind the trainer's `eval` events and `hrm-eval`.

Added for viewers: accuracy on the changed cells, the halting histogram (the first segment where the model's
own Q-head would halt by the rule training halts by — HRM q_halt > q_continue, TRM q_halt > 0 — else
halt_max_steps) and a few samples, each with the prediction and the Q logits after every segment ("watch it
think"; q_continue is null where the model does not learn it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrm.model.losses import IGNORE_LABEL_ID, METRIC_KEYS, ACTLossHead, changed_cell_sums
from hrm.train import distributed as D

MAX_SAMPLES = 8
# Per-segment predictions cost seq_len tokens per segment per sample: the first samples carry them until
# this many tokens are spent (all 8 Sudoku samples at halt_max_steps 16; one 30x30 maze), the rest carry
# only their halt_segment.
SEGMENT_TOKEN_BUDGET = 16384

Batch = dict[str, torch.Tensor]
OutputsHook = Callable[[Batch, dict[str, torch.Tensor], int], None]


@dataclass
class EvalTotals:
    """Host-side sums of one process's batches."""

    halt_max_steps: int
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # set name -> float64 [len(METRIC_KEYS)]
    hist: torch.Tensor | None = None  # float64 [halt_max_steps]: rows by first segment the Q-head would halt
    changed: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    samples: list[dict[str, Any]] = field(default_factory=list)
    num_examples: int = 0
    segments: int = 0  # segments run on the last batch

    def __post_init__(self) -> None:
        if self.hist is None:
            self.hist = torch.zeros(self.halt_max_steps, dtype=torch.float64)

    def packed(self) -> torch.Tensor:
        """[metric sums over all sets, hist, changed]: what ranks SUM-reduce."""
        total = sum(self.sums.values(), torch.zeros(len(METRIC_KEYS), dtype=torch.float64))
        assert self.hist is not None
        return torch.cat([total, self.hist, self.changed])


@torch.inference_mode()
def eval_batches(
    head: ACTLossHead,
    batches: Iterable[tuple[str, Batch, int]],
    device: torch.device,
    halt_max_steps: int,
    n_samples: int = 0,
    on_outputs: OutputsHook | None = None,
) -> EvalTotals:
    """Run every (set name, batch, effective rows) through the model; `on_outputs(batch, final outputs,
    effective)` sees each batch's last segment (hrm-eval saves them)."""
    was_training = head.training
    head.eval()
    tot = EvalTotals(halt_max_steps)
    try:
        for set_name, batch, effective in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            valid = (batch["labels"] != IGNORE_LABEL_ID).any(dim=-1)  # padding rows have no labels
            want = min(n_samples - len(tot.samples), int(valid.sum()))
            rows = torch.nonzero(valid).flatten()[: max(want, 0)]
            metrics, outputs, first_halt, trace = _run_batch(head, batch, halt_max_steps, rows)
            vec = torch.stack(
                [metrics[k].double() if k in metrics else torch.zeros((), device=device) for k in METRIC_KEYS]
            )
            tot.sums[set_name] = tot.sums.get(set_name, torch.zeros_like(vec, device="cpu")) + vec.cpu()
            assert tot.hist is not None
            tot.hist += torch.bincount(first_halt[valid] - 1, minlength=halt_max_steps)[:halt_max_steps].double().cpu()
            preds = outputs["logits"].argmax(dim=-1)
            tot.changed += changed_cell_sums(preds, batch["inputs"], batch["labels"]).cpu()
            tot.num_examples += int(effective)
            tot.segments = trace.segments
            if len(rows):
                tot.samples += _samples(batch, preds, rows, first_halt, trace, len(tot.samples))
            if on_outputs is not None:
                on_outputs(batch, outputs, int(effective))
    finally:
        head.train(was_training)
    return tot


@dataclass
class _Trace:
    segments: int = 0
    preds: list[torch.Tensor] = field(default_factory=list)  # per segment: [n rows, seq] of the sample rows
    q_halt: list[torch.Tensor] = field(default_factory=list)
    q_continue: list[torch.Tensor] = field(default_factory=list)


def _run_batch(head: ACTLossHead, batch: Batch, halt_max_steps: int, rows: torch.Tensor):
    carry = head.initial_carry(batch)
    first_halt = torch.full((batch["inputs"].shape[0],), halt_max_steps, dtype=torch.long, device=rows.device)
    trace = _Trace()
    keys = ("logits", "q_halt_logits", "q_continue_logits")
    while True:
        trace.segments += 1
        seg = trace.segments
        carry, _loss, metrics, outputs, all_halted = head(carry=carry, batch=batch, return_keys=keys)
        q_halt, q_cont = outputs["q_halt_logits"], outputs["q_continue_logits"]
        wants = head.model.wants_halt(q_halt, q_cont)  # the rule training halts by (TRM: q_halt > 0 alone)
        if not head.model.learns_q_continue():
            q_cont = None  # an untrained output: neither a halting input nor shown beside q_halt
        first_halt = torch.where(wants & (first_halt == halt_max_steps) & (seg < halt_max_steps), seg, first_halt)
        if len(rows):
            trace.preds.append(outputs["logits"][rows].argmax(dim=-1))
            trace.q_halt.append(q_halt[rows])
            if q_cont is not None:
                trace.q_continue.append(q_cont[rows])
        if bool(all_halted) or seg >= 4 * halt_max_steps:
            break
    return metrics, outputs, first_halt, trace


def _samples(
    batch: Batch, preds: torch.Tensor, rows: torch.Tensor, first_halt: torch.Tensor, trace: _Trace, have: int
) -> list[dict[str, Any]]:
    seq = int(batch["inputs"].shape[1])
    traced = max(1, SEGMENT_TOKEN_BUDGET // max(1, seq * trace.segments))  # samples that carry segments
    seg_preds = torch.stack(trace.preds, dim=1).tolist()  # [n, segments, seq]
    q_halt = torch.stack(trace.q_halt, dim=1).tolist()
    q_cont = torch.stack(trace.q_continue, dim=1).tolist() if trace.q_continue else None
    out = []
    for j, i in enumerate(rows.tolist()):
        sample: dict[str, Any] = {
            "input": batch["inputs"][i].tolist(),
            "prediction": preds[i].tolist(),
            "label": batch["labels"][i].tolist(),
            "halt_segment": int(first_halt[i]),
        }
        if have + j < traced:
            sample["segments"] = [
                {
                    "pred": seg_preds[j][s],
                    "q_halt": round(q_halt[j][s], 4),
                    "q_continue": round(q_cont[j][s], 4) if q_cont is not None else None,
                }
                for s in range(trace.segments)
            ]
        out.append(sample)
    return out


def summarize(packed: torch.Tensor, halt_max_steps: int) -> dict[str, Any]:
    """The reference's division of [metric sums, hist, changed]: every metric (losses too) by count."""
    sums, hist, changed = packed.double().cpu().split([len(METRIC_KEYS), halt_max_steps, 2])
    n = float(sums[METRIC_KEYS.index("count")])
    out: dict[str, Any] = {k: float(sums[i]) / max(n, 1.0) for i, k in enumerate(METRIC_KEYS) if k != "count"}
    out["count"] = int(n)
    out["act_steps_mean"] = out["steps"]
    # The cells the model must change: Sudoku blanks, maze path cells (so this is path recall).
    out["changed_accuracy"] = float(changed[0] / changed[1]) if changed[1] > 0 else None
    out["changed_cells"] = int(changed[1])
    out["loss"] = out["lm_loss"] + 0.5 * (out["q_halt_loss"] + out["q_continue_loss"])
    out["act_steps_hist"] = [int(x) for x in hist.tolist()]
    return out


def evaluate(
    head: ACTLossHead,
    data_root: Path,
    global_batch: int,
    env: D.DistEnv,
    halt_max_steps: int,
    max_examples: int | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """The trainer's eval event fields: metrics, act_steps_hist, samples, split, num_examples, seconds."""
    from hrm.data.loader import iter_test_batches

    t0 = time.perf_counter()
    batches = iter_test_batches(
        data_root, global_batch, rank=env.rank, world_size=env.world_size, max_examples=max_examples, split=split
    )
    tot = eval_batches(head, batches, env.device, halt_max_steps, n_samples=MAX_SAMPLES if env.is_main else 0)
    # One collective for all sums (NCCL needs them on the device; gloo takes CPU tensors).
    out = summarize(D.all_reduce_sum(env, tot.packed().to(env.device)), halt_max_steps)
    del out["steps"]  # the event calls it act_steps_mean
    out.update(samples=tot.samples, split=split, num_examples=tot.num_examples)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
