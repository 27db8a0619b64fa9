"""A compiled training step without graph breaks (issue 16 item 3): `torch._dynamo.explain` traces the ACT
loss head's forward on a tiny CPU model (Dynamo only, no Inductor compile) and finds one graph."""

from __future__ import annotations

import pytest
import torch

from hrm.model import layers
from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, S, V = 2, 9, 6


def _head() -> tuple[ACTLossHead, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = HRMConfig(
        batch_size=B, seq_len=S, vocab_size=V, puzzle_emb_ndim=16, hidden_size=16, num_heads=2,
        H_layers=1, L_layers=1, H_cycles=2, L_cycles=2, halt_max_steps=4, expansion=2.0,
    )  # fmt: skip
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg)).train()
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=torch.randint(0, V, (B, S), generator=g, dtype=torch.int32),
        labels=torch.randint(1, V, (B, S), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32),
    )
    return head, data


@pytest.mark.slow  # ~20 s of Dynamo tracing on the shared 2-core machine
def test_training_forward_traces_as_one_graph() -> None:
    head, data = _head()
    carry, *_ = head(head.initial_carry(data), data)  # a carry with some rows running, as mid-training
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(head)(carry, data)
    finally:
        torch._dynamo.reset()
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


def test_traceable_rope_equals_the_cpu_in_place_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the CPU (and under compile) RoPE without grad takes the cat + addcmul form; same values."""
    rope = layers.RotaryEmbedding(8, 5, 10000.0, n_heads=4)
    x = torch.randn(3, 5, 4, 8)
    with torch.no_grad():
        cpu_form = layers.apply_rope(x, *rope())
        monkeypatch.setattr(layers, "_traceable", lambda t: True)
        traced_form = layers.apply_rope(x, *rope())
    with torch.enable_grad():
        grad_form = layers.apply_rope(x, *rope())
    torch.testing.assert_close(traced_form, cpu_form, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_form.detach(), cpu_form, rtol=0, atol=1e-6)
