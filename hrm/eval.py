"""`hrm-eval`: evaluate a checkpoint (ours, or the reference's weights + all_config.yaml) on a dataset split,
exactly as the reference `evaluate`: a fresh carry per test batch, the model called until every row has
halted (in eval mode: exactly halt_max_steps calls), the metric sums of that final call accumulated per
set and divided by the count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

SAVE_KEYS = ("inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits")
METRIC_ORDER = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hrm-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="our checkpoint (.pt) or a reference step_N file")
    p.add_argument("--config", help="reference all_config.yaml (default: the one beside the checkpoint)")
    p.add_argument("--data", required=True, help="dataset root (holds <split>/dataset.json)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, help="batch size (default: the checkpoint's training batch size)")
    p.add_argument("--max-examples", type=int, help="evaluate only the first N examples")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--save-outputs",
        metavar="DIR",
        help="write inputs, labels, puzzle_identifiers, logits, q_halt_logits, q_continue_logits as "
        ".npy in test-set order (padding rows of the last batch dropped)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="compute dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    return p


def _batches(root: Path, split: str, batch_size: int, max_examples: int | None):
    """(set_name, batch, effective rows) from the shared test loader (tolerates (batch, effective) items)."""
    from hrm.data.loader import iter_test_batches

    kwargs: dict[str, Any] = {"max_examples": max_examples}
    if split != "test":
        kwargs["split"] = split
    for item in iter_test_batches(root, batch_size, **kwargs):
        if len(item) == 3:
            yield str(item[0]), item[1], int(item[2])
        else:
            yield "all", item[0], int(item[1])


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    config: str | Path | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    save_outputs: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate and return {"metrics": {...}, "sets": {set: {...}}, ...} (metrics divided by count)."""
    import numpy as np
    import torch

    from hrm.data.format import read_metadata
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
    from hrm.model.layers import resolve_forward_dtype
    from hrm.model.losses import ACTLossHead
    from hrm.model.reference import CheckpointMismatch, load_any_checkpoint, load_model_weights

    t0 = time.perf_counter()
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda given but torch sees no CUDA device (use --device cpu)")
    ckpt = load_any_checkpoint(checkpoint, config)
    meta = read_metadata(data, split)
    bs = int(batch_size or ckpt.batch_size or 256)
    fdtype = str(resolve_forward_dtype(None if dtype == "auto" else dtype, dev)).removeprefix("torch.")
    cfg = ckpt.build_config(
        seq_len=int(meta.seq_len), batch_size=bs, forward_dtype=fdtype, vocab_size=int(meta.vocab_size)
    )
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg), loss_type=ckpt.loss_type)
    load_model_weights(head, ckpt.state_dict)
    head.to(dev).eval()

    sums: dict[str, dict[str, float]] = {}
    saved: dict[str, list[Any]] = {k: [] for k in SAVE_KEYS}
    n_examples, segments = 0, 0
    with torch.inference_mode():
        for set_name, batch, effective in _batches(Path(data), split, bs, max_examples):
            ids = batch["puzzle_identifiers"]
            if cfg.puzzle_emb_ndim > 0 and int(ids.max()) >= cfg.num_puzzle_identifiers:
                raise CheckpointMismatch(
                    f"data {data} uses puzzle identifier {int(ids.max())} but checkpoint tensor "
                    f"'puzzle_emb.weights' has {cfg.num_puzzle_identifiers} rows: a different dataset build"
                )
            batch = {k: v.to(dev) for k, v in batch.items()}
            carry = head.initial_carry(batch)
            segments = 0
            while True:  # eval mode: every row halts at halt_max_steps, all together
                carry, _, metrics, outputs, all_halted = head(carry, batch, return_keys=SAVE_KEYS[3:])
                segments += 1
                if bool(all_halted):
                    break
            acc = sums.setdefault(set_name, {})
            for k, v in metrics.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n_examples += effective
            if save_outputs is not None:
                for k in SAVE_KEYS:
                    src = batch[k] if k in batch else outputs[k]
                    saved[k].append(
                        src[:effective].float().cpu().numpy() if k in outputs else src[:effective].cpu().numpy()
                    )

    per_set = {name: _normalise(acc) for name, acc in sums.items()}
    total: dict[str, float] = {}
    for acc in sums.values():
        for k, v in acc.items():
            total[k] = total.get(k, 0.0) + v
    if save_outputs is not None:
        out_dir = Path(save_outputs)
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, parts in saved.items():
            np.save(out_dir / f"{k}.npy", np.concatenate(parts) if parts else np.zeros((0,)))
    return {
        "checkpoint": str(checkpoint),
        "kind": ckpt.kind,
        "step": ckpt.step,
        "split": split,
        "data": str(data),
        "num_examples": n_examples,
        "batch_size": bs,
        "segments": segments,
        "device": str(dev),
        "dtype": fdtype,
        "metrics": _normalise(total),
        "sets": per_set,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _normalise(acc: dict[str, float]) -> dict[str, float]:
    """The reference's reduction: every metric (losses too) divided by count; count reported as is."""
    count = acc.get("count", 0.0)
    out = {k: v / count if count else 0.0 for k, v in acc.items() if k != "count"}
    out["count"] = int(count)
    return out


def _table(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [
        f"checkpoint {result['checkpoint']} ({result['kind']}, step {result['step']})",
        f"data {result['data']} [{result['split']}]: {result['num_examples']} examples, "
        f"{result['segments']} segments per batch, {result['device']} {result['dtype']}, "
        f"{result['seconds']:.1f} s",
    ]
    for k in METRIC_ORDER + tuple(k for k in m if k not in METRIC_ORDER):
        if k in m:
            lines.append(f"  {k:<16} {m[k]:.6g}" if k != "count" else f"  {k:<16} {m[k]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hrm.model.reference import CheckpointError

    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split,
            config=args.config,
            batch_size=args.batch_size,
            max_examples=args.max_examples,
            device=args.device,
            dtype=args.dtype,
            save_outputs=args.save_outputs,
        )
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"hrm-eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
