"""The run configuration: schema, `key=value` overrides, merging and validation (presets and config.yaml
files: hrm.run.presets; what a config implies: hrm.run.config_facts; both re-exported here).

Defaults < preset YAML (overrides only) < command-line `section.key=value`; validated once, by pydantic,
with messages that name the key to change. Torch-free: the app reads presets through this module.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from hrm.run._config_errors import ConfigError, translate_validation_error
from hrm.run._config_section import _Section
from hrm.run._config_yaml import parse_overrides
from hrm.run.memory import FLOAT16_REFUSED
from hrm.run.tasks import MAZE_LEVEL_SIZES

__all__ = [
    "Config",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "RunConfig",
    "SinksConfig",
    "ConfigError",
    "load_preset",
    "apply_overrides",
    "parse_overrides",
    "save_config",
    "load_config",
    "list_presets",
    "presets_dir",
    "resolve_total_steps",
    "validate_run_name",
    "config_from_dict",
    "describe",
    "model_shape",
    "task_shape",
]


# Maze side when data.size is null, per level (as hrm.run.recipes / hrm.data.maze_gen define it).
MAZE_DEFAULT_SIZE = MAZE_LEVEL_SIZES


class ModelConfig(_Section):
    """HRM-ACT-v1 or TRM architecture (HRM-SPEC §1.1). Sizes the dataset fixes (vocab, seq_len, ids) are injected."""

    section: ClassVar[str] = "model"

    arch: Literal["hrm", "trm"] = Field(
        "hrm",
        description="hrm = HRM-ACT-v1 (H and L modules, only the last L and H update carry gradient); "
        "trm = Tiny Recursive Model (one L-module network for both updates, the whole last H cycle with grad).",
    )
    hidden_size: int = Field(512, gt=0, description="Width of every layer (d).")
    num_heads: int = Field(8, gt=0, description="Attention heads; hidden_size must divide by it.")
    expansion: float = Field(4.0, gt=0, description="SwiGLU expansion (inner = 2/3·expansion·d, rounded up to 256).")
    H_layers: int = Field(4, ge=0, description="Transformer blocks in the high-level (slow) module (TRM: unused).")
    L_layers: int = Field(4, gt=0, description="Transformer blocks in the low-level (fast) module.")
    H_cycles: int = Field(2, gt=0, description="High-level updates per ACT segment (N).")
    L_cycles: int = Field(2, gt=0, description="Low-level updates per high-level update (T).")
    halt_max_steps: int = Field(16, gt=0, description="Maximum ACT segments per puzzle (M_max).")
    halt_exploration_prob: float = Field(0.1, ge=0, le=1, description="Chance a row draws a minimum halting step.")
    pos_encodings: Literal["rope", "learned", "none"] = Field(
        "rope", description="Position encoding: rope or learned; none with mlp_t (or TRM attention)."
    )
    puzzle_emb_ndim: int | None = Field(
        None, ge=0, description="Puzzle-embedding width; null = hidden_size (the reference), 0 disables it."
    )
    rms_norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    forward_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Compute dtype; auto = bfloat16 on GPUs that run it natively (compute capability 8.0+), "
        "else float32. float16 is refused (no loss scaling).",
    )
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = Field(
        "stablemax_cross_entropy", description="Token loss of the ACT loss head."
    )
    mlp_t: bool = Field(
        False,
        description="Mix positions with a SwiGLU across them instead of attention (TRM's sequence MLP; HRM may "
        "use it too; fixed-size grids).",
    )
    puzzle_emb_len: int | None = Field(
        None, ge=0, description="TRM: positions the puzzle embedding fills; null = 16 (TRM), 0 = as many as it needs."
    )
    no_ACT_continue: bool | None = Field(
        None,
        description="Halt on q_halt > 0 alone, no Q-continue target (no second forward); null = the arch's own: "
        "TRM true, HRM false (the reference's Q-learning).",
    )

    @field_validator("forward_dtype", mode="before")
    @classmethod
    def _no_float16(cls, v: object) -> object:
        # Before the Literal check, so the refusal says why instead of "input should be ...".
        if v == "float16":
            raise ValueError(f"model.forward_dtype: {FLOAT16_REFUSED}")
        return v

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )
        if self.arch == "hrm":
            if self.H_layers < 1:
                raise ValueError("model.H_layers must be at least 1 for arch hrm (only TRM has no H module)")
            if self.pos_encodings == "none" and not self.mlp_t:
                raise ValueError("model.pos_encodings=none needs model.mlp_t (attention needs rope or learned)")
            if self.puzzle_emb_len is not None:
                raise ValueError("model.puzzle_emb_len is a TRM field: set model.arch=trm")
        return self

    def hrm_fields(self) -> dict[str, Any]:
        """The HRMConfig keyword arguments this section sets (puzzle_emb_ndim resolved)."""
        trm_only = {"puzzle_emb_len"} if self.arch == "hrm" else set()
        out = self.model_dump(exclude={"loss_type", "puzzle_emb_ndim"} | trm_only)
        out["puzzle_emb_ndim"] = self.hidden_size if self.puzzle_emb_ndim is None else self.puzzle_emb_ndim
        out["no_ACT_continue"] = self.arch == "trm" if self.no_ACT_continue is None else self.no_ACT_continue
        if self.arch == "trm" and self.puzzle_emb_len is None:
            out["puzzle_emb_len"] = 16
        return out


class DataConfig(_Section):
    """The dataset recipe (its model_dump is the recipe dict of hrm.run.recipes)."""

    task: Literal["sudoku", "maze"] = Field("sudoku", description="Puzzle family.")
    path: str | None = Field(None, description="A dataset already built in the reference format; skips building.")
    from_csv: str | None = Field(
        None, description="Folder with train.csv/test.csv (reference columns); used when it exists, else generate."
    )
    level: Literal["easy", "medium", "hard", "extreme"] = Field("easy", description="Difficulty of generated puzzles.")
    size: int | None = Field(
        None, gt=1, description="Maze side length (sudoku: always 9); null = the level's default (9/15/30)."
    )
    train: int = Field(1000, gt=0, description="Training puzzles (groups) to generate or take.")
    test: int = Field(1000, gt=0, description="Test puzzles to generate or take.")
    num_aug: int = Field(0, ge=0, description="Sudoku: augmented copies per training puzzle.")
    blanks: tuple[int, int] | None = Field(None, description="Sudoku: [min, max] blank cells per generated puzzle.")
    min_rating: int | None = Field(None, ge=0, description="Sudoku: keep only puzzles rated at least this.")
    aug: bool = Field(False, description="Maze: add the 8 dihedral transforms of each training maze.")
    unique_path: bool = Field(
        False,
        description="Maze (generated): wall off the other shortest paths, so exact means 'found the shortest path'.",
    )
    seed: int = Field(0, ge=0, description="Seed of the dataset build.")

    @model_validator(mode="after")
    def _maze_level(self) -> DataConfig:
        if self.task == "maze" and self.level not in MAZE_DEFAULT_SIZE:
            raise ValueError(
                f"data.level {self.level!r} does not exist for mazes; choose one of {', '.join(MAZE_DEFAULT_SIZE)}"
            )
        return self

    @field_validator("blanks")
    @classmethod
    def _blanks_range(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1] <= 81:
            raise ValueError(f"data.blanks must be [min, max] with 0 <= min <= max <= 81, got {list(v)}")
        return v


class OptimConfig(_Section):
    """AdamATan2 for the model, SignSGD for the puzzle embedding, one warmup+cosine schedule."""

    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamATan2.")
    lr_min_ratio: float = Field(
        1.0, ge=0, le=1, description="Final lr / peak lr of the cosine (1.0 = constant after warmup)."
    )
    lr_warmup_steps: int = Field(2000, ge=0, description="Linear warmup steps.")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamATan2 beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamATan2 beta2.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay of the model parameters.")
    puzzle_emb_lr: float = Field(1e-2, gt=0, description="Peak learning rate of the puzzle-embedding SignSGD.")
    puzzle_emb_weight_decay: float = Field(0.1, ge=0, description="Weight decay of the puzzle embedding.")


class TrainConfig(_Section):
    """Length, evaluation, checkpoints, device and stopping rules."""

    section: ClassVar[str] = "train"

    global_batch_size: int = Field(768, gt=0, description="Examples per optimizer step over all ranks.")
    total_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs when set.")
    epochs: float | None = Field(
        20000, gt=0, description="Passes over the training groups; steps = epochs·examples/batch."
    )
    eval_interval: int | None = Field(
        None,
        gt=0,
        description="Steps between evaluations; null = only at the end. Also the data order, as the reference's "
        "eval_interval (in epochs): each pass of the train loader shuffles round(eval_interval·batch/examples) "
        "epochs together, null all epochs of the run (the reference's epochs_per_iter).",
    )
    eval_split: Literal["test", "train"] = Field("test", description="Split evaluated.")
    eval_max_examples: int | None = Field(None, gt=0, description="Evaluate at most this many puzzles; null = all.")
    checkpoint_interval: int | None = Field(
        None, gt=0, description="Steps between checkpoints; null = after every evaluation."
    )
    keep_last: int = Field(3, ge=1, description="Checkpoints kept (plus the best by eval exact accuracy).")
    seed: int = Field(0, ge=0, description="Seed of model init, data order and ACT exploration.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu.")
    gpus: int = Field(1, ge=1, description="GPUs (processes under torchrun) to train on.")
    memory_check: Literal["refuse", "warn", "off"] = Field(
        "refuse",
        description="At start, when the estimated per-GPU memory exceeds the card: refuse (naming the largest "
        "batch that fits), warn, or off.",
    )
    dist_timeout_s: float = Field(
        600,
        gt=0,
        description="Seconds a collective waits for the other ranks before the run fails (NCCL aborts the process).",
    )
    early_stop_exact_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop once train exact accuracy reaches this."
    )
    on_nonfinite: Literal["stop", "pause"] = Field("stop", description="What a NaN/Inf loss or gradient does.")
    log_interval: int = Field(1, ge=1, description="Steps aggregated into one train event.")
    compile: bool = Field(
        False,
        description="torch.compile the training forward (the reference does); ~1 min before the first step on CPU.",
    )
    ema: bool = Field(False, description="Keep an exponential moving average of the weights and evaluate it (TRM).")
    ema_rate: float = Field(0.999, gt=0, lt=1, description="EMA decay per optimizer step.")
    init_from: str | None = Field(None, description="Weights-only checkpoint (ours or the reference's) to start from.")

    @model_validator(mode="after")
    def _length_given(self) -> TrainConfig:
        if self.total_steps is None and self.epochs is None:
            raise ValueError("set train.total_steps or train.epochs")
        return self


class RunConfig(_Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, coerce_numbers_to_str=True)

    name: str | None = Field(None, description="Run id; null = <preset>-<UTC timestamp>.")
    description: str = Field("", description="One line shown in the preset picker and the run list.")
    preset: str | None = Field(None, description="The preset this config came from (set by load_preset).")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        return None if v is None else validate_run_name(v)


class SinksConfig(_Section):
    tensorboard: bool = Field(False, description="Also write TensorBoard scalars to the run directory.")
    wandb: bool = Field(False, description="Also log to Weights & Biases (needs the wandb extra).")
    wandb_mode: Literal["online", "offline", "disabled"] = Field("offline", description="W&B mode.")
    wandb_project: str | None = Field(None, description="W&B project; null = derived from the task.")


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="Architecture.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset recipe.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizers and schedule.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training length, eval, checkpoints, device.")
    run: RunConfig = Field(default_factory=RunConfig, description="Run naming.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Extra metric sinks.")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validate_run_name(name: str) -> str:
    """A run id becomes a directory name: no separators, no '..', no leading dot, not empty."""
    if not name or "/" in name or "\\" in name or ".." in name or name.startswith(".") or "\0" in name:
        raise ValueError(
            f"run name {name!r} is not allowed: use letters, digits, '-', '_' (no '/', no '..', no leading '.')"
        )
    return name


# --- merging ---------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    # total_steps and epochs are two ways to say one thing: the layer that names one clears the other.
    train_update = update.get("train")
    if isinstance(train_update, dict) and isinstance(out.get("train"), dict):
        named = {"total_steps", "epochs"} & set(train_update)
        if len(named) == 1:
            other = ({"total_steps", "epochs"} - named).pop()
            out["train"] = {**out["train"], other: None}
    return out


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a (possibly partial) nested dict over the defaults."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (model, data, optim, train, run, sinks), "
            f"got {type(data).__name__}"
        )
    merged = _merge(Config().model_dump(), data)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise translate_validation_error(exc, Config, source) from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new Config with `section.key=value` overrides applied and validated."""
    if not overrides:
        return cfg
    return config_from_dict(_merge(cfg.model_dump(), parse_overrides(overrides)), source="overrides")


# Loading and saving (hrm.run.presets) and what a config implies (hrm.run.config_facts) live in their own
# modules, which import this one only inside their functions; re-exported so callers need one import.
from hrm.run.config_facts import describe, model_shape, resolve_total_steps, task_shape  # noqa: E402
from hrm.run.presets import list_presets, load_config, load_preset, presets_dir, save_config  # noqa: E402
