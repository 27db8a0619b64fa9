"""HRM-ACT-v1 architecture config (the closed-form size/cost formulas live in hrm.run.sizes).

Torch-free. Field names and defaults are the reference's (`HierarchicalReasoningModel_ACTV1Config`), except
`forward_dtype`, whose default here is float32 (the CPU path; the trainer resolves "auto" per device).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from hrm.run import sizes
from hrm.run.memory import FLOAT16_REFUSED
from hrm.run.sizes import block_parameters, count_parameters, flops_per_example, layer_flops_per_token, round_up

__all__ = [
    "HRMConfig",
    "block_parameters",
    "count_parameters",
    "flops_per_example",
    "layer_flops_per_token",
    "round_up",
    "describe",
]

_DTYPES = ("float32", "bfloat16", "auto")


@dataclass(kw_only=True)
class HRMConfig:
    """Sizes of one HRM-ACT-v1 model. batch_size is the per-rank batch (it sizes the puzzle-embedding
    gradient buffer); seq_len, vocab_size and num_puzzle_identifiers come from the dataset."""

    batch_size: int
    seq_len: int
    puzzle_emb_ndim: int = 0
    num_puzzle_identifiers: int = 1
    vocab_size: int

    H_cycles: int = 2
    L_cycles: int = 2
    H_layers: int = 4
    L_layers: int = 4

    hidden_size: int = 512
    expansion: float = 4.0
    num_heads: int = 8
    pos_encodings: str = "rope"

    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1

    forward_dtype: str = "float32"
    # Not the reference's: TRM's sequence MLP (a SwiGLU across positions instead of attention), offered to
    # HRM too; False is the reference architecture.
    mlp_t: bool = False
    # Not the reference's either: TRM's halting (q_halt > 0, no Q-continue target and so no second forward),
    # offered to HRM; False is the reference's Q-learning (halt when q_halt > q_continue).
    no_ACT_continue: bool = False

    # Not fields: what __post_init__ checks (TRM relaxes both)
    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "batch_size",
        "seq_len",
        "vocab_size",
        "num_puzzle_identifiers",
        "hidden_size",
        "num_heads",
        "H_cycles",
        "L_cycles",
        "H_layers",
        "L_layers",
        "halt_max_steps",
    )
    _POS_ENCODINGS: ClassVar[tuple[str, ...]] = ("rope", "learned")  # and "none" with mlp_t
    arch: ClassVar[str] = "hrm"

    def __post_init__(self) -> None:
        for name in self._POSITIVE:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.puzzle_emb_ndim < 0:
            raise ValueError(f"model.puzzle_emb_ndim must be >= 0, got {self.puzzle_emb_ndim}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )
        allowed = self._POS_ENCODINGS + (("none",) if self.mlp_t and "none" not in self._POS_ENCODINGS else ())
        if self.pos_encodings not in allowed:
            raise ValueError(f"model.pos_encodings must be one of {allowed}, got {self.pos_encodings!r}")
        if self.forward_dtype == "float16":
            raise ValueError(f"model.forward_dtype: {FLOAT16_REFUSED}")
        if self.forward_dtype not in _DTYPES:
            raise ValueError(f"model.forward_dtype must be one of {_DTYPES}, got {self.forward_dtype!r}")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"model.halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def puzzle_emb_len(self) -> int:
        """Number of prefix positions the puzzle embedding occupies (ceil(ndim / hidden))."""
        return -(self.puzzle_emb_ndim // -self.hidden_size)

    @property
    def total_seq_len(self) -> int:
        return self.seq_len + self.puzzle_emb_len

    @property
    def mlp_t_inner(self) -> int:
        """Inner width of the SwiGLU across positions: the same rule as mlp_inner, over total_seq_len."""
        return sizes.mlp_inner(self.total_seq_len, self.expansion)

    @property
    def mlp_inner(self) -> int:
        """SwiGLU inner width: round(expansion·hidden·2/3) rounded up to a multiple of 256."""
        return sizes.mlp_inner(self.hidden_size, self.expansion)

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "arch": self.arch}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> HRMConfig:
        """Build from a dict that may hold extra keys (loss, name, causal...): those are ignored."""
        names = set(cls.field_names())
        merged = {k: v for k, v in d.items() if k in names}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        missing = [n for n in ("batch_size", "seq_len", "vocab_size") if n not in merged]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)} (normally taken from the dataset)")
        return cls(**merged)


def describe(cfg: HRMConfig) -> str:
    """One-line human summary, e.g. 'h512 · 8 heads · 4H+4L · 27.3M params'."""
    n = count_parameters(cfg)
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"
    return f"h{cfg.hidden_size} · {cfg.num_heads} heads · {cfg.H_layers}H+{cfg.L_layers}L · {size} params"
