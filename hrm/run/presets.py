"""Presets and config.yaml: where presets live, loading one with command-line overrides, writing and
reading a run's resolved config. Torch-free: the app's preset picker uses this."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from hrm.run._config_errors import ConfigError
from hrm.run._config_yaml import load_yaml, parse_overrides
from hrm.run.errors import writing

if TYPE_CHECKING:
    from hrm.run.config import Config


def presets_dir() -> Path:
    """Where named presets live: $HRM_PRESETS_DIR, else presets/ beside the hrm package (the repo
    or an editable install), else hrm/presets inside an installed package, else the wheel's
    data files (<prefix>/share/hrm-tui/presets)."""
    env = os.environ.get("HRM_PRESETS_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    shared = Path(sys.prefix) / "share" / "hrm-tui" / "presets"
    for candidate in (package.parent / "presets", package / "presets", shared):
        if candidate.is_dir():
            return candidate
    return package.parent / "presets"


# Listed first (the picker's first row, what a new user sees): the CPU presets that show thinking best
# (README: "Thinking on a CPU", bench/learn.py, 30 minutes on 2 shared cores). sudoku-think-cpu first: its
# answers improve visibly segment by segment (34 → 74 → 86 → 90 % exact after 1..4 segments) and its eval
# halting spreads over all four segments; trm-sudoku-cpu next: more exact (97.7 %), mostly halting after one.
FIRST_PRESETS: tuple[str, ...] = ("sudoku-think-cpu", "trm-sudoku-cpu")


def list_presets() -> list[Path]:
    """The preset files shipped with the project: FIRST_PRESETS in their order, then the rest by file name."""
    folder = presets_dir()
    if not folder.is_dir():
        return []
    first = {name: i for i, name in enumerate(FIRST_PRESETS)}
    return sorted(folder.glob("*.yaml"), key=lambda p: (first.get(p.stem, len(first)), p.name))


def _preset_path(name_or_path: str | os.PathLike[str]) -> Path:
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or text.endswith((".yaml", ".yml"))
    if looks_like_path or path.is_file():
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path
    candidate = presets_dir() / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    names = [p.stem for p in list_presets()]
    close = difflib.get_close_matches(text, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown preset {text!r}.{hint} Available: {', '.join(names) or '(none)'} "
        f"in {presets_dir()}; or give a path to a .yaml file."
    )


def load_preset(name_or_path: str | os.PathLike[str], overrides: list[str] | None = None) -> Config:
    """Defaults + the preset's overrides (+ command-line overrides), validated once."""
    from hrm.run.config import _merge, config_from_dict  # here: hrm.run.config re-exports this module

    path = _preset_path(name_or_path)
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a preset must be a mapping of sections (model, data, optim, train, "
            f"run, sinks), got {type(data).__name__}"
        )
    run_section = data.get("run") or {}
    if isinstance(run_section, dict) and not run_section.get("preset"):
        data = _merge(data, {"run": {"preset": path.stem}})
    cfg = config_from_dict(data, source=str(path))  # the preset alone: its errors name the file
    if overrides:
        cfg = config_from_dict(_merge(data, parse_overrides(overrides)), source="command-line overrides")
    return cfg


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the fully resolved config as YAML (temp file + rename: never half written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path):  # a full disk names config.yaml, not the temp file
            tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config.yaml written by save_config (or any partial config file)."""
    from hrm.run.config import config_from_dict

    path = Path(path)
    data = load_yaml(path)
    return config_from_dict({} if data is None else data, source=str(path))
