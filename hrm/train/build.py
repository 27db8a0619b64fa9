"""Building the trainer's components from the resolved config, each in its own function:
dataset (built into the cache on first use), model + loss head, optimizers, train loader."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hrm.run.config import Config
from hrm.train import distributed as D

log = logging.getLogger(__name__)


@dataclass
class DataInfo:
    root: Path
    task: str
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int
    train_examples: int
    test_examples: int
    total_groups: int
    mean_puzzle_examples: float

    @property
    def grid(self) -> list[int]:
        side = int(round(math.sqrt(self.seq_len)))
        return [side, side] if side * side == self.seq_len else [1, self.seq_len]


def prepare_dataset(
    cfg: Config,
    env: D.DistEnv,
    status: Callable[..., None] | None = None,
    event: Callable[..., object] | None = None,
) -> DataInfo:
    """Rank 0 builds the dataset if needed (progress goes to trainer.log); the others wait for
    its path, then check it exists on their own host and build it there if it does not.

    A build rank 0 starts is reported: status `building` (the app shows "building data"), `log` events
    carrying `build: {what, done, total}` about once a second, then status `starting` again."""
    from hrm.data.cache import ensure_dataset

    recipe = cfg.data.model_dump()
    root: Path | None = None
    if env.is_main:
        with _reporting_build(recipe, status, event):
            root = Path(ensure_dataset(recipe, progress=True))
    D.barrier_after_rank0(env, "dataset built")  # the others wait here, named, not in a timed collective
    root = Path(D.broadcast_object(env, str(root) if root else None))
    if not env.is_main and not (root / "train" / "dataset.json").is_file():
        root = Path(ensure_dataset(recipe, progress=env.local_rank == 0))
    return read_data_info(root, recipe.get("task", "sudoku"))


@contextlib.contextmanager
def _reporting_build(
    recipe: dict[str, Any], status: Callable[..., None] | None, event: Callable[..., object] | None
) -> Iterator[None]:
    from hrm.progress import BuildProgress, listening
    from hrm.run.recipes import dataset_dir, is_built

    if recipe.get("path") or is_built(recipe) or status is None:
        yield
        return
    name = dataset_dir(recipe).name
    status("building", reason=f"building data {name}")

    def report(p: BuildProgress) -> None:
        if event is not None:
            total = p.total if p.total is not None else "?"
            build = {"dataset": name, "what": p.what, "done": p.done, "total": p.total}
            event("log", 0, level="info", message=f"building data: {p.what} {p.done}/{total}", build=build)

    with listening(report):
        yield
    status("starting", reason=f"data built: {name}")


def read_data_info(root: Path, task: str) -> DataInfo:
    from hrm.data.format import read_metadata

    train = read_metadata(root, "train")
    test = read_metadata(root, "test") if (Path(root) / "test" / "dataset.json").is_file() else None

    def n_examples(meta: Any) -> int:
        return int(round(meta.total_groups * meta.mean_puzzle_examples)) if meta is not None else 0

    return DataInfo(
        root=Path(root),
        task=task,
        seq_len=int(train.seq_len),
        vocab_size=int(train.vocab_size),
        num_puzzle_identifiers=int(train.num_puzzle_identifiers),
        train_examples=n_examples(train),
        test_examples=n_examples(test),
        total_groups=int(train.total_groups),
        mean_puzzle_examples=float(train.mean_puzzle_examples),
    )


def total_steps(cfg: Config, data: DataInfo) -> int:
    """train.total_steps if set, else the reference's int(epochs · groups · mean examples / batch)."""
    from hrm.run.config import resolve_total_steps

    return resolve_total_steps(cfg, data.total_groups * data.mean_puzzle_examples)


def model_config(cfg: Config, data: DataInfo, env: D.DistEnv):
    from hrm.model.factory import config_from_fields

    m = cfg.model.hrm_fields()
    gb = cfg.train.global_batch_size
    if gb % env.world_size:
        raise ValueError(
            f"train.global_batch_size={gb} is not divisible by the {env.world_size} ranks; "
            "pick a batch size that is a multiple of the number of processes"
        )
    from hrm.model.layers import choose_forward_dtype

    chosen, _why = choose_forward_dtype(m.get("forward_dtype") or "auto", env.device)  # logged by fit.check_memory
    dtype = str(chosen).removeprefix("torch.")
    return config_from_fields(
        m,
        batch_size=gb // env.world_size,
        seq_len=data.seq_len,
        vocab_size=data.vocab_size,
        num_puzzle_identifiers=data.num_puzzle_identifiers,
        forward_dtype=dtype,
    )


def build_head(cfg: Config, data: DataInfo, env: D.DistEnv) -> torch.nn.Module:
    """Model + ACT loss head on the device; seeded with seed + rank (the reference), then every
    rank takes rank 0's weights."""
    from hrm.model.factory import build_model
    from hrm.model.losses import ACTLossHead

    mcfg = model_config(cfg, data, env)
    torch.manual_seed(int(cfg.train.seed) + env.rank)
    model = build_model(mcfg)
    head = ACTLossHead(model, loss_type=cfg.model.loss_type).to(env.device)
    D.broadcast_module(env, head)
    head.train()
    return head


def train_forward(cfg: Config, head: torch.nn.Module) -> torch.nn.Module:
    """What a training step calls: the head itself, or (train.compile) its torch.compile'd wrapper, which
    shares the head's parameters, so checkpoints and eval keep using the plain module."""
    if not cfg.train.compile:
        return head
    return torch.compile(head, dynamic=False)  # type: ignore[return-value]  # an OptimizedModule


def build_optimizers(cfg: Config, head: torch.nn.Module, steps: int, env: D.DistEnv):
    from hrm.optim.container import optimizer_set_from_config

    return optimizer_set_from_config(head, cfg.optim, total_steps=steps, world_size=env.world_size)


def build_loader(cfg: Config, data: DataInfo, env: D.DistEnv):
    from hrm.data.loader import TrainLoader
    from hrm.data.prefetch import device_loader

    loader = TrainLoader(
        data.root,
        cfg.train.global_batch_size,
        rank=env.rank,
        world_size=env.world_size,
        seed=int(cfg.train.seed),
        epochs_per_iter=epochs_per_iter(cfg, data),
    )
    return device_loader(loader, env.device)  # CUDA: pinned batches made ahead on a thread


def epochs_per_iter(cfg: Config, data: DataInfo) -> int:
    """Epochs one iterator start of the train loader shuffles together: the reference's epochs_per_iter,
    its eval_interval (in epochs) or, with eval_interval null, all epochs of the run. Ours is in steps:
    round(eval_interval · batch / examples) epochs; null: train.epochs, or the epochs train.total_steps
    covers (rounded up). The reference drops only the last short batch of each start; one epoch per start
    would drop groups every epoch (232 of 1000 at batch 768) and feed other batches from step 1."""
    batch = cfg.train.global_batch_size
    examples = max(1.0, data.total_groups * data.mean_puzzle_examples)
    if cfg.train.eval_interval is not None:
        return max(1, round(cfg.train.eval_interval * batch / examples))
    if cfg.train.total_steps is None:
        return max(1, round(cfg.train.epochs or 1))  # epochs is set when total_steps is not
    return max(1, math.ceil(cfg.train.total_steps * batch / examples))


def count_params(head: torch.nn.Module) -> int:
    return sum(p.numel() for p in head.parameters())
