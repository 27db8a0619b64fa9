"""Does the batch fit: the start check (refuse / warn naming the largest batch that fits), the batch search
of `hrm-train --find-batch`, and its real training steps (on CPU here; CUDA is measured by gpu-check)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from hrm.run.config import load_preset
from hrm.run.memory import FIT_MARGIN
from hrm.train import fit
from hrm.train.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GIB = 2**30


def _fake_card(monkeypatch: pytest.MonkeyPatch, total: int, name: str = "NVIDIA H100 80GB HBM3") -> torch.device:
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: SimpleNamespace(total_memory=total))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev: name)
    return torch.device("cuda", 0)


def test_start_refuses_a_batch_over_the_card_naming_the_largest_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_preset("maze-hard-1k", ["train.gpus=1", "model.forward_dtype=bfloat16"])
    dev = _fake_card(monkeypatch, 80 * GIB)
    mcfg = fit.model_for(cfg, torch.device("cpu"))
    assert mcfg.batch_size == 768 and mcfg.forward_dtype == "bfloat16"
    with pytest.raises(fit.MemoryPlanError) as err:
        fit.check_memory(cfg, mcfg, dev, world_size=1)
    msg = str(err.value)
    est = fit.plan(mcfg, dev)
    best = est.largest_batch(80 * GIB)
    assert f"largest per-GPU batch that fits is {best} " in msg and "NVIDIA H100" in msg
    assert est.total(best) <= FIT_MARGIN * 80 * GIB < est.total(best + 1)  # the named batch is the right one
    assert "per-GPU batch 768 needs ≈14" in msg and "hrm-train --find-batch" in msg
    # the preset asks for 8 GPUs but one process was started (its rank takes all 768): say how to start eight
    eight = load_preset("maze-hard-1k", ["model.forward_dtype=bfloat16"])
    with pytest.raises(fit.MemoryPlanError, match=r"train.gpus=8 GPUs .*torchrun --nproc_per_node=8"):
        fit.check_memory(eight, mcfg, dev, world_size=1)


def test_start_warns_instead_when_asked_and_passes_the_reference_8_gpu_setup(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dev = _fake_card(monkeypatch, 80 * GIB)
    cfg = load_preset("maze-hard-1k", ["train.gpus=1", "model.forward_dtype=bfloat16", "train.memory_check=warn"])
    mcfg = fit.model_for(cfg, torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="hrm.train.fit"):
        fit.check_memory(cfg, mcfg, dev, world_size=1)
    assert "largest per-GPU batch that fits" in caplog.text
    caplog.clear()
    ref = load_preset("maze-hard-1k", ["train.gpus=8", "model.forward_dtype=bfloat16"])  # 96 per GPU
    with caplog.at_level(logging.INFO, logger="hrm.train.fit"):
        fit.check_memory(ref, fit.model_for(ref, torch.device("cpu")), dev, world_size=8)
    assert "memory: ≈" in caplog.text and "at batch 96 of NVIDIA H100" in caplog.text
    one_gpu = load_preset("maze-hard-1k-1gpu", ["model.forward_dtype=bfloat16"])
    fit.check_memory(one_gpu, fit.model_for(one_gpu, torch.device("cpu")), dev, world_size=1)  # no refusal


@pytest.mark.parametrize("fixed, per, start", [(1.6e9, 202e6, 373), (1.6e9, 202e6, 40), (1.6e9, 202e6, 2000)])
def test_search_finds_the_largest_fitting_batch_in_a_few_steps(fixed: float, per: float, start: int) -> None:
    capacity = 80 * GIB
    tried: list[int] = []

    def trial(b: int) -> int | None:  # linear peaks; out of memory past the card
        tried.append(b)
        peak = int(fixed + per * b)
        return None if peak > capacity else peak

    best = fit.search_batch(trial, capacity, start)
    assert fixed + per * best <= FIT_MARGIN * capacity < fixed + per * (best + 1)
    assert best in tried and best + 1 in tried and len(tried) <= 10


def test_search_says_nothing_fits() -> None:
    assert fit.search_batch(lambda b: None, 10 * GIB, 8) == 0


def test_real_steps_run_on_the_cpu() -> None:
    cfg = load_preset("tiny")
    mcfg = fit.model_for(cfg, torch.device("cpu"))
    fit.run_steps(cfg, mcfg, batch=3, device=torch.device("cpu"))  # the batch size differs from the preset's


def test_find_batch_cli_on_cpu_and_without_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["--find-batch", "tiny", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nothing to find on cpu" in out and "per-rank batch 8" in out
    assert not any(tmp_path.iterdir())  # no run directory was made
    if not torch.cuda.is_available():
        assert main(["--find-batch", "maze-hard-1k", "--runs-root", str(tmp_path)]) == 2
        assert "no CUDA device is available" in capsys.readouterr().out


def test_start_logs_the_compute_dtype_and_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A V100 (compute capability 7.0) under auto: float32, and the trainer log says why."""
    dev = _fake_card(monkeypatch, 32 * GIB, name="Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (7, 0))
    cfg = load_preset("sudoku-extreme-1k", ["train.global_batch_size=64"])
    mcfg = fit.model_for(cfg, torch.device("cpu"))  # float32, as the trainer resolves auto on this card
    with caplog.at_level(logging.INFO, logger="hrm.train.fit"):
        fit.check_memory(cfg, mcfg, dev, world_size=1)
    assert "compute dtype auto: float32 (compute capability 7.0 < 8.0 has no native bfloat16" in caplog.text
    assert "at batch 64 of Tesla V100-SXM2-32GB" in caplog.text
