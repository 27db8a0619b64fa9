"""Dataset recipes (the `data` section of a config) → a built dataset in a cache keyed by the recipe.

Torch-free: the app imports this to show whether a preset's dataset is already built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hrm.data.format import DatasetError, OutputExistsError, dataset_summary

log = logging.getLogger(__name__)

# Bump when a generator's output for the same recipe changes, so cached datasets are rebuilt.
GENERATOR_VERSION = {"sudoku": 2, "maze": 1}
_KEYS = {
    "sudoku": ("level", "train", "test", "num_aug", "blanks", "min_rating", "seed"),
    "maze": ("level", "size", "train", "test", "aug", "seed"),
}
_DEFAULT_MAZE_SIZE = {"easy": 9, "medium": 15, "hard": 30}


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
        d["size"] = _DEFAULT_MAZE_SIZE.get(d.get("level") or "easy", 9)
    if isinstance(d.get("blanks"), (list, tuple)):
        d["blanks"] = list(d["blanks"])
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


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """One builder per dataset across processes (app, trainer, several ranks on one host)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(recipe: dict[str, Any], out: Path, progress: bool) -> dict:
    task = _task(recipe)
    folder = _csv_folder(recipe)
    if recipe.get("from_csv") and folder is None:
        log.warning(
            "data.from_csv folder %s not found; generating %s data instead (level %s)",
            recipe["from_csv"],
            task,
            recipe.get("level"),
        )
    common = dict(
        train=recipe.get("train", 1000),
        test=recipe.get("test", 1000),
        level=recipe.get("level") or "easy",
        seed=recipe.get("seed", 0),
        from_csv=folder,
        force=False,
        progress=progress,
    )
    if folder is not None:  # the reference takes the whole test CSV and `train` puzzles of the train CSV
        common["subsample_size"] = recipe.get("train")
    if task == "sudoku":
        from hrm.data import sudoku

        return sudoku.build_dataset(
            out,
            num_aug=recipe.get("num_aug") or 0,
            blanks=recipe.get("blanks"),
            min_rating=recipe.get("min_rating"),
            **common,
        )
    from hrm.data import maze

    return maze.build_dataset(out, size=recipe.get("size"), aug=bool(recipe.get("aug")), **common)


def ensure_dataset(recipe: dict[str, Any], cache_root: Path | str | None = None, progress: bool = True) -> Path:
    """The dataset directory of a recipe, built first (atomically, once across processes) if needed.

    recipe["path"] set: that dataset is checked and used as it is. Else recipe["from_csv"], when that
    folder exists, is built into the reference dataset; otherwise data is generated."""
    if recipe.get("path"):
        root = dataset_dir(recipe)
        try:
            dataset_summary(root)
            for split in ("train", "test"):
                if not (root / split / "dataset.json").is_file():
                    raise DatasetError(f"{root / split / 'dataset.json'} not found")
        except DatasetError as e:
            raise DatasetError(
                f"data.path={recipe['path']}: {e}. Point data.path at a dataset built with "
                f"hrm-data (or the reference builders), or remove it to build one"
            ) from None
        return root
    out = dataset_dir(recipe, cache_root)
    if is_built(recipe, cache_root):
        return out
    with _build_lock(out):
        if is_built(recipe, cache_root):  # another process built it while we waited
            return out
        log.info("building dataset %s", out)
        try:
            summary = _build(recipe, out, progress)
        except OutputExistsError:  # a leftover without its dataset.json files: not ours to delete blindly
            raise DatasetError(f"{out} exists but is not a complete dataset; delete it and retry") from None
        log.info("dataset ready: %s", json.dumps({k: summary.get(k) for k in ("out", "source", "seconds")}))
    return out
