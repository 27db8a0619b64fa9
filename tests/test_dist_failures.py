"""Distributed runs that fail loudly (issue 16 §2), on CPU/gloo with real processes:

* rank 0's own work (the dataset build) is waited for at a named barrier, not inside a timed
  collective: with a collective timeout shorter than the build the run still succeeds;
* a rank that stops answering (SIGSTOP) ends the run with a `failed` status written by rank 0's
  watch, naming the collective it waited in and the rank that never arrived;
* the checkpoint's carry is gathered onto rank 0 only;
* pick_device takes LOCAL_RANK modulo the visible devices (one GPU per task under SLURM)."""

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
import torch.multiprocessing as mp
from support.train import (
    REPO,
    TINY,
    events,
    free_port,
    kill_group,
    last_train_step,
    proc_env,
    show,
    statuses,
    wait_for,
    wait_state,
)
from test_distributed import LONG, torchrun

from hrm.train import distributed as D
from hrm.train.dist_watch import CollectiveWatch, report_margin


def _start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, cwd=REPO, env=proc_env(**env), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


# --- pick_device ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("local_rank", "count", "want"), [(0, 8, 0), (5, 8, 5), (3, 1, 0), (5, 2, 1)])
def test_pick_device_wraps_local_rank(monkeypatch: pytest.MonkeyPatch, local_rank: int, count: int, want: int) -> None:
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    dev = D.pick_device("auto", local_rank)
    assert dev == torch.device("cuda", want) and chosen == [dev]


def test_pick_device_cuda_without_gpu_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.pick_device("auto", 3) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="train.device=cpu or auto"):
        D.pick_device("cuda", 0)


def test_collective_timeout_from_config_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from hrm.run.config import load_preset

    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.collective_timeout(None) == D.DEFAULT_TIMEOUT_S == 600.0  # minutes: NCCL aborts when it runs out
    assert D.collective_timeout(load_preset("tiny", ["train.dist_timeout_s=1800"]).train.dist_timeout_s) == 1800.0
    monkeypatch.setenv(D.TIMEOUT_ENV, "30")  # the tests' short gloo runs
    assert D.collective_timeout(1800.0) == 30.0


# --- the watch on its own -------------------------------------------------------------------------
def test_watch_names_the_ranks_that_are_elsewhere_or_silent() -> None:
    store = torch.distributed.HashStore()
    reports: list[str] = []
    w = [CollectiveWatch(r, 4, timeout_s=10.0, store=store) for r in range(4)]
    for x in w:
        x.step = lambda: 42
    w[0].report = reports.append
    w[1].issued("gradient all-reduce")  # rank 1: in the same collective, running
    w[3].issued("metrics all-reduce")  # rank 3: running, waiting elsewhere; rank 2: not in any, then silent
    for x in w[1:]:
        x.check()
    w[0].issued("gradient all-reduce")
    assert w[0].check() is None and not reports  # far from the timeout: nothing to say yet

    def waited(seconds: float) -> None:  # as if rank 0 had waited this long (no sleeping in tests)
        name, _since, limit, step, done = w[0]._pending[0]
        w[0]._pending[0] = (name, time.monotonic() - seconds, limit, step, done)

    waited(6.0)  # past half the timeout: rank 0 starts watching the others' heartbeats
    assert w[0].check() is None and set(w[0]._seen) == {1, 2, 3}
    w[0]._seen = {r: (v, t - 2.0) for r, (v, t) in w[0]._seen.items()}  # two seconds pass…
    w[1].check(), w[3].check()  # …in which ranks 1 and 3 keep running and rank 2 does not
    waited(10.0 - report_margin(10.0))
    msg = w[0].check()
    assert msg is not None and reports == [msg] and w[0].fired == msg
    assert "rank 0 waited 9 s in collective 'gradient all-reduce' (step 42) of a 10 s timeout" in msg
    assert "rank 2 (silent for 2 s; last: not in a collective)" in msg
    assert "rank 3 (metrics all-reduce at step 42)" in msg and "rank 1 " not in msg
    assert w[0].check() is None and len(reports) == 1  # reported once


def test_watch_forgets_collectives_that_completed_on_the_device() -> None:
    done = {"first": False}
    w = CollectiveWatch(0, 2, timeout_s=100.0)
    w.issued("puzzle-embedding all-gather", done=lambda: done["first"])
    w.issued("gradient all-reduce", done=lambda: False)
    assert w.current()[0] == "puzzle-embedding all-gather"
    done["first"] = True
    assert w.current()[0] == "gradient all-reduce"
    w.synced()
    assert w.current() is None


# --- carry gather ---------------------------------------------------------------------------------
def _gather_rank(rank: int, world: int, port: int, out: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from hrm.train.state import global_carry

    env = D.DistEnv(rank=rank, world_size=world, backend="gloo")
    mine = {
        "z_H": torch.full((2, 3, 4), float(rank)),
        "halted": torch.tensor([rank == 0, True]),
        "steps": torch.tensor([10 * rank, 10 * rank + 1], dtype=torch.int32),
    }
    got = global_carry(env, mine)
    # numpy arrays travel by value (a torch tensor would be shared through a descriptor this process
    # may close before the test reads it)
    out.put((rank, {k: v.numpy().copy() for k, v in got.items()}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # torchrun
def test_checkpoint_carry_is_gathered_on_rank0_only() -> None:
    ctx = mp.get_context("fork")  # no CUDA here; forking skips two imports of torch
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gather_rank, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert got[1] == {}  # rank 1 holds no copy of the global carry
    c = {k: torch.from_numpy(v) for k, v in got[0].items()}
    assert c["z_H"].shape == (4, 3, 4) and c["z_H"][:2].eq(0).all() and c["z_H"][2:].eq(1).all()
    assert c["halted"].dtype == torch.bool and c["halted"].tolist() == [True, True, False, True]
    assert c["steps"].tolist() == [0, 1, 10, 11]


# --- real torchrun runs ---------------------------------------------------------------------------
@pytest.mark.slow  # torchrun
def test_slow_rank0_dataset_build_is_waited_for_at_a_named_barrier(tmp_path: Path) -> None:
    """The collective timeout (3 s) is shorter than rank 0's dataset build: rank 1 waits at the barrier
    'dataset built' (its log says how long), and the run finishes."""
    d, log = tmp_path / "run", tmp_path / "log"
    # 40,000 easy puzzles: ~8 s to build on a quiet 2-core machine, well past the 3 s timeout
    args = [*TINY, "data.train=40000", "train.total_steps=6", "train.eval_interval=6", "train.checkpoint_interval=6"]
    p = _start(torchrun(*args, "--run-dir", str(d)), log, HRM_DIST_TIMEOUT="3", HRM_DATA_CACHE=str(tmp_path / "c"))
    try:
        assert p.wait(300) == 0, show(log)
    finally:
        kill_group(p)
    text = log.read_text()
    m = re.search(r"rank 1 waited ([\d.]+) s at barrier 'dataset built' for rank 0", text)
    assert m, show(log)
    assert float(m.group(1)) > 3.0, f"the build took only {m.group(1)} s: it did not outlast the timeout"
    assert statuses(d)[-1]["state"] == "finished"


@pytest.mark.slow  # torchrun
def test_a_hung_rank_fails_the_run_naming_the_collective_and_the_rank(tmp_path: Path) -> None:
    """SIGSTOP rank 1 mid-run: rank 0's watch writes `failed` before the 6 s timeout, naming where it
    waited and that rank 1 never arrived; the process then ends (gloo raises; NCCL would abort)."""
    d, log = tmp_path / "run", tmp_path / "log"
    p = _start(torchrun(*LONG, "--run-dir", str(d)), log, HRM_DIST_TIMEOUT="6")
    stopped: psutil.Process | None = None
    try:
        wait_state(d, "running", 150)
        wait_for(lambda: last_train_step(d) >= 3, 60, "steps")
        workers = [c for c in psutil.Process(p.pid).children(recursive=True) if c.environ().get("RANK") == "1"]
        assert len(workers) == 1
        stopped = workers[0]
        stopped.send_signal(signal.SIGSTOP)
        failed = wait_state(d, "failed", 60)
        err = failed["error"]
        assert re.search(r"rank 0 waited \d+ s in collective '[^']+' \(step \d+\) of a 6 s timeout", err), err
        assert "not arrived: rank 1" in err, err
        assert "train.dist_timeout_s" in err
        stopped.kill()  # torchrun would wait out its SIGTERM grace on a stopped process
        assert p.wait(60) != 0
    finally:
        kill_group(p)
        if stopped is not None and stopped.is_running():
            stopped.kill()
    # The first failed status is the watch's: written before the backend gave up.
    first = next(e for e in events(d) if e["kind"] == "status" and e["state"] == "failed")
    assert first["error"] == err
