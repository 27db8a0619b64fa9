"""Which architecture a config or checkpoint describes, and the model for it (HRM-ACT-v1 or TRM)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hrm.model.config import HRMConfig
from hrm.model.trm import TRMConfig

if TYPE_CHECKING:
    from hrm.model.losses import ACTModel

ARCHS = ("hrm", "trm")
# The reference configs name their model class as `<module>@<class>`: these modules are ours.
_REFERENCE_MODULES = {"hrm_act_v1": "hrm", "trm": "trm"}


def arch_of(fields: dict[str, Any]) -> str:
    """`arch` of our configs, or the architecture a reference all_config.yaml names (`name:`)."""
    arch = fields.get("arch")
    if arch is not None:
        if arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}, got {arch!r}")
        return str(arch)
    name = str(fields.get("name") or "")
    if not name:
        return "hrm"
    module = name.split("@")[0].split(".")[-1]
    if module not in _REFERENCE_MODULES:
        raise ValueError(f"architecture {name!r} is not one this library implements (HRM-ACT-v1 or TRM)")
    return _REFERENCE_MODULES[module]


def config_from_fields(fields: dict[str, Any], **overrides: Any) -> HRMConfig:
    cls = TRMConfig if arch_of(fields) == "trm" else HRMConfig
    return cls.from_dict(fields, **overrides)


def build_model(cfg: HRMConfig) -> ACTModel:
    """The ACT model of a config: TRM for a TRMConfig, HRM-ACT-v1 otherwise."""
    if isinstance(cfg, TRMConfig):
        from hrm.model.trm import TinyRecursiveReasoningModel_ACTV1

        return TinyRecursiveReasoningModel_ACTV1(cfg)
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1

    return HierarchicalReasoningModel_ACTV1(cfg)
