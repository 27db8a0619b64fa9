"""torchrun on CPU/gloo: 2 ranks = 1 rank with the same global batch; 2-rank checkpoints resume
on 1 rank; a 2-node run (two launchers, c10d rendezvous on 127.0.0.1) obeys commands on every
rank at the same step; a killed rank fails the run with a status naming it, never a hang.

ACT exploration draws per-rank random numbers (each rank seeds its own stream, as the reference
does), so runs compared across rank counts switch it off (halt_exploration_prob=0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from support.train import (
    LONG,
    REPO,
    TINY,
    TORCHRUN,
    effective,
    events,
    free_port,
    kill_group,
    last_train_step,
    latest_ckpt,
    model_of,
    proc_env,
    show,
    start,
    statuses,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.slow  # torchrun: two rank processes per test

STEPS = 20
SAME = [
    *TINY,
    "model.halt_exploration_prob=0",
    f"train.total_steps={STEPS}",
    "train.eval_interval=10",
    "train.checkpoint_interval=10",
]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "hrm.train", *args]


# TRM (sequence MLP, weight EMA) through the same torchrun path as HRM.
TRM = ["model.arch=trm", "model.puzzle_emb_len=2", "model.mlp_t=true", "model.pos_encodings=none", "train.ema=true"]


@pytest.fixture(scope="module", params=[[], TRM], ids=["hrm", "trm"])
def one_and_two(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Path, Path, list[str]]:
    from hrm.train.cli import main

    base = tmp_path_factory.mktemp("dist")
    one, two = base / "one", base / "two"
    same = [*SAME, *request.param]
    # Both at once: the 1-rank run in this process while torchrun starts its two.
    p2 = subprocess.Popen(
        torchrun(*same, "--run-dir", str(two)),
        cwd=REPO,
        env=proc_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert main([*same, "--run-dir", str(one)]) == 0
        out2, _ = p2.communicate(timeout=180)
    finally:
        kill_group(p2)
    assert p2.returncode == 0, out2[-3000:]
    return one, two, same


def _close(a: Path, b: Path, steps: range) -> None:
    ta, tb = effective(events(a)), effective(events(b))
    for s in steps:
        assert ta[s]["count"] == tb[s]["count"], f"step {s}: halting differs"
        rel = abs(ta[s]["loss"] - tb[s]["loss"]) / abs(ta[s]["loss"])
        assert rel < 1e-5, f"step {s}: loss {ta[s]['loss']} vs {tb[s]['loss']}"
        # the viewer fields reduce over ranks like the metrics: summed counts, rank 0's norm
        assert ta[s].get("act_steps_hist") == tb[s].get("act_steps_hist"), f"step {s}: halting histogram differs"
        assert ta[s]["changed_accuracy"] == pytest.approx(tb[s]["changed_accuracy"], abs=1e-12), f"step {s}"
        assert ta[s]["param_norm"] == pytest.approx(tb[s]["param_norm"], rel=1e-5), f"step {s}: param_norm"
    ma, mb = model_of(latest_ckpt(a)), model_of(latest_ckpt(b))
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=1e-4, atol=1e-6, msg=f"weights differ in {k}")


def test_two_ranks_equal_one_rank(one_and_two: tuple[Path, Path, list[str]]) -> None:
    one, two, _ = one_and_two
    run2 = next(e for e in events(two) if e["kind"] == "run")
    assert run2["world_size"] == 2 and len(run2["devices"]) == 2
    _close(one, two, range(1, STEPS + 1))
    # The checkpoint holds the carry of the whole global batch, gathered from both ranks.
    ck = torch.load(latest_ckpt(two), map_location="cpu", weights_only=True)
    gb = run2["config"]["train"]["global_batch_size"]
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert all(v.shape[0] == gb for v in ck["carry"].values())
    if "ema" in ck:  # TRM's weight EMA: the same average on both ranks as on one
        ema1 = torch.load(latest_ckpt(one), map_location="cpu", weights_only=True)["ema"]
        torch.testing.assert_close(ck["ema"], ema1, rtol=1e-4, atol=1e-6)


def test_two_rank_checkpoint_resumes_on_one_rank(one_and_two: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    _one, two, same = one_and_two
    d = tmp_path / "run"
    mid = two / "checkpoints" / "step-00000010.pt"
    assert torch.load(mid, map_location="cpu", weights_only=True)["world_size"] == 2
    from hrm.train.cli import main

    assert main([*same, "--run-dir", str(d), "--resume", str(mid)]) == 0
    resumed = next(e for e in events(d) if e["kind"] == "run")
    assert resumed["step"] == 10 and resumed["world_size"] == 1
    assert (
        resumed["config"]["model"]["arch"]
        == next(e for e in events(two) if e["kind"] == "run")["config"]["model"]["arch"]
    )
    _close(two, d, range(11, STEPS + 1))


def _rank_lines(text: str, what: str) -> dict[str, int]:
    """'acting on <what> at step N' per rank ('0' for lines without a rank tag)."""
    out = {}
    for m in re.finditer(r"(\[rank (\d+)\] )?INFO hrm\.train\.trainer: acting on (\S+) at step (\d+)", text):
        if what in m.group(3).split("+"):
            out[m.group(2) or "0"] = int(m.group(4))
    return out


def test_two_nodes_obey_commands_at_the_same_step(tmp_path: Path) -> None:
    from hrm.run.control import send_command

    d = tmp_path / "run"
    port = free_port()
    common = [
        TORCHRUN,
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=t2",
        "-m",
        "hrm.train",
        *LONG,
        "--run-dir",
        str(d),
    ]
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    nodes = [start(common, logs[0]), start(common, logs[1])]
    try:
        wait_state(d, "running", 150)
        wait_for(lambda: last_train_step(d) >= 2, 60, "steps")
        r = send_command(d, "pause", timeout=60)
        assert r["ok"], r
        r = send_command(d, "checkpoint", timeout=60)
        assert r["ok"] and (d / r["path"]).is_file(), r
        r = send_command(d, "resume", timeout=60)
        assert r["ok"], r
        wait_for(lambda: last_train_step(d) > r["step"], 60, "steps after resume")
        r = send_command(d, "stop", timeout=60)
        assert r["ok"], r
        for p, log in zip(nodes, logs):
            assert p.wait(90) == 0, show(log)
    finally:
        for p in nodes:
            kill_group(p)
    text = logs[0].read_text() + logs[1].read_text()
    for what in ("pause", "checkpoint", "resume", "stop"):
        seen = _rank_lines(text, what)
        assert set(seen) == {"0", "1"} and len(set(seen.values())) == 1, (what, seen)
    assert statuses(d)[-1]["state"] == "stopped"
    assert next(e for e in events(d) if e["kind"] == "run")["world_size"] == 2


def test_killed_rank_fails_the_run_quickly(tmp_path: Path) -> None:
    d, log = tmp_path / "run", tmp_path / "log"
    p = start(torchrun(*LONG, "--run-dir", str(d)), log)
    try:
        wait_state(d, "running", 150)
        wait_for(lambda: last_train_step(d) >= 2, 60, "steps")
        workers = [c for c in psutil.Process(p.pid).children(recursive=True) if c.environ().get("RANK") == "1"]
        assert len(workers) == 1
        t0 = time.monotonic()
        os.kill(workers[0].pid, signal.SIGKILL)
        failed = wait_state(d, "failed", 60)
        assert time.monotonic() - t0 < 60
        assert "rank 1" in failed["error"], failed
        assert p.wait(60) != 0
    finally:
        kill_group(p)
