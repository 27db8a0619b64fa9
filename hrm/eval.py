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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAVE_KEYS = ("inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits")
METRIC_ORDER = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hrm-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="our checkpoint (.pt) or a reference step_N file")
    p.add_argument("--config", help="reference all_config.yaml (default: the one beside the checkpoint)")
    p.add_argument(
        "--data", help="dataset root (holds <split>/dataset.json); default: the dataset the checkpoint's run trained on"
    )
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
    ttc = p.add_argument_group("test-time compute (HRM and TRM checkpoints)")
    ttc.add_argument(
        "--segments", type=int, metavar="N", help="run N ACT segments (more than trained) and score after each count"
    )
    ttc.add_argument(
        "--trajectories",
        type=int,
        metavar="K",
        help="K variants per puzzle (the dataset's augmentations; the first is the puzzle itself), mapped back",
    )
    ttc.add_argument("--pick", choices=("qhalt", "vote", "both"), default="both", help="how K answers become one")
    ttc.add_argument("--no-augment", action="store_true", help="K identical trajectories (a check: equals K = 1)")
    ttc.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="S",
        help="trajectories 2..K: the puzzle itself with seeded Gaussian noise (S × the state's RMS) on the latent "
        "state before each segment after the first, instead of augmentations (0: off)",
    )
    ttc.add_argument("--seed", type=int, default=0, help="seed of the Sudoku variants and of the noise")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="compute dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    return p


def default_data(checkpoint: Path, raw: dict[str, Any], split: str) -> Path:
    """The dataset the checkpoint's run trained on: its config's data recipe (as the trainer resolves it),
    else the path the run event recorded; an error naming the fix when neither is there."""
    from hrm.run.layout import CKPT_DIR, events_path
    from hrm.run.recipes import dataset_dir

    tried: list[str] = []
    recipe = (raw.get("config") or {}).get("data")
    if isinstance(recipe, dict):
        path = dataset_dir(recipe)
        if (path / split / "dataset.json").is_file():
            return path
        tried.append(str(path))
    run_dir = checkpoint.resolve().parent.parent if checkpoint.resolve().parent.name == CKPT_DIR else None
    if run_dir is not None and events_path(run_dir).is_file():
        with open(events_path(run_dir), "rb") as f:  # the run event is near the top; a resume adds one later
            recorded = [json.loads(line) for line in f if b'"kind":"run"' in line[:80]]
        for ev in reversed(recorded):
            path = Path(str((ev.get("dataset") or {}).get("path", "")))
            if (path / split / "dataset.json").is_file():
                return path
            tried.append(str(path))
    where = f" (looked in {', '.join(tried)})" if tried else ""
    raise ValueError(
        f"{checkpoint}: the dataset its run trained on is not there{where}; build it with `hrm-data build` "
        "or pass --data DIR"
    )


@dataclass
class Loaded:
    """A checkpoint ready to evaluate: the loss head in eval mode on its device, its config and the data."""

    head: Any  # ACTLossHead
    cfg: Any  # HRMConfig or TRMConfig
    ckpt: Any  # LoadedCheckpoint
    data: Path
    batch_size: int
    device: Any  # torch.device
    dtype: str


def load_for_eval(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    config: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Loaded:
    """Read the checkpoint, complete its config from the data, build the model and load every tensor."""
    import torch

    from hrm.data.format import read_metadata
    from hrm.model.factory import build_model
    from hrm.model.layers import resolve_forward_dtype
    from hrm.model.losses import ACTLossHead
    from hrm.model.reference import load_any_checkpoint, load_model_weights

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda given but torch sees no CUDA device (use --device cpu)")
    ckpt = load_any_checkpoint(checkpoint, config)
    if data is None:
        if ckpt.kind != "hrm-tui":
            raise ValueError(f"{checkpoint}: a reference checkpoint does not record its dataset; pass --data DIR")
        data = default_data(Path(checkpoint), ckpt.raw, split)
    meta = read_metadata(data, split)
    bs = int(batch_size or ckpt.batch_size or 256)
    fdtype = str(resolve_forward_dtype(None if dtype == "auto" else dtype, dev)).removeprefix("torch.")
    cfg = ckpt.build_config(
        seq_len=int(meta.seq_len), batch_size=bs, forward_dtype=fdtype, vocab_size=int(meta.vocab_size)
    )
    head = ACTLossHead(build_model(cfg), loss_type=ckpt.loss_type)
    load_model_weights(head, ckpt.state_dict)
    head.to(dev).eval()
    return Loaded(head, cfg, ckpt, Path(data), bs, dev, fdtype)


def checked_batches(loaded: Loaded, split: str, max_examples: int | None):
    """The split's batches, refusing puzzle identifiers the checkpoint's embedding does not have."""
    from hrm.data.loader import iter_test_batches
    from hrm.model.reference import CheckpointMismatch

    cfg = loaded.cfg
    for set_name, batch, effective in iter_test_batches(
        loaded.data, loaded.batch_size, max_examples=max_examples, split=split
    ):
        ids = batch["puzzle_identifiers"]
        if cfg.puzzle_emb_ndim > 0 and int(ids.max()) >= cfg.num_puzzle_identifiers:
            raise CheckpointMismatch(
                f"data {loaded.data} uses puzzle identifier {int(ids.max())} but checkpoint tensor "
                f"'puzzle_emb.weights' has {cfg.num_puzzle_identifiers} rows: a different dataset build"
            )
        yield set_name, batch, effective


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    config: str | Path | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    save_outputs: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate and return {"metrics": {...}, "sets": {set: {...}}, ...} (metrics divided by count), with the
    trainer's own evaluation loop; `data` defaults to the dataset an hrm-tui checkpoint's run trained on."""
    import numpy as np
    import torch

    from hrm.model.losses import METRIC_KEYS
    from hrm.train.evaluate import eval_batches, summarize

    t0 = time.perf_counter()
    loaded = load_for_eval(
        checkpoint, data, split=split, config=config, batch_size=batch_size, device=device, dtype=dtype
    )
    head, cfg, ckpt, dev, bs, fdtype, data = (
        loaded.head,
        loaded.cfg,
        loaded.ckpt,
        loaded.device,
        loaded.batch_size,
        loaded.dtype,
        loaded.data,
    )
    saved: dict[str, list[Any]] = {k: [] for k in SAVE_KEYS}

    def save(batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], effective: int) -> None:
        for k in SAVE_KEYS:
            src = outputs[k].float() if k in outputs else batch[k]
            saved[k].append(src[:effective].cpu().numpy())

    tot = eval_batches(
        head,
        checked_batches(loaded, split, max_examples),
        dev,
        cfg.halt_max_steps,
        on_outputs=save if save_outputs is not None else None,
    )
    no_extras = torch.zeros(cfg.halt_max_steps + 2, dtype=torch.float64)  # sets report the metric keys only
    per_set = {
        name: {k: v for k, v in summarize(torch.cat([sums, no_extras]), cfg.halt_max_steps).items() if k in METRIC_KEYS}
        for name, sums in tot.sums.items()
    }
    if save_outputs is not None:
        out_dir = Path(save_outputs)
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, parts in saved.items():
            np.save(out_dir / f"{k}.npy", np.concatenate(parts) if parts else np.zeros((0,)))
    metrics = summarize(tot.packed(), cfg.halt_max_steps)
    return {
        "checkpoint": str(checkpoint),
        "kind": ckpt.kind,
        "weights": "ema" if ckpt.raw.get("ema") else "model",
        "step": ckpt.step,
        "split": split,
        "data": str(data),
        "num_examples": tot.num_examples,
        "batch_size": bs,
        "segments": tot.segments,
        "device": str(dev),
        "dtype": fdtype,
        "metrics": metrics,
        "sets": per_set,
        "seconds": round(time.perf_counter() - t0, 3),
    }


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
            v = m[k]
            lines.append(f"  {k:<16} {v:.6g}" if isinstance(v, float) else f"  {k:<16} {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hrm.model.reference import CheckpointError

    common = dict(
        split=args.split,
        config=args.config,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        device=args.device,
        dtype=args.dtype,
    )
    try:
        if args.segments is not None or args.trajectories is not None:
            from hrm.ttc import PICKS, evaluate_test_time, format_table

            result = evaluate_test_time(
                args.checkpoint,
                args.data,
                segments=args.segments,
                trajectories=args.trajectories or 1,
                picks=PICKS if args.pick == "both" else (args.pick,),
                augment=not args.no_augment,
                noise=args.noise,
                seed=args.seed,
                **common,
            )
            text = format_table(result)
        else:
            result = evaluate_checkpoint(args.checkpoint, args.data, save_outputs=args.save_outputs, **common)
            text = _table(result)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"hrm-eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else text)
    return 0


if __name__ == "__main__":
    from hrm.run.errors import run_tool

    sys.exit(run_tool("hrm-eval", main))
