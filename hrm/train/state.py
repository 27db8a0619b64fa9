"""What a checkpoint holds, and putting it back.

Everything in the dict is a type `torch.load(weights_only=True)` accepts (tensors, ints, floats,
strings, lists, tuples, dicts), so loading never runs pickled code. The ACT carry and the RNG
states are saved for the whole global batch / every rank, so a checkpoint does not depend on the
number of ranks that wrote it."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.train import distributed as D

log = logging.getLogger(__name__)

CKPT_FORMAT = "hrm-tui-checkpoint"
CKPT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, foreign, or not fitting the config."""


# --- RNG --------------------------------------------------------------------------------------
def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG states in weights_only-safe types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(x: Any) -> Any:
    # random.setstate needs tuples; a round trip may hand back lists.
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def gather_rng(env: D.DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (collective)."""
    mine = capture_rng(env.device)
    if env.device.type == "cuda":
        mine["cuda"] = mine["cuda"].cpu()
    return D.gather_objects(env, mine)


def restore_rank_rng(env: D.DistEnv, per_rank: list[dict[str, Any]], seed: int, step: int) -> None:
    """Each rank takes its own saved state. A rank the checkpoint did not have (resumed on more
    ranks than wrote it) is seeded from (seed, rank, step) and says so."""
    if env.rank < len(per_rank):
        restore_rng(per_rank[env.rank], env.device)
        return
    log.warning("checkpoint has RNG states for %d ranks; rank %d starts a fresh RNG stream", len(per_rank), env.rank)
    s = seed + env.rank + 1_000_003 * step
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


# --- ACT carry ---------------------------------------------------------------------------------
def global_carry(env: D.DistEnv, carry_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of the carry has the batch on dim 0: the ranks' rows concatenated on rank 0's host
    (collective; the other ranks get {}: only rank 0 writes the checkpoint)."""
    out = {k: D.gather_rows_to_main(env, v, "checkpoint carry gather") for k, v in sorted(carry_sd.items())}
    return {k: v for k, v in out.items() if v is not None}


def local_carry(env: D.DistEnv, carry_sd: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in carry_sd.items():
        if v.shape[0] % env.world_size:
            raise CheckpointError(f"carry tensor {k!r} has {v.shape[0]} rows, not divisible by {env.world_size} ranks")
        out[k] = D.local_rows(env, v).to(device)
    return out


# --- loading -----------------------------------------------------------------------------------
def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """Load with weights_only=True; a truncated or foreign file is reported, never half-used."""
    from hrm.train.checkpoint import CheckpointCorrupt, load_checkpoint

    path = Path(path)
    try:
        ckpt = load_checkpoint(path, map_location="cpu")
    except CheckpointCorrupt as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict")
    return ckpt


def is_full_checkpoint(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("format") == CKPT_FORMAT


def check_version(ckpt: dict[str, Any], path: Path) -> None:
    v = ckpt.get("version")
    if v != CKPT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {v!r}; this trainer reads version {CKPT_VERSION}")
    missing = [k for k in ("step", "model", "optimizers", "loader", "rng", "carry", "config") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it is not a complete trainer checkpoint")


def check_model_fit(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Name the first tensor whose shape differs, with both shapes, and any missing/extra key."""
    own = model.state_dict()
    for k, v in own.items():
        if k not in state:
            raise CheckpointError(f"checkpoint {path} does not fit the config: tensor {k!r} is missing")
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"checkpoint {path} does not fit the config: tensor {k!r} has shape {tuple(state[k].shape)} "
                f"in the checkpoint but {tuple(v.shape)} in the model built from the config"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"checkpoint {path} does not fit the config: unexpected tensor {extra[0]!r}")
