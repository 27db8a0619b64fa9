"""Our TRM against the official TinyRecursiveModels code, loss for loss and step for step (CPU, float32).

Both sides train the same tiny TRM on the same batches from the same initial weights and RNG state:

  official: its model, ACTLossHead, create_model/init_train_state (SignSGD on the puzzle embedding, then
            AdamATan2), train_batch (carry across steps, lr warmup + cosine) and EMAHelper as launch() calls
            them, imported at run time from a checkout (never copied here);
  ours:     hrm.train.build.build_head / build_optimizers, hrm.train.step.forward_backward + pack/unpack,
            OptimizerSet.step and WeightEMA.update in the order hrm.train.trainer.Trainer._train_one uses.

The patches that let the official code run here (no CUDA, some packages absent) are listed in
bench/trm_official.py, which applies them.

    python bench/trm_reference.py                  # every variant, 40 steps, per-step table; exit 1 unless equal
    python bench/trm_reference.py --steps 10 --variant mlp_t
    python bench/trm_reference.py --pin 6          # also print the losses tests/test_trm_reference.py pins
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from trm_official import MIRROR, KernelFormAdamATan2, cuda_on_cpu, import_official, official_root

# Variants: arch overrides, and the q_head bias both sides start from. The official -5 never lets q_halt pass 0
# in 40 steps (every row runs halt_max_steps, exploration cannot delay anything); "halting" starts it near
# 0 so rows halt on q_halt > 0 at different steps and exploration's minimum steps hold some of them back.
VARIANTS: dict[str, dict[str, Any]] = {
    "attention": {"mlp_t": False, "pos_encodings": "rope"},
    "mlp_t": {"mlp_t": True, "pos_encodings": "none"},
    "halting": {"mlp_t": True, "pos_encodings": "none", "q_halt_bias": 0.02},
}
ARCH = dict(
    hidden_size=32,
    num_heads=2,
    expansion=4,
    H_layers=0,
    L_layers=2,
    H_cycles=2,
    L_cycles=2,
    halt_max_steps=4,
    halt_exploration_prob=0.1,
    puzzle_emb_len=2,
    no_ACT_continue=True,
)
OPTIM = dict(
    lr=3e-3,
    lr_min_ratio=0.1,
    lr_warmup_steps=5,
    beta1=0.9,
    beta2=0.95,
    weight_decay=0.1,
    puzzle_emb_lr=1e-2,
    puzzle_emb_weight_decay=0.1,
)
SEQ, VOCAB, N_IDS, BATCH, SEED, EMA_RATE = 16, 6, 5, 16, 0, 0.9


def make_batches(steps: int, seed: int = SEED) -> list[dict[str, torch.Tensor]]:
    """4x4 Sudokus (tokens: 0 pad, 1 blank, 2..5 digits) with 0-3 blanks, ids 1..4 (repeats within a batch);
    every 4th row ignores the labels of its given cells, one row per batch has no label at all."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0]])
    out = []
    for _ in range(steps):
        rows = [
            rng.permutation(4)[base[rng.permutation(4)][:, rng.permutation(4)]].reshape(-1) + 2 for _ in range(BATCH)
        ]
        labels = np.stack(rows).astype(np.int32)
        inputs = labels.copy()
        for r in range(BATCH):
            inputs[r, rng.choice(SEQ, size=rng.integers(0, 4), replace=False)] = 1
            if r % 4 == 1:
                labels[r, inputs[r] != 1] = -100
        labels[rng.integers(BATCH)] = -100
        ids = rng.integers(1, N_IDS, size=BATCH).astype(np.int32)
        out.append(
            {
                "inputs": torch.from_numpy(inputs),
                "labels": torch.from_numpy(labels),
                "puzzle_identifiers": torch.from_numpy(ids),
            }
        )
    return out


def _arch(variant: str) -> dict[str, Any]:
    return {k: v for k, v in VARIANTS[variant].items() if k != "q_halt_bias"}


def _record(loss: torch.Tensor, metrics: dict[str, torch.Tensor], carry: Any, lr: float) -> dict[str, Any]:
    m = {k: float(v) for k, v in metrics.items()}
    count = max(m["count"], 1.0)
    return {
        "lm_loss": m["lm_loss"] / BATCH,
        "q_halt_loss": m["q_halt_loss"] / BATCH,
        "loss": float(loss.detach()) / BATCH,
        "accuracy": m["accuracy"] / count,
        "exact": m["exact_accuracy"],
        "count": m["count"],
        "lr": lr,
        "halted": carry.halted.clone(),
        "steps": carry.steps.clone(),
    }


def run_official(off: types.SimpleNamespace, variant: str, batches: list, ema: bool) -> dict[str, Any]:
    pt = off.pretrain
    arch = {
        "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        "forward_dtype": "float32",
        "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        "puzzle_emb_ndim": ARCH["hidden_size"],
        **ARCH,
        **_arch(variant),
    }
    config = pt.PretrainConfig(
        arch=arch, data_paths=[], global_batch_size=BATCH, epochs=1, seed=SEED, ema=ema, ema_rate=EMA_RATE, **OPTIM
    )
    meta = off.Metadata(
        pad_id=0,
        ignore_label_id=-100,
        blank_identifier_id=0,
        vocab_size=VOCAB,
        seq_len=SEQ,
        num_puzzle_identifiers=N_IDS,
        total_groups=len(batches) * BATCH,
        mean_puzzle_examples=1.0,
        total_puzzles=len(batches) * BATCH,
        sets=["all"],
    )
    with cuda_on_cpu(pt):
        torch.random.manual_seed(config.seed + 0)  # launch(): seed + RANK, before the model is built
        with contextlib.redirect_stdout(io.StringIO()):  # patch 6
            state = pt.init_train_state(config, meta, rank=0, world_size=1)
        bias = VARIANTS[variant].get("q_halt_bias")
        if bias is not None:
            with torch.no_grad():
                state.model.model.inner.q_head.bias.fill_(bias)
        init = copy.deepcopy(state.model.state_dict())
        rng = torch.get_rng_state()
        helper = off.EMAHelper(mu=config.ema_rate) if ema else None
        if helper is not None:
            helper.register(state.model)
        seen: list[tuple] = []
        state.model.register_forward_hook(lambda _m, _a, out: seen.append(out))
        state.model.train()
        steps = []
        for batch in batches:
            reduced = pt.train_batch(config, state, batch, BATCH, rank=0, world_size=1)
            if helper is not None:
                helper.update(state.model)
            _carry, loss, metrics, _, _ = seen.pop()
            steps.append(_record(loss, metrics, state.carry, float(reduced["train/lr"])))
    shadow = {k.removeprefix("model."): v for k, v in helper.shadow.items()} if helper else {}
    return {"init": init, "rng": rng, "steps": steps, "final": state.model.state_dict(), "ema": shadow}


def run_ours(
    variant: str, batches: list, ema: bool, init: dict | None = None, rng: torch.Tensor | None = None
) -> dict[str, Any]:
    """Our trainer's path; from the official run's initial weights and RNG state when given, else (no
    official code at hand) from our own seeded build, with the variant's q_head bias."""
    from hrm.model.reference import load_model_weights
    from hrm.run.config import config_from_dict
    from hrm.train import build as B
    from hrm.train import distributed as D
    from hrm.train.ema import WeightEMA
    from hrm.train.steering import FLAGS
    from hrm.train.step import forward_backward, pack, unpack

    model = {"arch": "trm", "forward_dtype": "float32", **ARCH, **_arch(variant)}
    cfg = config_from_dict(
        {
            "model": model,
            "optim": OPTIM,
            "train": {
                "global_batch_size": BATCH,
                "seed": SEED,
                "total_steps": len(batches),
                "ema": ema,
                "ema_rate": EMA_RATE,
                "device": "cpu",
            },
        }
    )
    n = len(batches) * BATCH
    data = B.DataInfo(Path("."), "sudoku", SEQ, VOCAB, N_IDS, n, 0, n, 1.0)
    env = D.DistEnv()
    head = B.build_head(cfg, data, env)  # seeds seed + rank and builds, as the trainer
    if init is None or rng is None:
        bias = VARIANTS[variant].get("q_halt_bias")
        if bias is not None:
            with torch.no_grad():
                head.model.inner.q_head.bias.fill_(bias)
        init, rng = head.state_dict(), torch.get_rng_state()
    same_init = all(torch.equal(v, init[k]) for k, v in head.state_dict().items())
    same_rng = torch.equal(torch.get_rng_state(), rng)
    load_model_weights(head, init)  # a no-op when same_init; else the official weights
    torch.set_rng_state(rng)
    optim = B.build_optimizers(cfg, head, B.total_steps(cfg, data), env)
    shadow = WeightEMA(head.model, EMA_RATE) if ema else None
    params = [p for p in head.parameters() if p.requires_grad]
    carry, steps = None, []
    for step, batch in enumerate(batches, start=1):  # Trainer._train_one, less its events and health checks
        if carry is None:
            carry = head.initial_carry(batch)
        carry, t = forward_backward(head, carry, batch, BATCH, env, params, ARCH["halt_max_steps"])
        flags = torch.zeros(len(FLAGS), dtype=torch.float64)
        res = unpack(pack(env, t, torch.zeros((), dtype=torch.float64), flags), BATCH)
        lr = optim.step(step)
        if shadow is not None:
            shadow.update(head.model)
        steps.append(_record(t.loss, t.metrics, carry, lr))
        assert abs(res.metrics["lm_loss"] - steps[-1]["lm_loss"]) <= 1e-12  # the trainer's own reduction
    ema_sd = shadow.state_dict() if shadow is not None else {}  # names as the official's less its `model.`
    return {"steps": steps, "final": head.state_dict(), "ema": ema_sd, "same_init": same_init, "same_rng": same_rng}


KEYS = ("lm_loss", "q_halt_loss", "loss", "accuracy", "exact", "count", "lr")


def compare(variant: str, steps: int, ema: bool = True, verbose: bool = False, adam: str = "ours") -> dict[str, Any]:
    """Run both sides; per-step max |diff| over KEYS (relative to max(1, |value|)) and carry equality.
    adam="kernel": the official side steps KernelFormAdamATan2 instead of our AdamATan2."""
    from hrm.optim.adam_atan2 import AdamATan2

    root = official_root()
    if root is None:
        raise FileNotFoundError(f"the official TRM code is not at {MIRROR}")
    off = import_official(root)
    off.pretrain.AdamATan2 = KernelFormAdamATan2 if adam == "kernel" else AdamATan2  # the name create_model uses
    batches = make_batches(steps)
    a = run_official(off, variant, batches, ema)
    b = run_ours(variant, batches, ema, a["init"], a["rng"])
    per_step = []
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"]), start=1):
        diff = max(abs(x[k] - y[k]) / max(1.0, abs(x[k])) for k in KEYS)
        carry_same = torch.equal(x["halted"], y["halted"]) and torch.equal(x["steps"], y["steps"])
        per_step.append({"step": i, "diff": diff, "carry_same": carry_same, "official": x, "ours": y})
        if verbose:
            print(
                f"{variant:9s} {i:3d} | "
                + " ".join(f"{x[k]:.7g}/{y[k]:.7g}" for k in ("lm_loss", "q_halt_loss", "loss", "accuracy"))
                + f" | halted {int(x['halted'].sum())}/{int(y['halted'].sum())} steps "
                f"{int(x['steps'].sum())}/{int(y['steps'].sum())} | max diff {diff:.2e}"
            )
    weights = max(float((v - b["final"][k]).abs().max()) for k, v in a["final"].items() if v.is_floating_point())
    ema_diff = max((float((v - b["ema"][k]).abs().max()) for k, v in a["ema"].items()), default=0.0)
    return {
        "per_step": per_step,
        "weights": weights,
        "ema": ema_diff,
        "same_init": b["same_init"],
        "same_rng": b["same_rng"],
        "root": str(root),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    ap.add_argument("--no-ema", action="store_true")
    ap.add_argument("--adam", choices=["ours", "kernel"], default="ours", help="the official side's AdamATan2")
    ap.add_argument("--pin", type=int, default=0, help="print our first N steps' losses (for tests) when equal")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    worst = 0.0
    for variant in VARIANTS if args.variant == "all" else [args.variant]:
        r = compare(variant, args.steps, ema=not args.no_ema, verbose=True, adam=args.adam)
        diffs = [s["diff"] for s in r["per_step"]]
        carries = sum(s["carry_same"] for s in r["per_step"])
        print(
            f"{variant}: {len(diffs)} steps, max per-step diff {max(diffs):.3e}, carry equal on {carries}/"
            f"{len(diffs)} steps, final weights max |diff| {r['weights']:.3e}, EMA {r['ema']:.3e}, "
            f"same seeded init {r['same_init']}, same RNG after init {r['same_rng']} (official: {r['root']})"
        )
        worst = max(worst, max(diffs), r["weights"], r["ema"])
        if args.pin and max(diffs) == 0.0:
            pins = [tuple(s["ours"][k] for k in ("lm_loss", "q_halt_loss", "loss")) for s in r["per_step"]]
            print(f"PINNED[{variant!r}] = {pins[: args.pin]!r}")
    print(f"worst difference: {worst:.3e}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
