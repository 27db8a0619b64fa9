from __future__ import annotations

from pathlib import Path

import pytest

from hrm.run.config import (
    Config,
    ConfigError,
    apply_overrides,
    describe,
    load_config,
    load_preset,
    parse_overrides,
    resolve_total_steps,
    save_config,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_reference_settings() -> None:
    cfg = Config()
    assert (cfg.model.hidden_size, cfg.model.H_layers, cfg.model.L_layers) == (512, 4, 4)
    assert (cfg.model.H_cycles, cfg.model.L_cycles, cfg.model.halt_max_steps) == (2, 2, 16)
    assert cfg.model.hrm_fields()["puzzle_emb_ndim"] == 512  # null means hidden_size, as the reference
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.lr_min_ratio) == (0.9, 0.95, 1.0)
    assert describe(cfg)["num_params"] == 27_275_266  # HRM-SPEC §0, Sudoku vocab 11


def test_every_field_has_a_description() -> None:
    from hrm.run import config as c

    for section in (c.ModelConfig, c.DataConfig, c.OptimConfig, c.TrainConfig, c.RunConfig, c.SinksConfig, c.Config):
        for name, info in section.model_fields.items():
            assert info.description, f"{section.__name__}.{name} has no description"


def test_overrides_dotted_paths_and_yaml_scalars() -> None:
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=3e-4",
            "train.total_steps=100",
            "data.blanks=[30, 40]",
            "sinks.tensorboard=true",
            "train.eval_interval=null",
            "run.name=exp1",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.total_steps == 100 and cfg.train.epochs is None  # naming one clears the other
    assert cfg.data.blanks == (30, 40) and cfg.sinks.tensorboard is True
    assert cfg.train.eval_interval is None and cfg.run.name == "exp1"
    back = apply_overrides(cfg, ["train.epochs=5"])
    assert back.train.epochs == 5 and back.train.total_steps is None
    assert parse_overrides(["a.b.c=1", "a.b.d=x"]) == {"a": {"b": {"c": 1, "d": "x"}}}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=1e-3", "unknown key 'train.lr'; did you mean 'optim.lr'?"),
        ("train.batch_size=32", "did you mean 'train.global_batch_size'?"),
        ("model.hiden_size=64", "did you mean 'model.hidden_size'?"),
        ("trian.seed=1", "unknown key 'trian'; did you mean 'train'?"),
    ],
)
def test_unknown_key_names_it_and_the_nearest_valid_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), [override])
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "override, field, expected",
    [
        ("train.global_batch_size=lots", "train.global_batch_size", "expected an integer"),
        ("train.global_batch_size=1.5", "train.global_batch_size", "expected an integer"),
        ("optim.lr=fast", "optim.lr", "expected a number"),
        ("model.pos_encodings=sinus", "model.pos_encodings", "expected one of 'rope', 'learned'"),
        ("sinks.wandb=maybe", "sinks.wandb", "expected true/false"),
        ("train.total_steps=abc", "train.total_steps", "expected an integer or null"),
    ],
)
def test_wrong_type_names_field_and_expected_type(override: str, field: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), [override])
    msg = str(err.value)
    assert msg.startswith(f"overrides: {field}:") and expected in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.hidden_size=100", "divisible by model.num_heads"),
        ("data.blanks=[50, 40]", "data.blanks must be [min, max]"),
        ("run.name=../escape", "not allowed"),
        ("run.name=.hidden", "not allowed"),
        ("train.keep_last=0", "train.keep_last"),
        ("no_equals_sign", "section.key=value"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        apply_overrides(Config(), [override])
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "override, key, reason",
    [
        ("optim.lr=3.5e38", "optim.lr", "too large"),  # crashed the first step: float32 overflow
        ("optim.lr=1e300", "optim.lr", "too large"),
        ("optim.lr=.inf", "optim.lr", "finite"),
        ("optim.lr=.nan", "optim.lr", "finite"),
        ("optim.lr=-1e-4", "optim.lr", "greater than 0"),
        ("optim.puzzle_emb_lr=1e39", "optim.puzzle_emb_lr", "too large"),
        ("optim.weight_decay=.inf", "optim.weight_decay", "finite"),
        ("model.rope_theta=1e40", "model.rope_theta", "too large"),
        ("model.rms_norm_eps=0", "model.rms_norm_eps", "greater than 0"),
        ("train.early_stop_exact_accuracy=.nan", "train.early_stop_exact_accuracy", "finite"),
        ("train.epochs=.inf", "train.epochs", "finite"),
        ("train.total_steps=100000000000000000000000", "train.total_steps", "int64"),
        ("train.seed=-1", "train.seed", "greater than or equal to 0"),
        ("data.seed=-5", "data.seed", "greater than or equal to 0"),
    ],
)
def test_out_of_range_numbers_are_refused_naming_the_key(override: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_preset("tiny", [override])
    text = str(err.value)
    assert f"{key}:" in text and reason in text and "\n" not in text


def test_the_largest_float32_learning_rate_still_validates() -> None:
    assert load_preset("tiny", ["optim.lr=3.4e38"]).optim.lr == 3.4e38


def test_length_must_be_given() -> None:
    with pytest.raises(ConfigError, match="set train.total_steps or train.epochs"):
        apply_overrides(Config(), ["train.epochs=null"])


def test_preset_file_errors_name_the_file(tmp_path: Path) -> None:
    bad_key = _write(tmp_path / "a.yaml", "train:\n  total_steps: 10\n  keep_lats: 2\n")
    with pytest.raises(ConfigError) as err:
        load_preset(bad_key)
    assert str(bad_key) in str(err.value) and "did you mean 'train.keep_last'" in str(err.value)

    malformed = _write(tmp_path / "b.yaml", "train:\n  total_steps: 10\n   keep_last: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_preset(malformed)
    assert f"{malformed}:3:" in str(err.value) and "malformed YAML" in str(err.value)

    not_mapping = _write(tmp_path / "c.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_preset(not_mapping)

    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'tinny'. Did you mean 'tiny'"):
        load_preset("tinny")


def test_preset_holds_only_overrides_and_cli_wins(tmp_path: Path) -> None:
    preset = _write(tmp_path / "mine.yaml", "optim:\n  lr: 1e-3\ntrain:\n  total_steps: 50\n")
    cfg = load_preset(preset, overrides=["optim.lr=2e-3"])
    assert cfg.optim.lr == pytest.approx(2e-3) and cfg.train.total_steps == 50
    assert cfg.model.hidden_size == 512  # untouched defaults
    assert cfg.run.preset == "mine"
    assert load_preset(_write(tmp_path / "empty.yaml", "")).run.preset == "empty"


def test_a_bad_command_line_override_is_blamed_on_the_override_not_the_preset(tmp_path: Path) -> None:
    preset = _write(tmp_path / "fine.yaml", "train:\n  total_steps: 50\n")
    with pytest.raises(ConfigError) as err:
        load_preset(preset, overrides=["train.keep_lats=2"])
    assert "command-line overrides" in str(err.value) and str(preset) not in str(err.value)
    assert "did you mean 'train.keep_last'" in str(err.value)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    cfg = load_preset("tiny", overrides=["run.name=abc", "data.blanks=[2, 5]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert not list(tmp_path.glob(".*tmp"))


def test_resolve_total_steps_follows_the_reference_formula() -> None:
    cfg = apply_overrides(Config(), ["train.epochs=20000", "train.global_batch_size=768"])
    assert resolve_total_steps(cfg, 1000) == 26_041  # HRM-SPEC §0
    assert resolve_total_steps(apply_overrides(cfg, ["train.global_batch_size=384"]), 1000) == 52_083
    assert resolve_total_steps(apply_overrides(cfg, ["train.total_steps=7"]), 1000) == 7
    with pytest.raises(ConfigError, match="gives 0 steps"):
        resolve_total_steps(apply_overrides(cfg, ["train.epochs=1"]), 10)


def test_describe_for_the_app() -> None:
    d = describe(load_preset("maze-cpu"))
    assert d["task"] == "maze" and d["grid"] == [11, 11] and d["seq_len"] == 121 and d["vocab_size"] == 6
    assert d["model"].startswith("h128 · ") and d["model"].endswith("M")
    assert d["device"] == "cpu" and d["flops_per_step"] > 0
    assert d["dataset"]["task"] == "maze"


def test_maze_levels_and_default_sizes() -> None:
    for level, side in (("easy", 9), ("medium", 15), ("hard", 30)):
        cfg = apply_overrides(Config(), ["data.task=maze", f"data.level={level}"])
        assert describe(cfg)["grid"] == [side, side]
    with pytest.raises(ConfigError, match="does not exist for mazes"):
        apply_overrides(Config(), ["data.task=maze", "data.level=extreme"])


def test_keys_of_earlier_versions_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A run directory or checkpoint written before model.cpu_kernels / train.strict_resume were removed
    still loads (hrm-eval validates the model section alone, the trainer the whole config)."""
    from hrm.run.config import ModelConfig, config_from_dict

    old = Config().to_dict()
    old["model"]["cpu_kernels"] = "auto"
    old["train"]["strict_resume"] = True
    with caplog.at_level("WARNING"):
        cfg = config_from_dict(old)
        alone = ModelConfig.model_validate({**Config().to_dict()["model"], "cpu_kernels": "c"})
    assert cfg.to_dict() == Config().to_dict() and alone == Config().model
    assert "model.cpu_kernels is no longer used" in caplog.text and "train.strict_resume" in caplog.text
    with pytest.raises(ConfigError, match="cpu_kernel"):  # a misspelling is still an unknown key
        config_from_dict({"model": {"cpu_kernel": "c"}})
