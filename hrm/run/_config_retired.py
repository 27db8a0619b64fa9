"""Config keys earlier versions wrote and this one no longer has: a run directory's config.yaml or a
checkpoint from before their removal still loads (the key is dropped with a warning) instead of failing
on "extra inputs are not permitted"."""

from __future__ import annotations

import logging
from typing import Any

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
