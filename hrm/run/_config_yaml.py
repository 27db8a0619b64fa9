"""YAML reading for configs and presets, and `section.key=value` override parsing (no schema here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hrm.run._config_errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 (no dot) as a float, as people write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not a YAML text file (bytes that are not UTF-8); give a preset or config.yaml"
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """["train.total_steps=100", "optim.lr=1e-3"] -> nested dict; values are YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=3e-4)")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not valid YAML: keep the text, the schema says whether that fits
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part}")
            node = child
        node[parts[-1]] = value
    return nested
