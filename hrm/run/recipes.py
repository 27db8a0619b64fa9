"""Dataset recipes (the `data` section of a config) → a built dataset in a cache keyed by the recipe.

Torch-free: the app imports this to show whether a preset's dataset is already built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from hrm.run.tasks import MAZE_LEVEL_SIZES

log = logging.getLogger(__name__)

# Bump when a generator's output for the same recipe changes, so cached datasets are rebuilt.
GENERATOR_VERSION = {"sudoku": 2, "maze": 1}
_KEYS = {
    "sudoku": ("level", "train", "test", "num_aug", "blanks", "min_rating", "seed"),
    "maze": ("level", "size", "train", "test", "aug", "seed"),
}


def resolve_cache_root(root: Path | str | None = None) -> Path:
    """`root`, else $HRM_DATA_CACHE, else ~/.cache/hrm-tui/datasets."""
    if root is not None:
        return Path(root)
    env = os.environ.get("HRM_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hrm-tui" / "datasets"


def _task(recipe: dict[str, Any]) -> str:
    task = recipe.get("task", "sudoku")
    if task not in _KEYS:
        raise ValueError(f"data.task must be 'sudoku' or 'maze', got {task!r}")
    return task


def _csv_folder(recipe: dict[str, Any]) -> Path | None:
    """The recipe's from_csv folder when it exists (relative paths: from the working directory)."""
    folder = recipe.get("from_csv")
    if folder and Path(folder).expanduser().is_dir():
        return Path(folder).expanduser().resolve()
    return None


def _normalised(recipe: dict[str, Any]) -> dict[str, Any]:
    task = _task(recipe)
    d = {k: recipe.get(k) for k in _KEYS[task]}
    if task == "maze" and not d.get("size"):
        d["size"] = MAZE_LEVEL_SIZES.get(d.get("level") or "easy", 9)
    if task == "maze" and recipe.get("unique_path"):  # only when on: the keys of existing caches stay valid
        d["unique_path"] = True
    blanks = d.get("blanks")
    if isinstance(blanks, (list, tuple)):
        d["blanks"] = list(blanks)
    folder = _csv_folder(recipe)
    if folder is not None:  # built from the CSVs: the generator settings do not matter, the source does
        d = {"csv": str(folder), "train": d["train"], "seed": d["seed"]}
        if task == "sudoku":
            d.update(num_aug=recipe.get("num_aug"), min_rating=recipe.get("min_rating"))
        else:
            d.update(aug=recipe.get("aug"))
    return {"task": task, "v": GENERATOR_VERSION[task], **d}


def recipe_key(recipe: dict[str, Any]) -> str:
    """A readable, stable directory name: task, source/level (and maze size), and a hash of the rest."""
    d = _normalised(recipe)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    if "csv" in d:
        return f"{d['task']}-csv-{digest}"
    if d["task"] == "maze":
        return f"maze-{d['level']}-{d['size']}-{digest}"
    return f"sudoku-{d['level']}-{digest}"


def dataset_dir(recipe: dict[str, Any], cache_root: Path | str | None = None) -> Path:
    if recipe.get("path"):
        return Path(recipe["path"]).expanduser()
    return resolve_cache_root(cache_root) / recipe_key(recipe)


def is_built(recipe: dict[str, Any], cache_root: Path | str | None = None) -> bool:
    d = dataset_dir(recipe, cache_root)
    return (d / "train" / "dataset.json").is_file() and (d / "test" / "dataset.json").is_file()
