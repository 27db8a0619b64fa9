"""One object for the trainer: the puzzle-embedding SignSGD and AdamATan2 behind `step`,
`zero_grad`, `state_dict` and `load_state_dict`, with the lr set from the schedule each step.

Order is the reference's (`pretrain.py`): the sparse SignSGD first, then AdamATan2; for each one
the lr is set from the schedule with its own base lr, then `step()`, then `zero_grad()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from hrm.optim.adam_atan2 import AdamATan2
from hrm.optim.schedule import cosine_schedule_with_warmup_lr
from hrm.optim.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed

__all__ = ["OptimizerSet", "ParameterGroups", "group_parameters", "build_optimizer_set", "optimizer_set_from_config"]

log = logging.getLogger(__name__)

_SPARSE_BUFFERS = ("weights", "local_weights", "local_ids")


class OptimizerSet:
    """Several optimizers stepped in order, each with its own base lr on a shared schedule."""

    def __init__(
        self,
        optimizers: Sequence[Optimizer],
        base_lrs: Sequence[float],
        *,
        warmup_steps: int,
        total_steps: int,
        min_ratio: float = 1.0,
        names: Sequence[str] | None = None,
    ) -> None:
        if len(optimizers) != len(base_lrs):
            raise ValueError(f"OptimizerSet: {len(optimizers)} optimizers but {len(base_lrs)} base lrs")
        self.optimizers = list(optimizers)
        self.base_lrs = [float(x) for x in base_lrs]
        self.names = list(names) if names is not None else [type(o).__name__ for o in optimizers]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"OptimizerSet: names must be unique, got {self.names}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)
        self.lr = 0.0  # the last optimizer's current lr: the reference logs it as train/lr

    def __len__(self) -> int:
        return len(self.optimizers)

    def __iter__(self) -> Iterator[Optimizer]:
        return iter(self.optimizers)

    def lrs(self, step: int) -> list[float]:
        """The scheduled lr of each optimizer at `step` (no side effect)."""
        return [
            cosine_schedule_with_warmup_lr(step, base, self.warmup_steps, self.total_steps, self.min_ratio)
            for base in self.base_lrs
        ]

    def set_lr(self, step: int) -> list[float]:
        """Put the scheduled lr for `step` into every param group; returns the lrs."""
        lrs = self.lrs(step)
        for opt, lr in zip(self.optimizers, lrs):
            for group in opt.param_groups:
                group["lr"] = lr
        if lrs:
            self.lr = lrs[-1]
        return lrs

    def step(self, step: int | None = None) -> float:
        """Step every optimizer in order, zeroing its grads right after (the reference order).

        With `step` given, the lr is set from the schedule first. Returns the last optimizer's lr.
        """
        if step is not None:
            self.set_lr(step)
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return self.lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = list(state.get("names", []))
        if names != self.names:
            raise ValueError(
                f"optimizer state holds {names} but this run builds {self.names}; the checkpoint was "
                "written for a different model (puzzle_emb_ndim differs?) — start fresh or use a matching config"
            )
        for name, opt, sd in zip(self.names, self.optimizers, state["optimizers"]):
            try:
                opt.load_state_dict(sd)
            except ValueError as exc:
                raise ValueError(f"optimizer {name}: {exc}") from exc
        self.lr = float(state.get("lr", self.lr))


@dataclass
class ParameterGroups:
    """Which tensors go to which optimizer."""

    sparse_buffers: list[Tensor] = field(default_factory=list)  # the puzzle embedding's 3 buffers
    sparse_module: str | None = None
    dense: list[nn.Parameter] = field(default_factory=list)


def _is_sparse_embedding(module: nn.Module) -> bool:
    own = dict(module.named_buffers(recurse=False))
    return all(name in own for name in _SPARSE_BUFFERS)


def group_parameters(model: nn.Module) -> ParameterGroups:
    """Split `model` into the sparse puzzle embedding (SignSGD) and every parameter (AdamATan2).

    The embedding is found by its buffers (weights, local_weights, local_ids); those are buffers,
    not parameters, so AdamATan2 never sees them. Weight decay applies to all parameters, as in
    the reference. Logs the counts.
    """
    groups = ParameterGroups(dense=[p for p in model.parameters() if p.requires_grad])
    sparse = [(name, m) for name, m in model.named_modules() if _is_sparse_embedding(m)]
    if len(sparse) > 1:
        raise ValueError(f"found {len(sparse)} sparse embeddings ({[n for n, _ in sparse]}); expected at most one")
    if sparse:
        name, module = sparse[0]
        bufs = dict(module.named_buffers(recurse=False))
        groups.sparse_buffers = [bufs[b] for b in _SPARSE_BUFFERS]
        groups.sparse_module = name
        log.info(
            "optimizer groups: SignSGD <- %s.weights %s; AdamATan2 <- %d tensors, %d parameters",
            name,
            tuple(bufs["weights"].shape),
            len(groups.dense),
            sum(p.numel() for p in groups.dense),
        )
    else:
        log.info(
            "optimizer groups: no sparse puzzle embedding; AdamATan2 <- %d tensors, %d parameters",
            len(groups.dense),
            sum(p.numel() for p in groups.dense),
        )
    return groups


def build_optimizer_set(
    model: nn.Module,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    puzzle_emb_lr: float,
    puzzle_emb_weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 1.0,
    world_size: int = 1,
) -> OptimizerSet:
    """The reference pair: SignSGD on the puzzle embedding (if any), then AdamATan2 on all parameters."""
    groups = group_parameters(model)
    optimizers: list[Optimizer] = []
    base_lrs: list[float] = []
    names: list[str] = []
    if groups.sparse_buffers:
        optimizers.append(
            CastedSparseEmbeddingSignSGD_Distributed(
                groups.sparse_buffers, world_size=world_size, lr=0.0, weight_decay=puzzle_emb_weight_decay
            )
        )
        base_lrs.append(puzzle_emb_lr)
        names.append("puzzle_emb_sign_sgd")
    optimizers.append(AdamATan2(groups.dense, lr=0.0, betas=(beta1, beta2), weight_decay=weight_decay))
    base_lrs.append(lr)
    names.append("adam_atan2")
    return OptimizerSet(
        optimizers, base_lrs, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio, names=names
    )


def optimizer_set_from_config(model: nn.Module, optim: Any, *, total_steps: int, world_size: int = 1) -> OptimizerSet:
    """Build from the config's `optim` section (an object with attributes, or a dict)."""

    def get(key: str) -> float:
        value = optim[key] if isinstance(optim, dict) else getattr(optim, key)
        return float(value)

    return build_optimizer_set(
        model,
        lr=get("lr"),
        beta1=get("beta1"),
        beta2=get("beta2"),
        weight_decay=get("weight_decay"),
        puzzle_emb_lr=get("puzzle_emb_lr"),
        puzzle_emb_weight_decay=get("puzzle_emb_weight_decay"),
        warmup_steps=int(get("lr_warmup_steps")),
        total_steps=total_steps,
        min_ratio=get("lr_min_ratio"),
        world_size=world_size,
    )
