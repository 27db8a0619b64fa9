"""The checkpoint adapter: reference prefixes, all_config.yaml, our own format, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead
from hrm.model.reference import (
    CheckpointError,
    CheckpointMismatch,
    config_from_reference_yaml,
    load_any_checkpoint,
    load_model_weights,
)

FIELDS = dict(
    batch_size=4,
    seq_len=9,
    vocab_size=6,
    puzzle_emb_ndim=32,
    hidden_size=32,
    num_heads=2,
    H_layers=1,
    L_layers=2,
    halt_max_steps=4,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(seed: int, **kw) -> ACTLossHead:
    torch.manual_seed(seed)
    return ACTLossHead(HierarchicalReasoningModel_ACTV1(HRMConfig(**{**FIELDS, **kw})))


def _reference_state_dict(head: ACTLossHead, prefix: str) -> dict[str, torch.Tensor]:
    """What the reference pretrain.py saves: the loss head's keys (model.inner.*), optionally behind
    `_orig_mod.`; its H_init/L_init are bf16 buffers."""
    sd = {}
    for k, v in head.state_dict().items():
        key = prefix + k if prefix != "bare" else k.removeprefix("model.inner.")
        sd[key] = v.to(torch.bfloat16) if k.endswith(("H_init", "L_init")) else v.clone()
    return sd


@pytest.mark.parametrize("prefix", ["_orig_mod.", "", "bare"])
def test_loads_reference_state_dicts_with_each_prefix(prefix: str, tmp_path: Path) -> None:
    src = _head(1)
    path = tmp_path / "step_1234"
    torch.save(_reference_state_dict(src, prefix), path)
    dst = _head(2)
    load_model_weights(dst, torch.load(path, weights_only=True))
    for k, v in src.state_dict().items():
        want = v.to(torch.bfloat16).float() if k.endswith(("H_init", "L_init")) else v
        assert torch.equal(dst.state_dict()[k], want), k
    # also into the ACT model and into the inner model directly
    load_model_weights(dst.model, _reference_state_dict(src, prefix))
    load_model_weights(dst.model.inner, _reference_state_dict(src, prefix))


def test_state_dict_names_and_order_are_the_references() -> None:
    keys = list(_head(0).state_dict())
    assert keys[:7] == [
        "model.inner.H_init",
        "model.inner.L_init",
        "model.inner.embed_tokens.embedding_weight",
        "model.inner.lm_head.weight",
        "model.inner.q_head.weight",
        "model.inner.q_head.bias",
        "model.inner.puzzle_emb.weights",
    ]
    assert keys[7:11] == [
        f"model.inner.H_level.layers.0.{n}"
        for n in (
            "self_attn.qkv_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_up_proj.weight",
            "mlp.down_proj.weight",
        )
    ]
    assert keys[-1] == "model.inner.L_level.layers.1.mlp.down_proj.weight"
    assert not any("local_" in k or "rotary" in k for k in keys)
    learned = list(_head(0, pos_encodings="learned").state_dict())
    assert learned[7] == "model.inner.embed_pos.embedding_weight"


def test_shape_mismatch_names_tensor_and_shapes() -> None:
    with pytest.raises(CheckpointMismatch) as e:
        load_model_weights(_head(0), _reference_state_dict(_head(0, num_puzzle_identifiers=3), ""))
    msg = str(e.value)
    assert "puzzle_emb.weights" in msg and "[1, 32]" in msg and "[3, 32]" in msg and "\n" not in msg


def test_missing_and_unexpected_tensors_are_named() -> None:
    sd = _reference_state_dict(_head(0), "")
    del sd["model.inner.lm_head.weight"]
    with pytest.raises(CheckpointMismatch, match="lm_head.weight"):
        load_model_weights(_head(0), sd)
    with pytest.raises(CheckpointMismatch, match="embed_pos"):
        load_model_weights(_head(0), _reference_state_dict(_head(0, pos_encodings="learned"), ""))


def _write_reference_run(tmp_path: Path, head: ACTLossHead) -> Path:
    run = tmp_path / "ckpt"
    run.mkdir()
    torch.save(_reference_state_dict(head, "_orig_mod."), run / "step_52083")
    arch = {
        k: FIELDS[k] for k in ("hidden_size", "num_heads", "H_layers", "L_layers", "halt_max_steps", "puzzle_emb_ndim")
    }
    arch.update(
        H_cycles=2,
        L_cycles=2,
        expansion=4,
        halt_exploration_prob=0.1,
        pos_encodings="rope",
        name="hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
        loss={"name": "losses@ACTLossHead", "loss_type": "softmax_cross_entropy"},
    )
    (run / "all_config.yaml").write_text(
        yaml.safe_dump({"arch": arch, "global_batch_size": 384, "data_path": str(tmp_path / "nodata"), "lr": 7e-5})
    )
    return run


def test_reference_checkpoint_with_all_config_yaml(tmp_path: Path) -> None:
    src = _head(5)
    run = _write_reference_run(tmp_path, src)
    ck = load_any_checkpoint(run / "step_52083")
    assert (ck.kind, ck.step, ck.loss_type, ck.batch_size) == ("reference", 52083, "softmax_cross_entropy", 384)
    cfg = ck.build_config(seq_len=9, batch_size=8)
    assert (cfg.vocab_size, cfg.num_puzzle_identifiers, cfg.hidden_size, cfg.batch_size) == (6, 1, 32, 8)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg), ck.loss_type)
    load_model_weights(head, ck.state_dict)
    assert torch.equal(head.model.inner.lm_head.weight, src.model.inner.lm_head.weight)
    yaml_cfg = config_from_reference_yaml(run / "all_config.yaml", seq_len=9, vocab_size=6)
    assert (yaml_cfg.batch_size, yaml_cfg.expansion, yaml_cfg.L_layers) == (384, 4, 2)
    with pytest.raises(CheckpointMismatch, match="vocab"):
        ck.build_config(seq_len=9, vocab_size=11)


def test_our_trainer_checkpoint_format(tmp_path: Path) -> None:
    src = _head(6)
    path = tmp_path / "step-00000010.pt"
    model_fields = {k: v for k, v in FIELDS.items() if k not in ("batch_size", "seq_len", "vocab_size")}
    torch.save(
        {
            "format": "hrm-tui-checkpoint",
            "step": 10,
            "model": src.model.state_dict(),
            "config": {
                "model": {**model_fields, "loss_type": "stablemax_cross_entropy"},
                "train": {"global_batch_size": 4},
            },
        },
        path,
    )
    ck = load_any_checkpoint(path)
    assert (ck.kind, ck.step, ck.batch_size) == ("hrm-tui", 10, 4)
    cfg = ck.build_config(seq_len=9)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    load_model_weights(head, ck.state_dict)
    assert torch.equal(head.model.inner.H_init, src.model.inner.H_init)


def test_bad_files_get_one_clear_line(tmp_path: Path) -> None:
    run = _write_reference_run(tmp_path, _head(0))
    good = (run / "step_52083").read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "text": b"this is not a checkpoint\n",
        "empty": b"",
    }
    for name, data in cases.items():
        (run / name).write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load_any_checkpoint(run / name)
        assert str(run / name) in str(e.value) and "\n" not in str(e.value), name
    torch.save([1, 2, 3], run / "foreign")
    with pytest.raises(CheckpointError, match="neither"):
        load_any_checkpoint(run / "foreign")
    torch.save({"w": torch.zeros(2)}, run / "other_model")
    with pytest.raises(CheckpointError, match="not an HRM checkpoint"):
        load_any_checkpoint(run / "other_model")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_any_checkpoint(run / "missing")
    (run / "all_config.yaml").unlink()
    with pytest.raises(CheckpointError, match="all_config.yaml"):
        load_any_checkpoint(run / "step_52083")
