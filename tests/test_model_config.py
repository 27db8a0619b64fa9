"""HRMConfig and its closed-form counts against real modules (paper sizes built on the meta device)."""

from __future__ import annotations

import pytest
import torch

from hrm.model.config import HRMConfig, block_parameters, count_parameters, flops_per_example, layer_flops_per_token
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead

SUDOKU = dict(batch_size=768, seq_len=81, vocab_size=11, puzzle_emb_ndim=512, num_puzzle_identifiers=1)
MAZE = dict(batch_size=768, seq_len=900, vocab_size=6, puzzle_emb_ndim=512, num_puzzle_identifiers=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module_count(cfg: HRMConfig) -> int:
    with torch.device("meta"):  # no memory, no init cost
        head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    return sum(p.numel() for p in head.parameters())


@pytest.mark.parametrize("fields, expected", [(SUDOKU, 27_275_266), (MAZE, 27_270_146)])
def test_paper_parameter_counts(fields: dict, expected: int) -> None:
    cfg = HRMConfig(**fields)
    assert count_parameters(cfg) == expected
    assert _module_count(cfg) == expected
    assert cfg.mlp_inner == 1536 and block_parameters(cfg) == 3_407_872


@pytest.mark.parametrize(
    "extra",
    [
        dict(hidden_size=128, num_heads=2, expansion=4.0),
        dict(hidden_size=96, num_heads=3, expansion=2.5, H_layers=1, L_layers=3, pos_encodings="learned"),
        dict(hidden_size=64, num_heads=1, puzzle_emb_ndim=0),
        dict(hidden_size=64, num_heads=2, H_layers=1, L_layers=2, mlp_t=True, pos_encodings="none"),
        dict(hidden_size=64, num_heads=2, mlp_t=True),  # rope computed, unused by the sequence MLP
    ],
)
def test_closed_form_matches_real_small_models(extra: dict) -> None:
    cfg = HRMConfig(**{**SUDOKU, "batch_size": 2, "puzzle_emb_ndim": 64, **extra})
    torch.manual_seed(0)
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    assert count_parameters(cfg) == sum(p.numel() for p in head.parameters())
    # the puzzle embedding, H_init and L_init are buffers, never parameters
    assert all(not n.endswith(("H_init", "L_init", "puzzle_emb.weights")) for n, _ in head.named_parameters())


def test_swiglu_inner_rounding() -> None:
    assert HRMConfig(**SUDOKU, hidden_size=64, num_heads=1).mlp_inner == 256
    assert HRMConfig(**SUDOKU, hidden_size=128, num_heads=2).mlp_inner == 512  # round(341.3)=341 → 512
    assert HRMConfig(**SUDOKU, hidden_size=384, num_heads=6).mlp_inner == 1024  # 1024 exactly


def test_flops_per_example_paper_config() -> None:
    cfg = HRMConfig(**SUDOKU)
    tokens = 82
    per_layer = (2 * 3_407_872 + 4 * tokens * 512) * tokens
    assert layer_flops_per_token(cfg) * tokens == per_layer
    lm, q = 2 * 512 * 11 * tokens, 2 * 512 * 2
    assert flops_per_example(cfg, train=False) == 24 * per_layer + lm + q
    # train: forward + Q-target forward (no lm_head) + backward 2× the 8 grad layers and the heads
    assert flops_per_example(cfg, train=True) == (24 * per_layer + lm + q) + (24 * per_layer + q) + 2 * (
        8 * per_layer + lm + q
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(hidden_size=100, num_heads=3), "divisible"),
        (dict(pos_encodings="alibi"), "pos_encodings"),
        (dict(forward_dtype="float8"), "forward_dtype"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_invalid_configs_name_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HRMConfig(**{**SUDOKU, **bad})


def test_from_dict_ignores_foreign_keys_and_requires_data_fields() -> None:
    cfg = HRMConfig.from_dict(
        {"hidden_size": 64, "num_heads": 2, "loss": {"name": "x"}, "name": "hrm@X"},
        batch_size=4,
        seq_len=9,
        vocab_size=5,
    )
    assert (cfg.hidden_size, cfg.seq_len, cfg.total_seq_len) == (64, 9, 9)
    with pytest.raises(ValueError, match="seq_len"):
        HRMConfig.from_dict({"hidden_size": 64}, batch_size=4, vocab_size=5)
