from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import hrm.data
from hrm.data.cache import ensure_dataset
from hrm.data.format import DatasetError, load_split, read_metadata
from hrm.run.recipes import dataset_dir, is_built, recipe_key

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _maze(**kw) -> dict:
    r = dict(
        task="maze",
        path=None,
        from_csv=None,
        level="easy",
        size=9,
        train=6,
        test=3,
        num_aug=0,
        blanks=None,
        min_rating=None,
        aug=False,
        seed=0,
    )
    r.update(kw)
    return r


def test_keys_are_stable_readable_and_follow_the_recipe(tmp_path):
    assert recipe_key(_maze()) == recipe_key(dict(_maze()))
    assert recipe_key(_maze()).startswith("maze-easy-9-")
    assert recipe_key(_maze(seed=1)) != recipe_key(_maze())
    assert recipe_key(_maze(num_aug=5)) == recipe_key(_maze())  # a sudoku-only key does not split maze caches
    assert recipe_key(_maze(size=None, level="hard")).startswith("maze-hard-30-")
    assert dataset_dir(_maze(), tmp_path) == tmp_path / recipe_key(_maze())
    assert dataset_dir(_maze(path=str(tmp_path / "x"))) == tmp_path / "x"
    with pytest.raises(ValueError, match="data.task"):
        recipe_key(_maze(task="chess"))


def test_ensure_builds_once_into_the_cache(tmp_path):
    recipe = _maze()
    assert not is_built(recipe, tmp_path)
    root = ensure_dataset(recipe, tmp_path, progress=False)
    assert is_built(recipe, tmp_path) and root.parent == tmp_path
    stamp = (root / "train" / "dataset.json").stat().st_mtime_ns
    assert ensure_dataset(recipe, tmp_path, progress=False) == root
    assert (root / "train" / "dataset.json").stat().st_mtime_ns == stamp
    assert read_metadata(root, "train").seq_len == 81
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, f".{root.name}.lock"])


def test_missing_csv_folder_falls_back_to_generated_data(tmp_path, caplog):
    recipe = _maze(from_csv=str(tmp_path / "no-such-folder"))
    with caplog.at_level(logging.WARNING, logger="hrm.data.cache"):
        root = ensure_dataset(recipe, tmp_path / "cache", progress=False)
    assert "not found; generating maze data instead" in caplog.text
    assert recipe_key(recipe) == recipe_key(_maze())  # the same dataset as the plain generated recipe
    assert len(load_split(root, "train")["inputs"]) == 6


def test_existing_csv_folder_builds_the_reference_dataset(tmp_path):
    real = SHARED / "maze-30x30-hard-1k"
    if not real.is_dir():
        pytest.skip("../shared/data/maze-30x30-hard-1k is absent")
    recipe = _maze(from_csv=str(real), level="hard", size=30, train=100, test=1000)
    assert recipe_key(recipe).startswith("maze-csv-")
    root = ensure_dataset(recipe, tmp_path, progress=False)
    train, test = load_split(root, "train"), load_split(root, "test")
    real_train = np.asarray(load_split(real / "npy", "train")["inputs"])
    assert len(train["inputs"]) == 100 and len(test["inputs"]) == 1000  # train subsampled, test whole
    rows = {r.tobytes() for r in real_train}
    assert all(r.tobytes() in rows for r in np.asarray(train["inputs"]))


def test_path_recipes_are_checked_not_built(tmp_path):
    with pytest.raises(DatasetError, match="data.path=.*remove it to build one"):
        ensure_dataset(_maze(path=str(tmp_path / "nothing")))
    built = ensure_dataset(_maze(), tmp_path, progress=False)
    assert ensure_dataset(_maze(path=str(built))) == built


def test_sudoku_recipes_go_to_the_sudoku_builder(tmp_path, monkeypatch):
    calls = []

    def fake_build(out, **kw):
        calls.append(kw)
        from hrm.data.maze import build_dataset  # any real dataset will do for the cache logic

        return build_dataset(out, train=2, test=1, level="easy", size=5, progress=False)

    fake = types.SimpleNamespace(build_dataset=fake_build)
    monkeypatch.setitem(sys.modules, "hrm.data.sudoku", fake)
    monkeypatch.setattr(hrm.data, "sudoku", fake, raising=False)
    recipe = dict(
        task="sudoku",
        path=None,
        from_csv=str(tmp_path / "absent"),
        level="extreme",
        size=None,
        train=10,
        test=4,
        num_aug=3,
        blanks=[30, 40],
        min_rating=2,
        aug=False,
        seed=9,
    )
    ensure_dataset(recipe, tmp_path / "cache", progress=False)
    assert calls == [
        dict(
            train=10,
            test=4,
            level="extreme",
            seed=9,
            from_csv=None,
            force=False,
            progress=False,
            num_aug=3,
            blanks=[30, 40],
            min_rating=2,
        )
    ]
    csv_dir = tmp_path / "csvs"
    csv_dir.mkdir()
    ensure_dataset({**recipe, "from_csv": str(csv_dir)}, tmp_path / "cache", progress=False)
    assert calls[1]["from_csv"] == csv_dir.resolve() and calls[1]["subsample_size"] == 10


def test_concurrent_processes_build_once(tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
        "from hrm.data.cache import ensure_dataset;"
        f"print(ensure_dataset(dict(task='maze', level='easy', size=9, train=40, test=5, seed=3), {str(tmp_path)!r},"
        " progress=False))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("building dataset") for o in outs) == 1
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1
