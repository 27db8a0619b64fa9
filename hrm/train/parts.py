"""The trainer's components as one typed structure, built in one place from the validated config:
dataset, step count, model config, model + loss head, the step's forward, optimizers, loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hrm.run.config import Config
from hrm.train import build as B
from hrm.train import distributed as D

if TYPE_CHECKING:
    from hrm.data.loader import TrainLoader
    from hrm.data.prefetch import PrefetchLoader
    from hrm.model.config import HRMConfig
    from hrm.model.losses import ACTLossHead
    from hrm.optim.container import OptimizerSet
    from hrm.train.ema import WeightEMA


@dataclass
class Parts:
    data: B.DataInfo
    total_steps: int
    mcfg: HRMConfig
    head: ACTLossHead
    train_forward: torch.nn.Module  # the head, or its torch.compile'd wrapper (same parameters)
    optim: OptimizerSet
    loader: TrainLoader | PrefetchLoader  # prefetching on CUDA
    ema: WeightEMA | None = None  # train.ema: the moving average evaluation runs on

    @property
    def model(self) -> torch.nn.Module:
        return self.head.model

    def epoch(self) -> float:
        return float(self.loader.epoch)


def build_parts(
    cfg: Config,
    env: D.DistEnv,
    status: Callable[..., None] | None = None,
    event: Callable[..., object] | None = None,
) -> Parts:
    """Every component, in dependency order. The dataset is built into the cache on first use,
    reported through `status` ("building") and `event` (progress) on rank 0."""
    from hrm.train.fit import check_memory

    data = B.prepare_dataset(cfg, env, status, event)
    total = B.total_steps(cfg, data)
    mcfg = B.model_config(cfg, data, env)
    check_memory(cfg, mcfg, env.device, env.world_size)  # refuses a batch that cannot fit, before allocating
    head = B.build_head(cfg, data, env)
    ema = None
    if cfg.train.ema:
        from hrm.train.ema import WeightEMA

        ema = WeightEMA(head.model, cfg.train.ema_rate)  # type: ignore[arg-type]
    return Parts(
        data=data,
        total_steps=total,
        mcfg=mcfg,
        head=head,  # type: ignore[arg-type]
        train_forward=B.train_forward(cfg, head),
        optim=B.build_optimizers(cfg, head, total, env),
        loader=B.build_loader(cfg, data, env),
        ema=ema,
    )
