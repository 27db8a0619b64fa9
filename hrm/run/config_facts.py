"""What a config implies without torch or the dataset: the task's grid and sizes, the model's shape,
the run's length, and the summary the app's preset picker shows (parameters, FLOPs, memory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hrm.run._config_errors import ConfigError
from hrm.run.memory import compute_dtype
from hrm.run.memory import estimate as estimate_memory
from hrm.run.sizes import Shape, count_parameters, flops_per_example
from hrm.run.tasks import MAZE_LEVEL_SIZES, MAZE_VOCAB_SIZE, SUDOKU_SIDE, SUDOKU_VOCAB_SIZE

if TYPE_CHECKING:
    from hrm.run.config import Config, DataConfig


def resolve_total_steps(cfg: Config, train_examples: float) -> int:
    """Optimizer steps of the run. With epochs: int(epochs · examples / global_batch) as the reference
    (examples = total_groups · mean_puzzle_examples of the train split)."""
    if cfg.train.total_steps is not None:
        return cfg.train.total_steps
    assert cfg.train.epochs is not None  # the schema guarantees one of the two
    steps = int(cfg.train.epochs * train_examples / cfg.train.global_batch_size)
    if steps < 1:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs:g} over {train_examples:g} training examples at "
            f"train.global_batch_size={cfg.train.global_batch_size} gives 0 steps: "
            "raise train.epochs or set train.total_steps"
        )
    return steps


def task_shape(data: DataConfig) -> tuple[list[int], int, int]:
    """(grid [rows, cols], vocab_size, seq_len) of the task, as the dataset builders write them."""
    if data.task == "sudoku":
        return [SUDOKU_SIDE, SUDOKU_SIDE], SUDOKU_VOCAB_SIZE, SUDOKU_SIDE * SUDOKU_SIDE
    side = data.size or MAZE_LEVEL_SIZES[data.level]
    return [side, side], MAZE_VOCAB_SIZE, side * side


def model_shape(cfg: Config) -> Shape:
    """The model's sizes on the config's task (vocab and sequence length as the dataset builders write them)."""
    _grid, vocab, seq_len = task_shape(cfg.data)
    fields = cfg.model.hrm_fields()
    return Shape(**{k: fields[k] for k in Shape.__dataclass_fields__ if k in fields}, seq_len=seq_len, vocab_size=vocab)


def describe(cfg: Config) -> dict[str, Any]:
    """What a preset trains and roughly what it costs, without torch or the dataset: task label,
    grid, parameter count, a short model string like 'h128 · 1.2M', device, FLOPs per step and the
    training memory per rank (hrm.run.memory; bfloat16 for `auto` on CUDA)."""
    grid, vocab, seq_len = task_shape(cfg.data)
    shape = model_shape(cfg)
    n = count_parameters(shape)
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"
    label = f"{cfg.data.task.capitalize()} {grid[0]}×{grid[1]} {cfg.data.level}"
    if cfg.data.task == "sudoku" and cfg.data.blanks:
        label += f" · {cfg.data.blanks[0]}–{cfg.data.blanks[1]} blanks"
    device = "cpu" if cfg.train.device == "cpu" else "cuda"  # auto plans for the GPU it is meant for
    dtype = compute_dtype(cfg.model.forward_dtype, device)
    per_rank = max(1, cfg.train.global_batch_size // cfg.train.gpus)
    mem = estimate_memory(shape, dtype, device)
    return {
        "preset": cfg.run.preset,
        "description": cfg.run.description,
        "task": cfg.data.task,
        "task_label": label,
        "grid": grid,
        "vocab_size": vocab,
        "seq_len": seq_len,
        "num_params": n,
        "model": ("TRM " if cfg.model.arch == "trm" else "") + f"h{cfg.model.hidden_size} · {size}",
        "hidden_size": cfg.model.hidden_size,
        "layers": cfg.model.H_layers + cfg.model.L_layers,
        "device": cfg.train.device,
        "gpus": cfg.train.gpus,
        "global_batch_size": cfg.train.global_batch_size,
        "batch_per_rank": per_rank,
        "total_steps": cfg.train.total_steps,
        "epochs": cfg.train.epochs,
        # one ACT segment per example per optimizer step
        "flops_per_step": flops_per_example(shape, train=True) * cfg.train.global_batch_size,
        "compute_dtype": dtype,
        "mem_per_example": mem.per_example,
        "mem_fixed": mem.fixed,
        "mem_per_rank": mem.total(per_rank),
        "dataset": cfg.data.model_dump(mode="json"),
    }
