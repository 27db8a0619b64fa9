from __future__ import annotations

from pathlib import Path

import pytest
from support.train import events, latest_ckpt

from hrm.run.config import describe, list_presets, load_preset, presets_dir, resolve_total_steps
from hrm.run.presets import FIRST_PRESETS

PRESETS = list_presets()
NAMES = {p.stem for p in PRESETS}
# The CPU presets with recursion and ACT on, beside the one-pass preset of the same task (same data recipe).
THINKING = {
    "sudoku-think-cpu": "sudoku-cpu",
    "trm-sudoku-cpu": "sudoku-cpu",
    "maze-think-cpu": "maze-cpu",
    "trm-maze-cpu": "maze-cpu",
}


def test_the_shipped_presets_exist() -> None:
    assert presets_dir().name == "presets"
    assert {"tiny", "sudoku-cpu", "maze-cpu", "sudoku-extreme-1k", "maze-hard-1k"} <= NAMES
    assert set(THINKING) <= NAMES


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


@pytest.mark.parametrize("name", THINKING)
def test_thinking_presets_recurse_and_halt_on_a_cpu(name: str) -> None:
    cfg, m = load_preset(name), load_preset(name).model
    assert cfg.train.device == "cpu" and 64 <= m.hidden_size <= 128
    assert 4 <= m.halt_max_steps <= 8 and m.halt_exploration_prob > 0  # ACT on: segments to halt among
    if m.arch == "trm":
        assert m.H_cycles >= 2  # recursion inside each segment: no-grad cycles before the one with gradient
        assert cfg.train.ema and m.no_ACT_continue  # the paper's EMA and halting
    else:
        assert m.arch == "hrm"
        # recursion inside each segment: the L module runs H_cycles × L_cycles times, all but the last without grad
        assert m.H_cycles * m.L_cycles >= 2
    if cfg.data.task == "sudoku":  # the fixed 9×9 grid: the sequence MLP, as TRM's Sudoku recipe
        assert m.mlp_t and m.pos_encodings == "none"
    base = load_preset(THINKING[name])
    # the same puzzles as the one-pass preset, so bench/learn.py compares like with like
    assert describe(cfg)["dataset"] == describe(base)["dataset"]
    assert cfg.train.global_batch_size == base.train.global_batch_size
    assert cfg.train.eval_max_examples == base.train.eval_max_examples
    assert cfg.train.eval_interval is not None and cfg.train.eval_interval <= 200
    assert describe(cfg)["num_params"] <= describe(base)["num_params"]  # recursion, not size, does the work


def test_the_picker_lists_the_thinking_preset_first() -> None:
    assert FIRST_PRESETS and set(FIRST_PRESETS) <= set(THINKING)
    assert [p.stem for p in PRESETS[: len(FIRST_PRESETS)]] == list(FIRST_PRESETS)
    rest = [p.name for p in PRESETS[len(FIRST_PRESETS) :]]
    assert rest == sorted(rest)  # the others by file name, as before


# The preset's own model on a few puzzles of its task, level and size.
TINY_DATA = ["data.train=16", "data.test=8", "train.global_batch_size=8", "train.eval_max_examples=8"]


@pytest.mark.slow
@pytest.mark.parametrize("name", THINKING)
def test_thinking_preset_trains_evaluates_checkpoints_and_resumes(name: str, tmp_path: Path) -> None:
    from hrm.train.cli import main

    run = tmp_path / name
    sets = [
        *TINY_DATA,
        "train.eval_interval=3",
        "train.total_steps=3",
        "train.checkpoint_interval=2",
        "train.log_interval=1",
    ]
    assert main([name, "--run-dir", str(run), *sets, "--stop-at-step", "2"]) == 0
    assert latest_ckpt(run).name.endswith("00000002.pt")
    assert main(["--run-dir", str(run), "--resume", "latest"]) == 0
    evs = events(run)
    hmax = load_preset(name).model.halt_max_steps
    runs = [e for e in evs if e["kind"] == "run"]
    assert len(runs) == 2 and runs[1]["step"] == 2 and runs[0]["config"]["model"]["halt_max_steps"] == hmax
    train = {e["step"]: e for e in evs if e["kind"] == "train"}
    assert sorted(train) == [1, 2, 3]
    # ACT is on: the train events carry the per-segment halting counts, one bin per segment
    assert all(len(e["act_steps_hist"]) == hmax for e in train.values())
    (ev,) = [e for e in evs if e["kind"] == "eval"]
    assert ev["step"] == 3 and len(ev["act_steps_hist"]) == hmax and sum(ev["act_steps_hist"]) == 8
    assert ev["changed_accuracy"] is not None
    assert [e["state"] for e in evs if e["kind"] == "status"][-1] == "finished"
