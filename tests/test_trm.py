"""TRM beside HRM: sizes equal to the official code's, which passes carry gradient, halting on q_halt > 0."""

from __future__ import annotations

import pytest
import torch

from hrm.model.config import HRMConfig
from hrm.model.trm import TinyRecursiveReasoningModel_ACTV1, TRMConfig


def _find_multiple(a: int, b: int) -> int:
    return (-(a // -b)) * b


def official_parameter_count(
    *,
    hidden: int,
    heads: int,
    expansion: float,
    L_layers: int,
    vocab: int,
    seq_len: int,
    puzzle_emb_len: int,
    mlp_t: bool,
    learned_pos: bool = False,
) -> int:
    """Counted by hand from the shapes the official code builds (SamsungSAILMontreal/TinyRecursiveModels,
    models/recursive_reasoning/trm.py and models/layers.py; puzzle embeddings are buffers there):
    Attention: qkv_proj hidden→(heads + 2·kv_heads)·head_dim, o_proj heads·head_dim→hidden, no biases;
    SwiGLU(h): gate_up h→2·inter, down inter→h, inter = find_multiple(round(expansion·h·2/3), 256);
    with mlp_t the attention is replaced by SwiGLU over L = seq_len + puzzle_emb_len positions;
    embed_tokens vocab×hidden, lm_head hidden→vocab (no bias), q_head hidden→2 with bias."""
    head_dim = hidden // heads

    def swiglu(h: int) -> int:
        inter = _find_multiple(round(expansion * h * 2 / 3), 256)
        return h * 2 * inter + inter * h

    mixer = swiglu(seq_len + puzzle_emb_len) if mlp_t else hidden * 3 * heads * head_dim + heads * head_dim * hidden
    block = mixer + swiglu(hidden)
    pos = (seq_len + puzzle_emb_len) * hidden if learned_pos else 0
    return L_layers * block + vocab * hidden + hidden * vocab + hidden * 2 + 2 + pos


def _model(**kw: object) -> TinyRecursiveReasoningModel_ACTV1:
    base: dict[str, object] = dict(batch_size=2, seq_len=81, vocab_size=11, puzzle_emb_ndim=512, hidden_size=512)
    base.update(kw)
    with torch.device("meta"):
        return TinyRecursiveReasoningModel_ACTV1(TRMConfig(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kw", "official"),
    [
        # Sudoku-Extreme, the README's two recipes: 5M (mlp_t) and 7M (attention) in the paper
        ("sudoku mlp_t", dict(mlp_t=True, pos_encodings="none", L_cycles=6), dict(seq_len=81, vocab=11, mlp_t=True)),
        ("sudoku attention", dict(L_cycles=6), dict(seq_len=81, vocab=11, mlp_t=False)),
        # Maze-Hard 30×30: attention, L_cycles 4; vocab 6
        ("maze attention", dict(seq_len=900, vocab_size=6, L_cycles=4), dict(seq_len=900, vocab=6, mlp_t=False)),
    ],
)
def test_parameter_counts_equal_the_official_codes(name: str, kw: dict, official: dict) -> None:
    model = _model(**kw)
    ours = sum(p.numel() for p in model.parameters())
    theirs = official_parameter_count(hidden=512, heads=8, expansion=4, L_layers=2, puzzle_emb_len=16, **official)
    assert ours == theirs, name
    expected_millions = {"sudoku mlp_t": 5.0, "sudoku attention": 6.8, "maze attention": 6.8}[name]
    assert abs(ours / 1e6 - expected_millions) < 0.1, (name, ours)


def test_state_dict_names_are_the_official_ones() -> None:
    names = set(_model(mlp_t=True, pos_encodings="none").state_dict())
    for key in (
        "inner.embed_tokens.embedding_weight",
        "inner.lm_head.weight",
        "inner.q_head.weight",
        "inner.q_head.bias",
        "inner.puzzle_emb.weights",
        "inner.L_level.layers.0.mlp_t.gate_up_proj.weight",
        "inner.L_level.layers.1.mlp.down_proj.weight",
        "inner.H_init",
        "inner.L_init",
    ):
        assert key in names, key
    assert not any(".H_level." in k for k in names)
    attn = set(_model().state_dict())
    assert "inner.L_level.layers.0.self_attn.qkv_proj.weight" in attn


def _tiny(**kw: object) -> tuple[TinyRecursiveReasoningModel_ACTV1, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = dict(
        batch_size=4,
        seq_len=16,
        vocab_size=6,
        puzzle_emb_ndim=32,
        hidden_size=32,
        num_heads=2,
        H_cycles=2,
        L_cycles=2,
        L_layers=1,
        puzzle_emb_len=2,
        halt_max_steps=4,
    )
    cfg.update(kw)
    model = TinyRecursiveReasoningModel_ACTV1(TRMConfig(**cfg))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    batch = {
        "inputs": torch.randint(1, 6, (4, 16), generator=g),
        "labels": torch.randint(1, 6, (4, 16), generator=g),
        "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
    }
    return model, batch


@pytest.mark.parametrize("mlp_t", [False, True])
def test_the_whole_last_cycle_carries_gradient_and_nothing_before_it(mlp_t: bool) -> None:
    kw = dict(mlp_t=True, pos_encodings="none") if mlp_t else {}
    model, batch = _tiny(**kw)
    model.train()
    carry = model.initial_carry(batch)
    counted: list[int] = []
    # Count the block applications that build autograd graph: L_cycles + 1 in the last cycle only.
    block = model.inner.L_level.layers[0]
    block.register_forward_hook(lambda m, i, o: counted.append(int(o.requires_grad)))
    carry, out = model(carry, batch)
    cfg = model.config
    assert counted == [0] * ((cfg.H_cycles - 1) * (cfg.L_cycles + 1)) + [1] * (cfg.L_cycles + 1)
    out["logits"].float().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "q_head" not in n), grads.keys()
    assert not carry.inner_carry.z_H.requires_grad and not carry.inner_carry.z_L.requires_grad


def test_training_halts_on_q_halt_above_zero_without_a_second_forward() -> None:
    model, batch = _tiny()
    model.train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([3.0, 10.0]))  # q_halt > 0 but < q_continue
    model.config.halt_exploration_prob = 0.0
    calls: list[int] = []
    model.inner.register_forward_hook(lambda m, i, o: calls.append(1))
    carry, out = model(model.initial_carry(batch), batch)
    assert carry.halted.all()  # HRM's rule (q_halt > q_continue) would keep going
    assert len(calls) == 1 and "target_q_continue" not in out


@pytest.mark.parametrize("arch", ["trm", "hrm", "hrm-no-continue"])
def test_the_eval_halting_histogram_uses_the_rule_training_halts_by(arch: str) -> None:
    """q_halt = 3 > 0 but < q_continue = 10: TRM (q_halt > 0) halts at segment 1, the reference HRM
    (q_halt > q_continue) never does, HRM given TRM's rule (no_ACT_continue) halts at 1; the eval histogram
    and every sample's halt_segment say the same, and samples of a model that does not train its continue
    output carry no q_continue."""
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
    from hrm.model.losses import ACTLossHead
    from hrm.train.evaluate import eval_batches

    model, batch = _tiny()
    if arch.startswith("hrm"):
        torch.manual_seed(0)
        fields = {
            k: v for k, v in vars(model.config).items() if k not in ("mlp_t", "puzzle_emb_len", "no_ACT_continue")
        }
        no_continue = arch == "hrm-no-continue"
        model = HierarchicalReasoningModel_ACTV1(HRMConfig(**{**fields, "H_layers": 1, "no_ACT_continue": no_continue}))  # type: ignore[arg-type]
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([3.0, 10.0]))
        model.inner.q_head.weight.zero_()
    head = ACTLossHead(model)
    tot = eval_batches(head, [("all", batch, 4)], torch.device("cpu"), 4, n_samples=2)
    want_segment = 4 if arch == "hrm" else 1
    assert tot.hist is not None and tot.hist.tolist() == [4.0 * (s == want_segment) for s in (1, 2, 3, 4)]
    assert [s["halt_segment"] for s in tot.samples] == [want_segment] * 2
    q_continue = {seg["q_continue"] for s in tot.samples for seg in s["segments"]}
    assert q_continue == ({10.0} if arch == "hrm" else {None})


def test_hrm_given_trms_halting_rule_halts_on_q_halt_above_zero_without_a_second_forward() -> None:
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1

    _, batch = _tiny()
    torch.manual_seed(0)
    cfg = HRMConfig(batch_size=4, seq_len=16, vocab_size=6, puzzle_emb_ndim=32, hidden_size=32, num_heads=2,
                    H_layers=1, L_layers=1, halt_max_steps=4, halt_exploration_prob=0.0, no_ACT_continue=True)  # fmt: skip
    model = HierarchicalReasoningModel_ACTV1(cfg)
    model.train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([3.0, 10.0]))  # q_halt > 0 but < q_continue
    calls: list[int] = []
    model.inner.register_forward_hook(lambda m, i, o: calls.append(1))
    carry, out = model(model.initial_carry(batch), batch)
    assert carry.halted.all() and len(calls) == 1 and "target_q_continue" not in out


def test_evaluation_runs_every_segment() -> None:
    model, batch = _tiny()
    model.eval()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
        carry = model.initial_carry(batch)
        for segment in range(1, model.config.halt_max_steps + 1):
            carry, _ = model(carry, batch)
            assert bool(carry.halted.all()) == (segment == model.config.halt_max_steps)


def test_same_seed_same_weights_and_outputs() -> None:
    a, batch = _tiny()
    b, _ = _tiny()
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    a.eval(), b.eval()
    with torch.no_grad():
        _, oa = a(a.initial_carry(batch), batch)
        _, ob = b(b.initial_carry(batch), batch)
    assert torch.equal(oa["logits"], ob["logits"])


def test_weight_ema_matches_the_official_update_and_restores_the_raw_weights() -> None:
    from hrm.train.ema import WeightEMA

    model, batch = _tiny()
    ema = WeightEMA(model, rate=0.9)
    official = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model.train()
        _, out = model(model.initial_carry(batch), batch)
        out["logits"].float().square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
        for n, p in model.named_parameters():  # the official EMAHelper.update, written out
            official[n] = (1.0 - 0.9) * p.detach() + 0.9 * official[n]
    assert all(torch.equal(ema.shadow[n], official[n]) for n in official)

    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.swapped_in(model):
        assert all(torch.equal(p, official[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, raw[n]) for n, p in model.named_parameters())

    again = WeightEMA(model, rate=0.9)
    again.load_state_dict(ema.state_dict())
    assert all(torch.equal(again.shadow[n], ema.shadow[n]) for n in official)
    with pytest.raises(ValueError, match="does not fit"):
        again.load_state_dict({})


def test_the_schema_keeps_trm_fields_to_trm() -> None:
    from hrm.run.config import ConfigError, load_preset

    cfg = load_preset("tiny", ["model.arch=trm", "model.H_layers=0", "model.mlp_t=true", "model.pos_encodings=none"])
    fields = cfg.model.hrm_fields()
    assert (fields["arch"], fields["puzzle_emb_len"], fields["no_ACT_continue"]) == ("trm", 16, True)
    for bad, word in (
        (["model.H_layers=0"], "H_layers"),
        (["model.puzzle_emb_len=4"], "arch=trm"),
        (["model.pos_encodings=none"], "needs model.mlp_t"),
    ):
        with pytest.raises(ConfigError, match=word):
            load_preset("tiny", bad)
    # the sequence MLP is offered to HRM too (its H and L modules both use it)
    hrm = load_preset("tiny", ["model.mlp_t=true", "model.pos_encodings=none"]).model.hrm_fields()
    assert hrm["arch"] == "hrm" and hrm["mlp_t"] is True and "puzzle_emb_len" not in hrm


def test_hrm_with_the_sequence_mlp_uses_it_in_both_modules_and_keeps_hrm_gradients() -> None:
    """HRM + mlp_t: every block of H and L is the sequence MLP (no attention weights); HRM's recursion is
    unchanged: only the last L and the H update build graph (its 1-step gradient), and training needs the
    Q-continue target's second forward."""
    from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
    from hrm.model.layers import SequenceMLPBlock

    torch.manual_seed(0)
    cfg = HRMConfig(batch_size=4, seq_len=16, vocab_size=6, puzzle_emb_ndim=32, hidden_size=32, num_heads=2,
                    H_cycles=2, L_cycles=2, H_layers=1, L_layers=1, halt_max_steps=3, mlp_t=True,
                    pos_encodings="none")  # fmt: skip
    model = HierarchicalReasoningModel_ACTV1(cfg)
    blocks = [*model.inner.H_level.layers, *model.inner.L_level.layers]
    assert blocks and all(isinstance(b, SequenceMLPBlock) for b in blocks)
    assert not any("attn" in n for n in model.state_dict())
    _, batch = _tiny()
    counted: list[str] = []
    model.inner.H_level.layers[0].register_forward_hook(lambda m, i, o: counted.append(f"H{int(o.requires_grad)}"))
    model.inner.L_level.layers[0].register_forward_hook(lambda m, i, o: counted.append(f"L{int(o.requires_grad)}"))
    model.train()
    _, out = model(model.initial_carry(batch), batch)
    # 2 H cycles × (2 L + 1 H), graph only on the last L and H; then the no-grad Q-target forward (6 more)
    assert counted[:6] == ["L0", "L0", "H0", "L0", "L1", "H1"] and counted[6:] == ["L0", "L0", "H0"] * 2
    assert "target_q_continue" in out


def test_a_checkpoint_in_the_official_layout_loads(tmp_path) -> None:
    """The official trainer saves `_orig_mod.model.inner.*` tensors beside an all_config.yaml whose arch
    names the TRM class; hrm-eval's loader builds a TRM from it and takes every tensor."""
    import yaml

    from hrm.model.factory import build_model
    from hrm.model.reference import load_any_checkpoint, load_model_weights

    model, _ = _tiny(mlp_t=True, pos_encodings="none")
    sd = {f"_orig_mod.model.{k}": v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "step_100")
    arch = dict(
        name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        loss=dict(name="losses@ACTLossHead", loss_type="stablemax_cross_entropy"),
        halt_exploration_prob=0.1,
        halt_max_steps=4,
        H_cycles=2,
        L_cycles=2,
        H_layers=0,
        L_layers=1,
        hidden_size=32,
        num_heads=2,
        expansion=4,
        puzzle_emb_ndim=32,
        pos_encodings="none",
        forward_dtype="bfloat16",
        mlp_t=True,
        puzzle_emb_len=2,
        no_ACT_continue=True,
    )
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(dict(arch=arch, global_batch_size=4)))
    ckpt = load_any_checkpoint(tmp_path / "step_100")
    cfg = ckpt.build_config(seq_len=16, forward_dtype="float32")
    loaded = build_model(cfg)
    load_model_weights(loaded, ckpt.state_dict)
    assert type(loaded).__name__ == "TinyRecursiveReasoningModel_ACTV1"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.slow  # forward and backward of the paper-sized TRM
@pytest.mark.parametrize("mlp_t", [False, True], ids=["attention", "mlp_t"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_memory_closed_form_matches_trm_saved_tensors_and_peak(mlp_t: bool, dtype: str) -> None:
    """The picker's torch-free estimate knows TRM: the whole last cycle saved for the backward, no
    Q-target forward, mlp_t's own tensors (measured on meta tensors with the model itself)."""
    from hrm.model.memory import measure_step
    from hrm.run import memory as R

    kw = dict(mlp_t=True, pos_encodings="none") if mlp_t else {}
    cfg = TRMConfig(
        batch_size=4,
        seq_len=81,
        vocab_size=11,
        puzzle_emb_ndim=64,
        hidden_size=64,
        num_heads=2,
        H_cycles=2,
        L_cycles=3,
        L_layers=2,
        halt_max_steps=8,
        forward_dtype=dtype,
        **kw,
    )
    closed = R.estimate(cfg, dtype, device="cpu")
    one, two = measure_step(cfg, 1), measure_step(cfg, 2)
    assert two.saved - one.saved == pytest.approx(closed.saved_per_example, rel=0.001)
    m = measure_step(cfg, 16)
    total = m.state + m.carry_in + m.peak
    assert total <= closed.total(16) <= 1.05 * total


def test_the_picker_describes_the_trm_presets() -> None:
    from hrm.run.config import describe, load_preset

    sudoku, maze = describe(load_preset("trm-sudoku-extreme-1k")), describe(load_preset("trm-maze-hard-1k"))
    assert sudoku["num_params"] == official_parameter_count(
        hidden=512, heads=8, expansion=4, L_layers=2, vocab=11, seq_len=81, puzzle_emb_len=16, mlp_t=True
    )
    assert maze["num_params"] == official_parameter_count(
        hidden=512, heads=8, expansion=4, L_layers=2, vocab=6, seq_len=900, puzzle_emb_len=16, mlp_t=False
    )
    # the official recipes ran on 48 GB L40S cards: one for Sudoku (768), four for mazes (4 × 192)
    assert sudoku["batch_per_rank"] == 768 and maze["batch_per_rank"] == 192
    assert sudoku["mem_per_rank"] < 48e9 and maze["mem_per_rank"] < 48e9
