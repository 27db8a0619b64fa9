from __future__ import annotations

import pytest

from hrm.run.config import describe, list_presets, load_preset, presets_dir, resolve_total_steps

PRESETS = list_presets()
NAMES = {p.stem for p in PRESETS}


def test_the_shipped_presets_exist() -> None:
    assert presets_dir().name == "presets"
    assert {"tiny", "sudoku-cpu", "maze-cpu", "sudoku-extreme-1k", "maze-hard-1k"} <= NAMES


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_validates(path) -> None:
    cfg = load_preset(path.stem)
    assert cfg == load_preset(path)  # by name and by path alike
    assert cfg.run.preset == path.stem and cfg.run.description
    info = describe(cfg)
    assert info["num_params"] > 0 and info["task"] in ("sudoku", "maze")


@pytest.mark.parametrize("name, task", [("sudoku-extreme-1k", "sudoku"), ("maze-hard-1k", "maze")])
def test_paper_presets_follow_the_reference_recipe(name: str, task: str) -> None:
    cfg = load_preset(name)
    assert cfg.data.task == task and cfg.data.train == 1000 and cfg.data.from_csv
    assert describe(cfg)["model"] == "h512 · 27.3M"
    assert (cfg.optim.lr, cfg.optim.puzzle_emb_lr) == (1e-4, 1e-4)
    assert (cfg.optim.weight_decay, cfg.optim.puzzle_emb_weight_decay) == (1.0, 1.0)
    assert cfg.train.global_batch_size == 768 and cfg.train.epochs == 20000 and cfg.train.device == "cuda"
    assert resolve_total_steps(cfg, 1000) == 26_041
    assert cfg.train.eval_interval == 2604  # every 2000 epochs
    if task == "sudoku":
        assert cfg.data.num_aug == 1000 and cfg.data.level == "extreme"
    else:
        assert cfg.data.size == 30 and cfg.data.level == "hard"


def test_cpu_presets_are_small_and_on_cpu() -> None:
    for name in ("sudoku-cpu", "maze-cpu"):
        cfg = load_preset(name)
        assert cfg.train.device == "cpu" and cfg.model.hidden_size == 128
        # one pass per example (no ACT, no Q-target forward): what learned within 30 min in bench/learn.py
        m = cfg.model
        assert (m.H_layers, m.L_layers, m.H_cycles, m.L_cycles, m.halt_max_steps) == (2, 2, 1, 1, 1)
        assert cfg.train.global_batch_size == 32
        assert cfg.train.eval_interval is not None and cfg.train.eval_interval <= 200  # curves within minutes
    assert tuple(load_preset("sudoku-cpu").data.blanks) == (30, 40)
    assert load_preset("maze-cpu").data.size >= 11


def test_tiny_is_tiny() -> None:
    cfg = load_preset("tiny")
    assert 32 <= cfg.model.hidden_size <= 64 and cfg.model.H_layers == cfg.model.L_layers == 1
    assert cfg.model.halt_max_steps <= 4 and cfg.train.global_batch_size <= 16
    assert cfg.data.train <= 64 and cfg.data.test <= 16 and cfg.data.blanks[1] <= 10
    assert describe(cfg)["num_params"] < 200_000


def test_presets_dir_can_be_pointed_elsewhere(tmp_path, monkeypatch) -> None:
    (tmp_path / "mine.yaml").write_text("train:\n  total_steps: 3\n")
    monkeypatch.setenv("HRM_PRESETS_DIR", str(tmp_path))
    assert [p.stem for p in list_presets()] == ["mine"]
    assert load_preset("mine").train.total_steps == 3
