"""Exact resume on CPU: N+M steps straight == N steps, stopped (or SIGKILLed right after a
checkpoint), then resumed for M — bitwise-identical weights and identical logged losses."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from support.train import (
    PY,
    TINY,
    effective,
    events,
    kill_group,
    latest_ckpt,
    model_of,
    run,
    show,
    start,
    train_cmd,
    train_here,
    wait_for,
)

from hrm.run.ckpt_index import latest_checkpoint

pytestmark = pytest.mark.slow  # every test trains tiny runs (in this process or a killed child)

TOTAL = 8
ARGS = [*TINY, f"train.total_steps={TOTAL}", "train.eval_interval=4", "train.checkpoint_interval=2"]


@pytest.fixture(scope="module")
def one_thread():
    """In-process runs on one thread, like the trainer subprocesses (OMP_NUM_THREADS=1), so all
    runs of this file do bit-identical arithmetic; in-process saves the ~5 s start of a process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    d = tmp_path_factory.mktemp("straight") / "run"
    assert train_here(*ARGS, "--run-dir", str(d)) == 0
    return d


def _same_run(a: Path, b: Path) -> None:
    ta, tb = effective(events(a)), effective(events(b))
    assert sorted(ta) == list(range(1, TOTAL + 1)) == sorted(tb)
    for step in ta:
        for k in ("loss", "lm_loss", "q_halt_loss", "q_continue_loss", "accuracy", "count", "lr", "grad_norm"):
            assert ta[step][k] == tb[step][k], f"step {step} {k}: {ta[step][k]} != {tb[step][k]}"
    ea, eb = effective(events(a), "eval"), effective(events(b), "eval")
    assert ea[TOTAL]["lm_loss"] == eb[TOTAL]["lm_loss"]
    ma, mb = model_of(latest_ckpt(a)), model_of(latest_ckpt(b))
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), f"weights differ in {k}"


def test_stop_then_resume_is_bitwise_identical(straight: Path, tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert train_here(*ARGS, "--run-dir", str(d), "--stop-at-step", "3") == 0
    assert sorted(effective(events(d))) == [1, 2, 3]
    assert latest_ckpt(d).name == "step-00000003.pt"
    assert train_here("--run-dir", str(d), "--resume", "latest") == 0
    runs = [e for e in events(d) if e["kind"] == "run"]
    assert [e["step"] for e in runs] == [0, 3]
    assert runs[1]["resumed_from"] == "checkpoints/step-00000003.pt"
    _same_run(straight, d)


def test_sigkill_right_after_checkpoint_then_resume(straight: Path, tmp_path: Path) -> None:
    d = tmp_path / "run"
    log = tmp_path / "log"
    # Slow enough that the kill lands mid-run: many steps, one checkpoint every 2.
    p = start(train_cmd(*ARGS, "--run-dir", str(d)), log)
    try:
        ck = wait_for(
            lambda: next((e for e in events(d) if e["kind"] == "checkpoint" and e["step"] >= 2), None),
            90,
            "the first checkpoint",
        )
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        kill_group(p)
    if any(e["kind"] == "status" and e["state"] == "finished" for e in events(d)):
        pytest.fail("the run finished before the kill; cannot test a kill mid-run\n" + show(log))
    assert (d / "trainer.pid").exists()  # stale: the next trainer must see the owner is dead
    assert train_here("--run-dir", str(d), "--resume", "latest") == 0
    resumed = [e for e in events(d) if e["kind"] == "run"][-1]
    assert resumed["step"] >= ck["step"]
    _same_run(straight, d)


def test_resume_latest_after_a_resume_from_an_older_checkpoint_goes_on_from_it(straight: Path, tmp_path: Path) -> None:
    """Resumed from step 4 of a run that reached 8, the trainer dies before its first checkpoint: the next
    `--resume latest` goes on from step 4 (the branch the user chose), not from step 8 (the abandoned one)."""
    d = tmp_path / "run"
    shutil.copytree(straight, d)
    older = d / "checkpoints" / "step-00000004.pt"
    assert latest_checkpoint(d).name == "step-00000008.pt"
    dies = (  # the trainer, killed (no clean-up) once its start is recorded, before any step
        "import os, sys\nimport hrm.train.trainer as T\nT.run_training = lambda session: os._exit(9)\n"
        "from hrm.train.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    r = run([PY, "-c", dies, "--run-dir", str(d), "--resume", str(older)])
    assert r.returncode == 9, r.stderr[-2000:]
    assert latest_checkpoint(d) == older
    assert train_here("--run-dir", str(d), "--resume", "latest") == 0
    assert [e for e in events(d) if e["kind"] == "run"][-1]["step"] == 4
    _same_run(straight, d)


def test_checkpoint_that_does_not_fit_names_tensor_and_shapes(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hrm.run.config import load_preset
    from hrm.train.cli import main

    h = load_preset("tiny").model.hidden_size
    ck = latest_ckpt(straight)
    rc = main([*TINY, f"model.hidden_size={2 * h}", "--run-dir", str(tmp_path / "r"), "--resume", str(ck)])
    err = capsys.readouterr().err
    assert rc == 2
    m = re.search(r"tensor '([\w.]+)' has shape (\(.*?\)) in the checkpoint but (\(.*?\))", err)
    assert m, err
    assert m.group(1).startswith("inner.") and str(h) in m.group(2) and str(2 * h) in m.group(3)
    assert not any(e["kind"] == "train" for e in events(tmp_path / "r"))


def test_truncated_checkpoint_is_reported_not_loaded(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hrm.train.cli import main

    ck = latest_ckpt(straight)
    bad = tmp_path / "step-00000008.pt"
    bad.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    rc = main([*ARGS, "--run-dir", str(tmp_path / "r"), "--resume", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and ("truncated" in err or "corrupt" in err), err
    assert not any(e["kind"] == "train" for e in events(tmp_path / "r"))
