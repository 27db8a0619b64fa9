"""HRM-ACT-v1 behaviour: init, the one-step gradient, carry semantics, halting, exploration draws, eval."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1, InnerCarry, carry_from_state_dict, carry_state_dict
from hrm.model.init import trunc_normal_, truncated_normal_scale
from hrm.model.losses import ACTLossHead

B, S, V = 4, 9, 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> HRMConfig:
    base = dict(
        batch_size=B,
        seq_len=S,
        vocab_size=V,
        puzzle_emb_ndim=32,
        hidden_size=32,
        num_heads=2,
        H_layers=2,
        L_layers=2,
        halt_max_steps=4,
        expansion=2.0,
    )
    return HRMConfig(**{**base, **kw})


def make(seed: int = 0, **kw) -> HierarchicalReasoningModel_ACTV1:
    torch.manual_seed(seed)
    return HierarchicalReasoningModel_ACTV1(tiny(**kw))


def batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(0, V, (B, S), generator=g, dtype=torch.int32),
        labels=torch.randint(1, V, (B, S), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32),
    )


# --- initialisation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("std", [1.0, 0.044194])
def test_truncated_normal_has_std_sigma_and_bound(std: float) -> None:
    torch.manual_seed(0)
    x = trunc_normal_(torch.empty(400_000), std=std)
    bound = 2 * truncated_normal_scale() * std
    assert truncated_normal_scale() == pytest.approx(1.13685, abs=1e-5)
    assert x.std().item() == pytest.approx(std, rel=0.01)
    assert x.abs().max().item() <= bound * (1 + 1e-6)
    assert x.abs().max().item() > 0.99 * bound  # really truncated at ±2σ_c, not at ±2σ
    assert torch.count_nonzero(trunc_normal_(torch.ones(10), std=0)) == 0


def test_q_head_start_values_and_buffers() -> None:
    inner = make().inner
    assert torch.count_nonzero(inner.q_head.weight) == 0
    assert torch.equal(inner.q_head.bias, torch.full((2,), -5.0))
    assert torch.count_nonzero(inner.puzzle_emb.weights) == 0
    assert inner.H_init.shape == (32,) and not inner.H_init.requires_grad
    assert inner.embed_tokens.embedding_weight.std().item() == pytest.approx(1 / math.sqrt(32), rel=0.2)
    assert inner.puzzle_emb.local_weights.requires_grad and inner.puzzle_emb.local_weights.is_leaf


def test_same_seed_same_initial_state_bitwise() -> None:
    a, b = make(7).state_dict(), make(7).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inner.lm_head.weight"], make(8).state_dict()["inner.lm_head.weight"])


# --- the segment ---------------------------------------------------------------------------------------
def test_only_last_L_and_H_updates_carry_gradient() -> None:
    head = ACTLossHead(make()).train()
    inner = head.model.inner
    calls: list[tuple[str, bool]] = []
    for name in ("L_level", "H_level"):
        getattr(inner, name).register_forward_hook(
            lambda m, a, o, name=name: calls.append((name[0], torch.is_grad_enabled()))
        )
    carry = head.initial_carry(batch(0))
    carry, loss, *_ = head(carry, batch(0))
    # segment (H_cycles=L_cycles=2): L L H L | L H, only the last L and H with grad; then the Q-target pass
    segment = [("L", False), ("L", False), ("H", False), ("L", False), ("L", False), ("H", False)]
    assert calls == segment[:4] + [("L", True), ("H", True)] + segment
    assert not carry.inner_carry.z_H.requires_grad and not carry.inner_carry.z_L.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert inner.puzzle_emb.local_weights.grad is not None
    assert inner.puzzle_emb.local_weights.grad.abs().sum() > 0


def _naive_inner(inner, carry: InnerCarry, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's op sequence written out plainly (rotate-half by cat, out-of-place norms)."""
    cfg = inner.config
    cos, sin = inner.rotary_emb.cos_cached, inner.rotary_emb.sin_cached

    def norm(x):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def block(blk, x):
        b, s, _ = x.shape
        qkv = F.linear(x, blk.self_attn.qkv_proj.weight).view(b, s, 3 * cfg.num_heads, cfg.head_dim)
        q, k, v = (
            qkv[:, :, : cfg.num_heads],
            qkv[:, :, cfg.num_heads : 2 * cfg.num_heads],
            qkv[:, :, 2 * cfg.num_heads :],
        )
        q = q * cos.unsqueeze(-2) + rot(q) * sin.unsqueeze(-2)
        k = k * cos.unsqueeze(-2) + rot(k) * sin.unsqueeze(-2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = norm(x + F.linear(a.transpose(1, 2).reshape(b, s, -1), blk.self_attn.o_proj.weight))
        gate, up = F.linear(x, blk.mlp.gate_up_proj.weight).chunk(2, dim=-1)
        return norm(x + F.linear(F.silu(gate) * up, blk.mlp.down_proj.weight))

    def level(mod, z, inj):
        z = z + inj
        for blk in mod.layers:
            z = block(blk, z)
        return z

    emb = F.embedding(data["inputs"], inner.embed_tokens.embedding_weight)
    emb = torch.cat((inner.puzzle_emb.weights[data["puzzle_identifiers"]].view(-1, 1, cfg.hidden_size), emb), 1)
    x = math.sqrt(cfg.hidden_size) * emb
    z_H, z_L = carry.z_H, carry.z_L
    for _h in range(cfg.H_cycles):
        for _l in range(cfg.L_cycles):
            z_L = level(inner.L_level, z_L, z_H + x)
        z_H = level(inner.H_level, z_H, z_L)
    return F.linear(z_H, inner.lm_head.weight)[:, 1:], F.linear(z_H[:, 0], inner.q_head.weight, inner.q_head.bias)


def _inner_vs_naive(grad: bool):
    model = make(3).eval()
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_()
        model.inner.q_head.weight.normal_(std=0.1)  # zero at init: make the Q values depend on z_H
    data = batch(1)
    carry = model.inner.reset_carry(torch.ones(B, dtype=torch.bool), model.inner.empty_carry(B))
    with torch.set_grad_enabled(grad):
        _, logits, (q_halt, q_cont) = model.inner(carry, data)
    with torch.no_grad():
        ref_logits, ref_q = _naive_inner(model.inner, carry, data)
    return logits, q_halt, q_cont, ref_logits, ref_q


@pytest.mark.parametrize("grad", [False, True])
def test_plain_path_is_bitwise_the_plain_reference_ops(grad: bool) -> None:
    """The model computes the reference's ops exactly (the one path: CPU and CUDA, every dtype, compiled or not)."""
    logits, q_halt, q_cont, ref_logits, ref_q = _inner_vs_naive(grad)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(q_halt, ref_q[:, 0]) and torch.equal(q_cont, ref_q[:, 1])


def test_float32_cpu_results_are_deterministic() -> None:
    def run() -> list[torch.Tensor]:
        head = ACTLossHead(make(11)).train()
        torch.manual_seed(5)
        carry = head.initial_carry(batch(0))
        out = []
        for i in range(3):
            carry, loss, metrics, o, _ = head(carry, batch(i), return_keys=("logits",))
            loss.backward()
            out += [loss.detach(), o["logits"], head.model.inner.L_level.layers[0].mlp.down_proj.weight.grad.clone()]
        return out

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# --- the ACT wrapper ----------------------------------------------------------------------------------------
def test_carry_semantics_halted_rows_reset_others_keep_state_and_data() -> None:
    model = make(2, halt_exploration_prob=0.0).train()
    b1, b2 = batch(1), batch(2)
    carry = model.initial_carry(b1)
    assert carry.halted.all()
    carry, _ = model(carry, b1)
    assert torch.equal(carry.steps, torch.ones(B, dtype=torch.int32))
    assert all(torch.equal(carry.current_data[k], b1[k]) for k in b1)

    carry.halted = torch.tensor([True, False, True, False])
    old = carry_state_dict(carry)
    old = {k: v.clone() for k, v in old.items()}
    reset = model.inner.reset_carry(carry.halted, carry.inner_carry)
    new, out = model(carry, b2)
    keep, fresh = [1, 3], [0, 2]
    assert torch.equal(new.steps, torch.tensor([1, 2, 1, 2], dtype=torch.int32))
    for k in b1:
        assert torch.equal(new.current_data[k][fresh], b2[k][fresh])
        assert torch.equal(new.current_data[k][keep], b1[k][keep])  # fed rows in kept slots are discarded
    assert torch.equal(reset.z_H[fresh], model.inner.H_init.expand(2, S + 1, 32))
    assert torch.equal(reset.z_L[fresh], model.inner.L_init.expand(2, S + 1, 32))
    assert torch.equal(reset.z_H[keep], old["z_H"][keep]) and torch.equal(reset.z_L[keep], old["z_L"][keep])
    # the kept rows continue exactly what a single-purpose rerun from their old state computes
    mixed = {k: torch.where(carry.halted.view(-1, *[1] * (b1[k].ndim - 1)), b2[k], b1[k]) for k in b1}
    with torch.no_grad():
        _, logits, _ = model.inner(reset, mixed)
    assert torch.allclose(out["logits"], logits, atol=1e-6)


def test_labels_come_from_the_carry_not_the_fed_batch() -> None:
    head = ACTLossHead(make(4, halt_exploration_prob=0.0)).train()
    b1, b2 = batch(1), batch(2)
    carry, *_ = head(head.initial_carry(b1), b1)
    carry.halted = torch.zeros(B, dtype=torch.bool)  # nobody halted: keep b1 everywhere
    _, loss_a, *_ = head(carry, b2)
    _, loss_b, *_ = head(carry, {**b2, "labels": torch.full_like(b2["labels"], -100)})
    assert torch.equal(loss_a, loss_b)


def _force_q(model, halt: float, cont: float) -> None:
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([halt, cont]))


def test_halting_by_q_strict_and_by_max_steps() -> None:
    model = make(5, halt_exploration_prob=0.0).train()
    _force_q(model, 1.0, -1.0)  # q_halt > q_continue → halt after one segment
    carry, _ = model(model.initial_carry(batch(0)), batch(0))
    assert carry.halted.all()
    _force_q(model, 0.5, 0.5)  # equal: strict '>' does not halt
    carry, _ = model(model.initial_carry(batch(0)), batch(0))
    assert not carry.halted.any()
    for _ in range(3):
        carry, _ = model(carry, batch(0))
    assert carry.halted.all() and torch.equal(carry.steps, torch.full((B,), 4, dtype=torch.int32))


def test_exploration_only_delays_halting() -> None:
    model = make(5, halt_exploration_prob=1.0).train()
    _force_q(model, 1.0, -1.0)
    carry, _ = model(model.initial_carry(batch(0)), batch(0))
    assert not carry.halted.any()  # every row drew a minimum of 2..4 segments


def test_two_exploration_draws_on_every_train_call() -> None:
    model = make(6, halt_exploration_prob=0.0).train()
    carry = model.initial_carry(batch(0))
    torch.manual_seed(123)
    model(carry, batch(0))
    after_model = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(B)
    torch.randint(2, 5, (B,), dtype=torch.int32)
    assert torch.equal(after_model, torch.rand(3))


def test_q_target_is_the_next_segment_from_the_new_carry() -> None:
    model = make(8).train()
    _force_q(model, -1.0, -1.0)
    b = batch(0)
    carry, out = model(model.initial_carry(b), b)
    with torch.no_grad():
        _, _, (nh, nc) = model.inner(carry.inner_carry, carry.current_data)
    assert torch.equal(out["target_q_continue"], torch.sigmoid(torch.maximum(nh, nc)))


def test_eval_runs_exactly_halt_max_steps_segments() -> None:
    head = ACTLossHead(make(9)).eval()
    _force_q(head.model, 5.0, -5.0)  # would halt at once in training
    b = batch(0)
    carry, calls = head.initial_carry(b), 0
    with torch.inference_mode():
        while True:
            carry, _, metrics, _, all_halted = head(carry, b)
            calls += 1
            if all_halted:
                break
    assert calls == 4 and int(metrics["count"]) == B and int(metrics["steps"]) == 4 * B


def test_carry_state_dict_round_trip_resumes_exactly() -> None:
    model = make(10).train()
    carry, _ = model(model.initial_carry(batch(0)), batch(0))
    restored = carry_from_state_dict({k: v.clone() for k, v in carry_state_dict(carry).items()})
    torch.manual_seed(1)
    a, out_a = model(carry, batch(1))
    torch.manual_seed(1)
    b, out_b = model(restored, batch(1))
    assert torch.equal(out_a["logits"], out_b["logits"]) and torch.equal(a.halted, b.halted)


def test_train_batch_must_fill_the_puzzle_embedding_buffer() -> None:
    model = make(0).train()
    small = {k: v[:2] for k, v in batch(0).items()}
    with pytest.raises(ValueError, match="batch_size=4"):
        model(model.initial_carry(small), small)
    model.eval()  # eval reads the table: any batch size
    model(model.initial_carry(small), small)


def test_learned_positions_and_no_puzzle_embedding_variants_run() -> None:
    for kw in (dict(pos_encodings="learned"), dict(puzzle_emb_ndim=0)):
        head = ACTLossHead(make(0, **kw)).train()
        carry, loss, *_ = head(head.initial_carry(batch(0)), batch(0))
        loss.backward()
        assert torch.isfinite(loss) and carry.inner_carry.z_H.shape[1] == S + (
            1 if kw.get("puzzle_emb_ndim", 32) else 0
        )


def test_bfloat16_forward_dtype_path() -> None:
    """The CUDA default compute dtype: fp32 master weights cast at use, norms/RoPE in fp32, Q logits fp32."""
    m32, m16 = make(12).train(), make(12, forward_dtype="bfloat16").train()
    assert m16.inner.H_init.dtype == torch.bfloat16 and m16.inner.lm_head.weight.dtype == torch.float32
    m16.load_state_dict(m32.state_dict())
    head = ACTLossHead(m16)
    carry, loss, metrics, out, _ = head(head.initial_carry(batch(0)), batch(0), return_keys=("logits",))
    loss.backward()
    assert out["logits"].dtype == torch.bfloat16 and carry.inner_carry.z_H.dtype == torch.bfloat16
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    assert m16.inner.L_level.layers[0].self_attn.qkv_proj.weight.grad.dtype == torch.float32
    with torch.no_grad():
        _, ref, *_ = ACTLossHead(m32)(ACTLossHead(m32).initial_carry(batch(0)), batch(0))
    assert loss.item() == pytest.approx(ref.item(), rel=0.05)


def test_puzzle_embedding_grad_buffer_stays_a_leaf_after_module_moves() -> None:
    emb = make(0).inner.puzzle_emb
    emb._apply(lambda t: t.clone())  # what .to(device) does to buffers: outside no_grad
    assert emb.local_weights.is_leaf and emb.local_weights.requires_grad
    emb.train()(torch.zeros(B, dtype=torch.int32)).sum().backward()
    assert torch.equal(emb.local_weights.grad, torch.ones(B, 32))
    assert emb.local_ids.dtype == torch.int32 and "local_weights" not in emb.state_dict()


def test_resolve_forward_dtype() -> None:
    from hrm.model.layers import resolve_forward_dtype

    assert resolve_forward_dtype(None, "cpu") == torch.float32
    assert resolve_forward_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="forward_dtype"):
        resolve_forward_dtype("int8", "cpu")
    assert make(0, forward_dtype="auto").inner.forward_dtype == torch.float32  # built on the CPU
