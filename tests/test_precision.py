"""Precision chosen, not stumbled into: float16 refused, `auto` by compute capability, and a carry saved in
another dtype cast to the compute dtype instead of promoting the run."""

from __future__ import annotations

import pytest
import torch

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1, carry_from_state_dict, carry_state_dict
from hrm.model.layers import choose_forward_dtype, resolve_forward_dtype
from hrm.model.losses import ACTLossHead
from hrm.run.config import ConfigError, load_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, S, V = 4, 9, 6


def make(dtype: str) -> HierarchicalReasoningModel_ACTV1:
    torch.manual_seed(0)
    cfg = HRMConfig(
        batch_size=B, seq_len=S, vocab_size=V, puzzle_emb_ndim=16, hidden_size=16, num_heads=2,
        H_layers=1, L_layers=1, halt_max_steps=4, expansion=2.0, forward_dtype=dtype,
    )  # fmt: skip
    return HierarchicalReasoningModel_ACTV1(cfg)


def batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(0, V, (B, S), generator=g, dtype=torch.int32),
        labels=torch.randint(1, V, (B, S), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32),
    )


def test_float16_is_refused_by_the_schema_and_the_model() -> None:
    with pytest.raises(ConfigError, match=r"model\.forward_dtype: float16 is not supported.*loss scaling"):
        load_preset("tiny", ["model.forward_dtype=float16"])
    with pytest.raises(ValueError, match="float16 is not supported"):
        HRMConfig(batch_size=1, seq_len=4, vocab_size=3, forward_dtype="float16")
    with pytest.raises(ValueError, match="float16 is not supported"):
        resolve_forward_dtype("float16", "cpu")


@pytest.mark.parametrize(
    "capability, dtype, says",
    [((9, 0), torch.bfloat16, "9.0 runs it natively"), ((8, 0), torch.bfloat16, "8.0"),
     ((7, 0), torch.float32, "7.0 < 8.0 has no native bfloat16"), ((7, 5), torch.float32, "7.5 < 8.0")],
)  # fmt: skip
def test_auto_picks_bfloat16_only_on_cards_that_run_it(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype, says: str
) -> None:
    asked: list[torch.device] = []

    def capability_of(dev: torch.device) -> tuple[int, int]:
        asked.append(dev)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    chosen, why = choose_forward_dtype("auto", torch.device("cuda", 1))
    assert chosen == dtype and says in why and asked == [torch.device("cuda", 1)]
    assert choose_forward_dtype("auto", "cpu") == (torch.float32, "auto: float32 on cpu")
    # an explicit choice is kept whatever the card
    assert choose_forward_dtype("bfloat16", torch.device("cuda", 0))[0] == torch.bfloat16


def test_float32_carry_resumed_in_a_bfloat16_run_stays_bfloat16() -> None:
    """A checkpoint written by a float32 run (CPU) resumed by a bfloat16 one (CUDA): `where(halted, H_init,
    z)` would promote to float32 and keep the whole run there. The carry is cast when it is loaded."""
    m32, m16 = make("float32").train(), make("bfloat16").train()
    m16.load_state_dict(m32.state_dict())
    head32 = ACTLossHead(m32)
    carry, *_ = head32(head32.initial_carry(batch(0)), batch(0))
    carry.halted[:2] = False  # two rows keep their (float32) state into the resumed step
    saved = {k: v.clone() for k, v in carry_state_dict(carry).items()}
    assert saved["z_H"].dtype == torch.float32

    head16 = ACTLossHead(m16)
    resumed = carry_from_state_dict(saved)
    new, loss, _m, out, _ = head16(resumed, batch(1), return_keys=("logits",))
    assert new.inner_carry.z_H.dtype == torch.bfloat16 and new.inner_carry.z_L.dtype == torch.bfloat16
    assert out["logits"].dtype == torch.bfloat16
    # the same step from the carry cast by hand: the cast is the only thing that happened
    by_hand = carry_from_state_dict({k: v.to(torch.bfloat16) if k in ("z_H", "z_L") else v for k, v in saved.items()})
    torch.manual_seed(5)
    a, *_ = head16(carry_from_state_dict(saved), batch(1))
    torch.manual_seed(5)
    b, *_ = head16(by_hand, batch(1))
    assert torch.equal(a.inner_carry.z_H, b.inner_carry.z_H) and torch.equal(a.inner_carry.z_L, b.inner_carry.z_L)
    assert torch.isfinite(loss)
