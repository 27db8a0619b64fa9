"""Training memory known before launch: the torch-free closed form (hrm.run.memory, what the picker and the
trainer use) against the model's own saved tensors and peak, measured on meta tensors (hrm.model.memory),
and the paper presets against the figures of issue 16."""

from __future__ import annotations

import pytest

from hrm.model.config import HRMConfig
from hrm.run import memory as R
from hrm.run.config import describe, load_preset, model_shape

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GB = 1e9


def _hrm(preset: str, dtype: str, overrides: list[str] | None = None) -> tuple[HRMConfig, int]:
    """The model the trainer builds for a preset (per-rank batch), in `dtype`."""
    cfg = load_preset(preset, overrides)
    shape = model_shape(cfg)
    batch = cfg.train.global_batch_size // cfg.train.gpus
    fields = {**cfg.model.hrm_fields(), "forward_dtype": dtype}
    return HRMConfig.from_dict(fields, batch_size=batch, seq_len=shape.seq_len, vocab_size=shape.vocab_size), batch


@pytest.mark.parametrize("preset", ["tiny", "sudoku-cpu", "maze-cpu", "sudoku-think-cpu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_closed_form_matches_measured_saved_tensors_and_peak(preset: str, dtype: str) -> None:
    from hrm.model.memory import measure_step

    mcfg, batch = _hrm(preset, dtype)
    closed = R.estimate(mcfg, dtype, device="cpu")
    one, two = measure_step(mcfg, 1), measure_step(mcfg, 2)
    # autograd's saved tensors grow exactly by one example's worth per row
    assert two.saved - one.saved == pytest.approx(closed.saved_per_example, rel=0.005)
    measured = measure_step(mcfg, batch)
    total = measured.state + measured.carry_in + measured.peak
    # the closed form may round up (gradients counted at the peak), never down
    assert total <= closed.total(batch) <= 1.15 * total


@pytest.mark.slow  # meta tensors, but the paper model's ops still take ~30 s of Python on 2 busy cores
@pytest.mark.parametrize("preset, tokens", [("sudoku-extreme-1k", 82), ("maze-hard-1k", 901)])
def test_paper_shapes_measured(preset: str, tokens: int) -> None:
    from hrm.model.memory import estimate

    mcfg, _ = _hrm(preset, "bfloat16")
    measured = estimate(mcfg)
    closed = R.estimate(mcfg, "bfloat16", device="cpu")
    # issue 16: ~211 KB/token saved over the 8 grad-carrying blocks, ~237 KB/token in all (with the
    # no-grad temporaries and the carry): ~19 MB per Sudoku example, ~214 MB per maze example
    assert measured.saved_per_example / tokens == pytest.approx(211e3, rel=0.25)
    assert measured.per_example == pytest.approx({82: 19e6, 901: 214e6}[tokens], rel=0.25)
    assert closed.saved_per_example == pytest.approx(measured.saved_per_example, rel=0.005)
    assert closed.per_example == pytest.approx(measured.per_example, rel=0.05)


@pytest.mark.parametrize(
    "preset, overrides, issue_gb",
    [
        ("sudoku-extreme-1k", ["train.gpus=1"], 16),  # 768 on one GPU
        ("maze-hard-1k", ["train.gpus=1"], 165),  # 768 on one GPU: does not fit even an H200
        ("maze-hard-1k", ["train.gpus=1", "train.global_batch_size=256"], 55),
        ("maze-hard-1k", ["train.gpus=8"], 21),  # the reference: 8 GPUs × 96
    ],
)
def test_picker_memory_of_paper_presets_within_a_quarter_of_the_issue(
    preset: str, overrides: list[str], issue_gb: float
) -> None:
    info = describe(load_preset(preset, overrides))
    assert info["compute_dtype"] == "bfloat16" and info["hidden_size"] == 512 and info["layers"] == 8
    assert info["mem_per_rank"] / GB == pytest.approx(issue_gb, rel=0.25)


def test_largest_batch_fits_and_the_next_does_not() -> None:
    est = R.estimate(model_shape(load_preset("maze-hard-1k")), "bfloat16")
    card = 80 * 2**30
    b = est.largest_batch(card)
    assert est.total(b) <= R.FIT_MARGIN * card < est.total(b + 1)
    assert b == pytest.approx(330, rel=0.15)  # issue 16: one 80 GB GPU tops out near 320–340 maze examples
    assert R.estimate(model_shape(load_preset("tiny")), "float32").largest_batch(1000) == 0


def test_float16_has_no_memory_model() -> None:
    with pytest.raises(ValueError, match="no memory model"):
        R.estimate(model_shape(load_preset("tiny")), "float16")


def test_picker_verdict_uses_the_gpu_a_run_would_get(monkeypatch: pytest.MonkeyPatch) -> None:
    """The picker's memory column against the card NVML reports for CUDA_VISIBLE_DEVICES (here the second,
    a 40 GB one): maze 8×96 fits an 80 GB card, not this one."""
    from test_sysmon import H100, FakeNVML

    import hrm.run.sysmon as sysmon
    from hrm_tui import costs

    small = dict(H100, name="NVIDIA A100 40GB", uuid="GPU-b0000000-1111-2222-3333-444444444444", total=40 << 30)
    monkeypatch.setattr(sysmon, "_load_pynvml", lambda: FakeNVML([H100, small]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    costs.local_gpu_memory.cache_clear()
    try:
        assert costs.local_gpu_memory() == 40 << 30
        info = describe(load_preset("maze-hard-1k"))  # 8 GPUs × 96: ≈21 GB each
        assert costs.estimate(info, costs.local_gpu_memory())[0].endswith("✓")
        big = describe(load_preset("maze-hard-1k-1gpu"))  # 256 on one GPU: ≈53 GB
        assert costs.estimate(big, costs.local_gpu_memory())[0].endswith("✗ > 40.0 GiB")
        assert costs.estimate(big, 80 << 30)[0].endswith("✓")
    finally:
        costs.local_gpu_memory.cache_clear()
