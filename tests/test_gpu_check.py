"""bench/gpu_check.py and bench/gpu_peak.py on a machine without a GPU: the plan (what `make gpu-check`
would run), configs its runs would load, the runner on real subprocesses, the run-directory figure on a
run our trainer wrote, and the datasheet table. The GPU half is exercised only on a GPU box."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
from gpu_peak import datasheet_tflops  # noqa: E402

PY = sys.executable


def test_dry_run_prints_the_plan_without_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert gpu_check.main(["--dry-run", "--gpus", "1", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "-m cuda tests/test_cuda.py" in out and "bench/step.py --cuda" in out
    for preset in gpu_check.PRESETS:
        assert f"--find-batch {preset}" in out and f"200 steps {preset}" in out
    assert "2-GPU torchrun (NCCL) (≤150 s): skipped: 1 GPU visible (needs 2)" in out
    assert gpu_check.main(["--dry-run", "--gpus", "2", "--steps", "50", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "--nproc_per_node=2 -m hrm.train tiny train.device=cuda" in out and "train.total_steps=50" in out


def test_without_a_gpu_it_says_so_and_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert gpu_check.main(["--gpus", "0", "--work", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_preset_runs_load_as_configs(tmp_path: Path) -> None:
    """Every override the check passes is one the trainer accepts, and the data gives a full batch."""
    from hrm.run.config import load_preset

    ctx = {f"batch:{p}": "64" for p in gpu_check.PRESETS}
    seen = set()
    for check in gpu_check.plan(1, 200, tmp_path):
        cmd = check.command(ctx)
        if cmd[1:3] != ["-m", "hrm.train"] or cmd[3] not in gpu_check.PRESETS:
            continue  # the tests, find-batch, the bench, torchrun
        preset, overrides = cmd[3], [a for a in cmd[4:] if "=" in a]
        seen.add(preset)
        cfg = load_preset(preset, overrides)
        data, examples = gpu_check.PRESETS[preset]
        assert cfg.train.device == "cuda" and cfg.train.gpus == 1 and cfg.train.total_steps == 200
        assert cfg.train.global_batch_size == 64 <= examples
    assert seen == set(gpu_check.PRESETS)


def test_runner_on_real_processes(tmp_path: Path) -> None:
    ok = gpu_check.Check("ok", lambda c: [PY, "-c", "print('3 passed, 1 skipped')"], 60, gpu_check._tests_figure)
    bad = gpu_check.Check(
        "bad", lambda c: [PY, "-c", "import sys; print('boom'); sys.exit(3)"], 60, gpu_check._tests_figure
    )
    slow = gpu_check.Check("slow", lambda c: [PY, "-c", "import time; time.sleep(30)"], 60, gpu_check._tests_figure)
    skip = gpu_check.Check("skip", lambda c: ["false"], 60, gpu_check._tests_figure, skip="1 GPU visible (needs 2)")
    results = [gpu_check.run_check(c, {}, t, tmp_path) for c, t in ((ok, 60), (bad, 60), (slow, 1), (skip, 60))]
    assert [(r.status, r.figure) for r in results] == [
        ("pass", "3 passed, 1 skipped"),
        ("FAIL", "boom"),
        ("timeout", "(no output)"),
        ("skipped", "1 GPU visible (needs 2)"),
    ]
    assert "$ " in (tmp_path / "bad.log").read_text() and "boom" in (tmp_path / "bad.log").read_text()
    text = gpu_check.table(results, "NVIDIA H100 80GB HBM3")
    assert text.splitlines()[0] == "gpu-check on NVIDIA H100 80GB HBM3" and len(text.splitlines()) == 6


def test_find_batch_figure_caps_at_the_checks_data() -> None:
    ctx: dict[str, str] = {}
    out = "hrm-train: largest per-GPU batch that fits NVIDIA H100 (79.1 GiB) with a 10% margin: 912 (estimate before trying: 880)"
    assert gpu_check._find_batch("maze-hard-1k", 600)(out, ctx) == "fits 912 per GPU (run at 600: the check's data)"
    assert ctx == {"batch:maze-hard-1k": "600"}
    with pytest.raises(ValueError):
        gpu_check._find_batch("maze-hard-1k", 600)("hrm-train: not even batch 1 fits", ctx)


def test_run_figure_reads_a_run_our_trainer_wrote(tmp_path: Path) -> None:
    from hrm.train.cli import main

    d = tmp_path / "run"
    assert main(["tiny", "train.total_steps=6", "train.eval_max_examples=8", "--run-dir", str(d)]) == 0
    fig = gpu_check._run_figure(d)("", {})
    assert fig.startswith("6 steps,") and "s/step" in fig and "loss" in fig


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA L4", 121.0),
        ("Tesla V100-SXM2-32GB", None),
    ],
)
def test_datasheet_peaks(name: str, tflops: float | None) -> None:
    assert datasheet_tflops(name) == tflops
