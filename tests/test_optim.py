"""AdamATan2, the sparse SignSGD (single and 2-rank gloo), the lr schedule and OptimizerSet."""

from __future__ import annotations

import datetime
import io
import logging
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hrm.model.sparse_embedding import CastedSparseEmbedding
from hrm.optim.adam_atan2 import AdamATan2
from hrm.optim.container import OptimizerSet, build_optimizer_set, group_parameters
from hrm.optim.schedule import cosine_schedule_with_warmup_lr
from hrm.optim.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed


# ---------------------------------------------------------------- helpers
def SparseEmb(num_ids: int, dim: int, batch: int, seed: int = 0) -> nn.Module:
    """The model's CastedSparseEmbedding (train mode) with a seeded table."""
    emb = CastedSparseEmbedding(num_ids, dim, batch, init_std=0.0, cast_to=torch.float32)
    emb.weights.copy_(torch.randn(num_ids, dim, generator=torch.Generator().manual_seed(seed)))
    return emb


class Tiny(nn.Module):
    def __init__(self, batch: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.puzzle_emb = SparseEmb(6, 3, batch)
        self.lin = nn.Linear(3, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lin(self.puzzle_emb(ids)).pow(2).sum()


def torch_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------- AdamATan2
def loop_adam_atan2(theta, grads, lrs, b1, b2, wd):
    """Per-element AdamATan2 in Python floats, straight from HRM-SPEC §3."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        for i in range(len(theta)):
            theta[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            denom = math.sqrt(v[i]) / math.sqrt(1 - b2**t)
            theta[i] -= lr / (1 - b1**t) * math.atan2(m[i], denom)
    return theta


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_adam_atan2_matches_elementwise_loop(dtype, tol):
    gen = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (5,)]
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    start = [p.detach().clone() for p in params]
    steps, lrs = 5, [1e-2, 3e-2, 5e-2, 2e-2, 1e-1]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(steps)]
    grads[2][0][0, 0] = 0.0  # a zero gradient with m != 0 still moves (no ε, atan2(m, 0) = ±π/2)
    opt = AdamATan2(params, lr=0.0, betas=(0.9, 0.95), weight_decay=0.1)
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[k]
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        opt.step()
    for j, p in enumerate(params):
        expect = loop_adam_atan2(
            start[j].flatten().tolist(), [grads[k][j].flatten().tolist() for k in range(steps)], lrs, 0.9, 0.95, 0.1
        )
        got = p.detach().flatten().tolist()
        assert max(abs(a - b) for a, b in zip(got, expect)) < tol
        assert p.detach().flatten().tolist() != start[j].flatten().tolist()
    state = opt.state[params[0]]
    assert state["step"].dtype == torch.float32 and state["step"].ndim == 0 and float(state["step"]) == steps
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}


def test_adam_atan2_per_step_bound():
    gen = torch.Generator().manual_seed(2)
    p = nn.Parameter(torch.randn(2000, generator=gen, dtype=torch.float64))
    lr, wd, b1 = 0.05, 0.1, 0.9
    opt = AdamATan2([p], lr=lr, betas=(b1, 0.95), weight_decay=wd)
    for t in range(1, 8):
        before = p.detach().clone()
        # huge, tiny and sign-flipping gradients: Adam without ε could blow up on the tiny ones
        scale = 10.0 ** torch.randint(-30, 6, (2000,), generator=gen)
        p.grad = torch.randn(2000, generator=gen, dtype=torch.float64) * scale
        opt.step()
        step_part = (p.detach() - before * (1 - lr * wd)).abs()
        assert float(step_part.max()) <= lr * math.pi / 2 / (1 - b1**t) * (1 + 1e-12)
        assert float(step_part.min()) > 0.0


def test_adam_atan2_is_gradient_scale_invariant():
    # no ε: scaling every gradient by 1e-20 gives the same trajectory (Adam with ε=1e-8 would stall)
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(50, generator=gen, dtype=torch.float64) for _ in range(4)]
    start = torch.randn(50, generator=gen, dtype=torch.float64)
    finals = []
    for scale in (1.0, 1e-20):
        p = nn.Parameter(start.clone())
        opt = AdamATan2([p], lr=0.01)
        for g in grads:
            p.grad = g * scale
            opt.step()
        finals.append(p.detach())
    assert not torch.equal(finals[0], start)
    assert torch.allclose(finals[0], finals[1], rtol=1e-12, atol=0)


def test_adam_atan2_cpu_sliced_path_equals_foreach_path(monkeypatch):
    import hrm.optim.adam_atan2 as mod

    monkeypatch.setattr(mod, "_CPU_CHUNK", 7)  # slices that cut tensors at odd places
    gen = torch.Generator().manual_seed(5)
    shapes = [(5, 6), (13,), (1,)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(3)]
    results = []
    for force_foreach in (False, True):
        if force_foreach:
            monkeypatch.setattr(mod, "_update_cpu", mod._update_foreach)
        params = [nn.Parameter(x.clone()) for x in start]
        params.append(nn.Parameter(torch.randn(4, 6, generator=torch.Generator().manual_seed(9)).t()))  # non-contiguous
        opt = AdamATan2(params, lr=0.03)
        for k in range(3):
            for p, g in zip(params, grads[k] + [torch.ones(6, 4)]):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_adam_atan2_skips_params_without_grad_and_rejects_bad_args():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = AdamATan2([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(3))
    assert not torch.equal(a.detach(), torch.ones(3))
    with pytest.raises(ValueError, match="betas"):
        AdamATan2([a], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        AdamATan2([a], lr=-1.0)


def test_adam_atan2_state_dict_roundtrip_continues_identically():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(4, 3, generator=gen) for _ in range(6)]
    p1 = nn.Parameter(torch.randn(4, 3, generator=gen))
    opt1 = AdamATan2([p1], lr=0.01)
    for g in grads[:3]:
        p1.grad = g.clone()
        opt1.step()
    p2 = nn.Parameter(p1.detach().clone())
    opt2 = AdamATan2([p2], lr=0.5, betas=(0.5, 0.5), weight_decay=0.0)  # overwritten by the load
    opt2.load_state_dict(torch_roundtrip(opt1.state_dict()))
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95) and opt2.state[p2]["step"].device.type == "cpu"
    for g in grads[3:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        opt1.step()
        opt2.step()
    assert torch.equal(p1.detach(), p2.detach())
    assert torch.equal(opt1.state[p1]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])


# ---------------------------------------------------------------- SignSGD
def test_sign_sgd_touches_only_batch_rows_and_sums_duplicates():
    emb = SparseEmb(num_ids=8, dim=2, batch=4)
    before = emb.weights.clone()
    opt = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1, weight_decay=0.5)
    emb(torch.tensor([5, 2, 5, 0], dtype=torch.int32))
    # row 5 appears twice: (+1, -2) and (-3, +2) sum to (-2, 0) → sign (-1, 0). Signing each row
    # first would give (0, 0) instead.
    emb.local_weights.grad = torch.tensor([[1.0, -2.0], [0.5, -0.5], [-3.0, 2.0], [-1.0, 4.0]])
    opt.step()
    decay = 1 - 0.1 * 0.5
    expect = before.clone()
    expect[5] = before[5] * decay - 0.1 * torch.tensor([-1.0, 0.0])
    expect[2] = before[2] * decay - 0.1 * torch.tensor([1.0, -1.0])
    expect[0] = before[0] * decay - 0.1 * torch.tensor([-1.0, 1.0])
    assert torch.allclose(emb.weights, expect, rtol=0, atol=1e-7)
    untouched = [1, 3, 4, 6, 7]
    assert torch.equal(emb.weights[untouched], before[untouched])  # lazy: no decay outside the batch


def test_sign_sgd_without_grad_is_a_no_op_and_needs_three_buffers():
    emb = SparseEmb(num_ids=4, dim=2, batch=2)
    before = emb.weights.clone()
    CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1).step()
    assert torch.equal(emb.weights, before)
    with pytest.raises(ValueError, match="3 buffers"):
        CastedSparseEmbeddingSignSGD_Distributed([emb.weights], world_size=1).step()


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )  # a lost peer fails, never hangs
    try:
        ids, grads = _gather_case()
        per = ids.shape[0] // world
        emb = SparseEmb(num_ids=10, dim=3, batch=per, seed=7)
        opt = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=world, lr=0.05, weight_decay=0.2)
        emb(ids[rank * per : (rank + 1) * per])
        emb.local_weights.grad = grads[rank * per : (rank + 1) * per].clone()
        opt.step()
        torch.save(emb.weights.clone(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _gather_case() -> tuple[torch.Tensor, torch.Tensor]:
    # id 3 is on both ranks with opposite-leaning grads: only the gathered sum gives the right sign
    ids = torch.tensor([3, 1, 3, 8, 3, 0, 9, 1], dtype=torch.int32)
    grads = torch.randn(8, 3, generator=torch.Generator().manual_seed(11))
    grads[4] = -3.0 * grads[0]
    return ids, grads


def test_sign_sgd_two_rank_gloo_equals_single_process(tmp_path):
    ids, grads = _gather_case()
    single = SparseEmb(num_ids=10, dim=3, batch=8, seed=7)
    opt = CastedSparseEmbeddingSignSGD_Distributed(single.buffers(), world_size=1, lr=0.05, weight_decay=0.2)
    single(ids)
    single.local_weights.grad = grads.clone()
    opt.step()

    # fork: the children need no fresh interpreter (a spawn re-imports torch, seconds on 2 cores)
    mp.start_processes(
        _gloo_worker, args=(2, str(tmp_path / "pg-init"), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got, single.weights), f"rank {rank} differs from the single-process update"
    # and the rank-local update alone would have been different (the gather matters)
    local = SparseEmb(num_ids=10, dim=3, batch=4, seed=7)
    lopt = CastedSparseEmbeddingSignSGD_Distributed(local.buffers(), world_size=1, lr=0.05, weight_decay=0.2)
    local(ids[:4])
    local.local_weights.grad = grads[:4].clone()
    lopt.step()
    assert not torch.equal(local.weights, single.weights)


def test_sign_sgd_load_state_dict_keeps_this_process_world_size():
    emb = SparseEmb(4, 2, 2)
    two = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=2, lr=0.1)
    one = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1)
    one.load_state_dict(torch_roundtrip(two.state_dict()))
    assert one.param_groups[0]["world_size"] == 1


# ---------------------------------------------------------------- schedule
def test_schedule_warmup_middle_end():
    f = lambda s, r=0.1: cosine_schedule_with_warmup_lr(s, 1e-3, 100, 1100, r)  # noqa: E731
    assert f(0) == 0.0
    assert f(50) == pytest.approx(0.5e-3, rel=1e-12)
    assert f(99) == pytest.approx(0.99e-3, rel=1e-12)
    assert f(100) == pytest.approx(1e-3, rel=1e-12)  # warmup done: cos(0) = 1
    assert f(600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-12)  # halfway through the cosine
    assert f(1100) == pytest.approx(1e-4, rel=1e-12)  # end: base·min_ratio
    assert f(5000) == pytest.approx(1e-4, rel=1e-12)  # past the end it stays there
    # the reference default r = 1.0: constant after warmup
    assert {f(s, 1.0) for s in (100, 400, 1100)} == {1e-3}
    assert all(f(s) >= f(s + 1) for s in range(100, 1100))


# ---------------------------------------------------------------- OptimizerSet
def _make_set(model: nn.Module) -> OptimizerSet:
    return build_optimizer_set(
        model,
        lr=1e-2,
        beta1=0.9,
        beta2=0.95,
        weight_decay=0.1,
        puzzle_emb_lr=1e-1,
        puzzle_emb_weight_decay=0.1,
        warmup_steps=2,
        total_steps=10,
        min_ratio=0.5,
    )


def test_grouping_order_and_per_optimizer_lr(caplog):
    model = Tiny()
    with caplog.at_level(logging.INFO, logger="hrm.optim.container"):
        groups = group_parameters(model)
        opts = _make_set(model)
    assert "SignSGD <- puzzle_emb.weights (6, 3)" in caplog.text and "2 tensors, 8 parameters" in caplog.text
    assert groups.sparse_module == "puzzle_emb"
    assert [type(o).__name__ for o in opts] == ["CastedSparseEmbeddingSignSGD_Distributed", "AdamATan2"]
    adam_ids = {id(p) for p in opts.optimizers[1].param_groups[0]["params"]}
    assert adam_ids == {id(p) for p in model.lin.parameters()}  # buffers never reach Adam
    assert opts.set_lr(1) == [0.05, 0.005] and opts.lr == 0.005
    assert opts.optimizers[0].param_groups[0]["lr"] == 0.05


def test_optimizer_set_step_updates_both_and_zeroes_grads():
    model = Tiny()
    opts = _make_set(model)
    emb_before, lin_before = model.puzzle_emb.weights.clone(), model.lin.weight.detach().clone()
    model(torch.tensor([1, 4, 1, 2], dtype=torch.int32)).backward()
    lr = opts.step(1)
    assert lr == pytest.approx(0.005)
    changed = (model.puzzle_emb.weights != emb_before).any(dim=1).tolist()
    assert changed == [False, True, True, False, True, False]
    assert not torch.equal(model.lin.weight.detach(), lin_before)
    assert model.lin.weight.grad is None and model.puzzle_emb.local_weights.grad is None


def test_optimizer_set_state_dict_roundtrip_gives_identical_continuation():
    batches = [torch.tensor(b, dtype=torch.int32) for b in ([0, 1, 2, 3], [5, 5, 1, 0], [2, 4, 4, 3], [1, 1, 1, 1])]
    a = Tiny()
    sa = _make_set(a)
    for step, ids in enumerate(batches[:2], start=1):
        a(ids).backward()
        sa.step(step)
    b = Tiny()
    b.load_state_dict(a.state_dict())
    sb = _make_set(b)
    sb.load_state_dict(torch_roundtrip(sa.state_dict()))
    assert sb.lr == sa.lr
    for step, ids in enumerate(batches[2:], start=3):
        for model, opts in ((a, sa), (b, sb)):
            model(ids).backward()
            opts.step(step)
    assert torch.equal(a.puzzle_emb.weights, b.puzzle_emb.weights)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_optimizer_set_refuses_state_of_another_layout():
    with_emb = _make_set(Tiny())
    dense_only = _make_set(nn.Linear(3, 2))
    assert dense_only.names == ["adam_atan2"]
    with pytest.raises(ValueError, match="puzzle_emb_ndim"):
        dense_only.load_state_dict(with_emb.state_dict())


def test_optimizer_set_on_the_real_hrm_model_steps_like_the_reference():
    from hrm.model.config import HRMConfig
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
    from hrm.model.losses import ACTLossHead

    torch.manual_seed(0)
    cfg = HRMConfig(
        batch_size=4,
        seq_len=8,
        vocab_size=6,
        puzzle_emb_ndim=16,
        num_puzzle_identifiers=5,
        H_cycles=1,
        L_cycles=1,
        H_layers=1,
        L_layers=1,
        hidden_size=16,
        num_heads=2,
        halt_max_steps=2,
    )
    head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg))
    head.train()
    opts = build_optimizer_set(
        head,
        lr=1e-3,
        beta1=0.9,
        beta2=0.95,
        weight_decay=0.1,
        puzzle_emb_lr=1e-2,
        puzzle_emb_weight_decay=0.1,
        warmup_steps=1,
        total_steps=10,
    )
    assert opts.names == ["puzzle_emb_sign_sgd", "adam_atan2"]
    adam_params = opts.optimizers[1].param_groups[0]["params"]
    assert sum(p.numel() for p in adam_params) == sum(p.numel() for p in head.parameters())
    gen = torch.Generator().manual_seed(1)
    batch = {
        "inputs": torch.randint(1, 6, (4, 8), generator=gen, dtype=torch.int32),
        "labels": torch.randint(1, 6, (4, 8), generator=gen, dtype=torch.int32),
        "puzzle_identifiers": torch.tensor([1, 3, 3, 1], dtype=torch.int32),
    }
    table = head.model.inner.puzzle_emb.weights
    before_table, before = table.clone(), [p.detach().clone() for p in adam_params]
    carry = head.initial_carry(batch)
    carry, loss, _metrics, _out, _halted = head(carry, batch)
    (loss / 4).backward()
    had_grad = [p.grad is not None for p in adam_params]
    assert sum(had_grad) >= len(adam_params) - 2
    assert opts.step(1) == pytest.approx(1e-3)
    rows_changed = (table != before_table).any(dim=1).tolist()
    assert rows_changed == [False, True, False, True, False]  # ids 1 and 3 only
    for p, b, g in zip(adam_params, before, had_grad):
        assert torch.equal(p.detach(), b) != g  # every parameter with a gradient moved, no other did
    assert all(p.grad is None for p in adam_params) and head.model.inner.puzzle_emb.local_weights.grad is None


def test_adam_atan2_accepts_a_step_counter_of_another_dtype():
    p1, p2 = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    o1, o2 = AdamATan2([p1], lr=0.1), AdamATan2([p2], lr=0.1)
    for p, o in ((p1, o1), (p2, o2)):
        p.grad = torch.tensor([1.0, -2.0, 0.5])
        o.step()
    sd = o2.state_dict()
    sd["state"][0]["step"] = torch.tensor(1, dtype=torch.int64)  # as some writers store it
    o2.load_state_dict(sd)
    for p, o in ((p1, o1), (p2, o2)):
        p.grad = torch.tensor([0.3, 0.3, -1.0])
        o.step()
    assert torch.equal(p1.detach(), p2.detach())
    assert o2.state[p2]["step"].dtype == torch.float32 and float(o2.state[p2]["step"]) == 2.0
