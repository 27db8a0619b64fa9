"""What every section of the run configuration does when it is validated: unknown keys are refused,
numbers must fit the tensors they end up in, and keys that earlier versions wrote and this one no longer
has are dropped with a warning (a run directory's config.yaml or a checkpoint from before their removal
still loads instead of failing on "extra inputs are not permitted")."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

log = logging.getLogger(__name__)

# section → key → why it went (shown once in the warning)
RETIRED: dict[str, dict[str, str]] = {
    "model": {"cpu_kernels": "the C CPU path was removed; every device runs the plain torch ops"},
    "train": {"strict_resume": "it only guarded the removed C CPU path"},
}


def drop_retired(section: str, data: Any) -> Any:
    """A copy of a raw config section without its retired keys (anything else is returned as it is)."""
    keys = RETIRED.get(section, {})
    if not isinstance(data, dict) or not keys.keys() & data.keys():
        return data
    for key in sorted(keys.keys() & data.keys()):
        log.warning("config: %s.%s is no longer used (%s); ignored", section, key, keys[key])
    return {k: v for k, v in data.items() if k not in keys}


# Every number ends up in a float32 tensor or an int64 one: beyond these it overflows far from the config.
_F32_MAX = 3.4028234663852886e38
_I64_MAX = 2**63 - 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    section: ClassVar[str] = ""  # its key in the config file (the retired keys are looked up by it)

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        return drop_retired(cls.section, data)  # configs and checkpoints of earlier versions still load

    @field_validator("*", mode="after")
    @classmethod
    def _representable(cls, v: Any) -> Any:
        if isinstance(v, float) and abs(v) > _F32_MAX:
            raise ValueError(f"{v:g} is too large: a float32 holds at most {_F32_MAX:.3g}")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _I64_MAX:
            raise ValueError(f"{v} is too large: at most {_I64_MAX} (int64)")
        return v
