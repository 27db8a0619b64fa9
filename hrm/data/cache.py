"""Building a recipe's dataset into the cache (the half of the recipe contract that runs generators).

`hrm.run.recipes` holds the torch- and numba-free half (keys, cache paths, whether a dataset is built),
which the app reads; this module calls the generators, which may load numba.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from hrm.data.format import DatasetError, OutputExistsError, dataset_summary
from hrm.run.lock import exclusive
from hrm.run.recipes import _csv_folder, _task, dataset_dir, is_built

log = logging.getLogger(__name__)


def _build_lock(target: Path) -> contextlib.AbstractContextManager[None]:
    """One builder per dataset across processes (app, trainer, several ranks on one host)."""
    return exclusive(target.parent / f".{target.name}.lock")


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

    return maze.build_dataset(
        out, size=recipe.get("size"), aug=bool(recipe.get("aug")), unique_path=bool(recipe.get("unique_path")), **common
    )


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
