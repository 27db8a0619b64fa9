"""HRM-ACT-v1 in plain PyTorch.

Importing this package loads nothing heavy: `hrm.model.config` is torch-free (the app reads it), and the
torch-backed names below are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "HRMConfig": "config",
    "count_parameters": "config",
    "flops_per_example": "config",
    "describe": "config",
    "HierarchicalReasoningModel_ACTV1": "hrm_act",
    "carry_state_dict": "hrm_act",
    "carry_from_state_dict": "hrm_act",
    "Carry": "hrm_act",
    "ACTLossHead": "losses",
    "IGNORE_LABEL_ID": "losses",
    "resolve_forward_dtype": "layers",
    "load_model_weights": "reference",
    "load_any_checkpoint": "reference",
    "CheckpointError": "reference",
    "CheckpointMismatch": "reference",
    "config_from_reference_yaml": "reference",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"hrm.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'hrm.model' has no attribute {name!r}")
