"""The fault battery of issue 15, run against real trainer processes on the `tiny` preset:

  kill-soak     SIGKILL at random moments (several mid-checkpoint), each resumed with --resume latest:
                bitwise equal to the straight run (every train event's metrics, the final weights)
  kill-early    a kill before the first checkpoint, then --resume latest: step 0 in place, said so
  full-disk     the run directory on a small tmpfs that fills: "no space left on device" with path
                and fix, non-zero exit, never `finished`, earlier checkpoints intact, events parseable
  socket        garbage, nesting, huge lines, half-open and 1,100 idle connections under ulimit -n
                1024, 200 simultaneous requests: the step keeps advancing, the run ends normally
  files-*       corrupt and foreign files against every CLI: one or two lines, non-zero, no traceback,
                nothing already written changed
  locks         a live trainer cannot be taken over; a foreign-host record is refused with host, pid,
                age and the flag, and --take-over works
  exit-codes    0 finished, 0 stopped with its final checkpoint, non-zero failed

    nice -n 10 python bench/faults.py [--quick] [--only NAME ...] [--seed N]

Each scenario prints PASS/FAIL with a one-line reason; a table ends the run. Needs root for the tmpfs
mount (falls back to a failing scenario that says so)."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from faults_common import Result, nice_env
from faults_files import corrupt_files, socket_abuse
from faults_runs import exit_codes_and_locks, full_disk
from support.train import TINY, effective, events, kill_group, model_of, run, start, train_cmd, wait_for


def _straight(root: Path, args: list[str], name: str) -> Path:
    d = root / name
    p = run(train_cmd(*args, "--run-dir", str(d)), timeout=900)
    if p.returncode != 0:
        raise AssertionError(f"straight run failed (exit {p.returncode}): {p.stderr.strip()[-300:]}")
    return d


def _same(a: Path, b: Path, total: int) -> str | None:
    """None when b's effective train events and final weights equal a's bitwise, else the first difference."""
    ta, tb = effective(events(a)), effective(events(b))
    if sorted(tb) != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(tb))
        return f"train events for steps {missing[:10]} missing after resumes"
    for s in ta:
        for k in ("loss", "lm_loss", "q_halt_loss", "q_continue_loss", "accuracy", "lr", "grad_norm"):
            if ta[s].get(k) != tb[s].get(k):
                return f"step {s} {k}: {ta[s].get(k)} != {tb[s].get(k)}"
    from hrm.run.ckpt_index import latest_checkpoint

    ca, cb = latest_checkpoint(a / "checkpoints"), latest_checkpoint(b / "checkpoints")
    if ca is None or cb is None or ca.name != cb.name:
        return f"latest checkpoints differ: {ca} vs {cb}"
    import torch

    ma, mb = model_of(ca), model_of(cb)
    bad = [k for k in ma if k not in mb or not torch.equal(ma[k], mb[k])]
    return f"final weights differ in {bad[:3]}" if bad else None


def _temps(d: Path) -> set[str]:
    """The checkpoint writer's temporary files (`.tmp-step-N.pt.<pid>`) in d/checkpoints now."""
    try:
        return {n for n in os.listdir(d / "checkpoints") if n.startswith(".tmp-step-")}
    except FileNotFoundError:
        return set()


def kill_soak(root: Path, kills: int, rng: random.Random) -> Result:
    total = 12 if kills <= 4 else 40
    args = [*TINY, f"train.total_steps={total}", "train.eval_interval=4", "train.checkpoint_interval=2"]
    straight = _straight(root, args, "soak-straight")
    d, log = root / "soak", root / "soak.log"
    mid, done = 0, False
    for i in range(kills):
        cmd = train_cmd(*args, "--run-dir", str(d)) if i == 0 else train_cmd("--run-dir", str(d), "--resume", "latest")
        stale = _temps(d)  # left by an earlier kill; the new trainer's temporaries carry its own pid
        p = start(cmd, log)
        try:
            if i % 2 == 0:  # mid-checkpoint: the moment a checkpoint's temporary file exists
                wait_for(
                    lambda p=p, stale=stale: _temps(d) - stale or p.poll() is not None,
                    300,
                    "a checkpoint being written",
                    0.001,
                )
            else:
                wait_for(lambda p=p: effective(events(d)) or p.poll() is not None, 300, "a train step")
                time.sleep(rng.uniform(0, 0.4))  # a random moment: the point of a soak, not a wait
            if p.poll() is not None:
                done = True
            else:
                p.send_signal(signal.SIGKILL)
                p.wait(30)
                mid += any(n.endswith(f".{p.pid}") for n in _temps(d))
        finally:
            kill_group(p)
        if done:
            break
    if not done:
        p = run(train_cmd("--run-dir", str(d), "--resume", "latest"), timeout=900)
        if p.returncode != 0:
            return Result("kill-soak", False, f"final resume exit {p.returncode}: {p.stderr.strip()[-200:]}")
    diff = _same(straight, d, total)
    runs = sum(e["kind"] == "run" for e in events(d))
    if diff:
        return Result("kill-soak", False, diff)
    return Result("kill-soak", True, f"{runs - 1} resumes ({mid} killed mid-checkpoint) == straight run, bitwise")


def kill_early(root: Path) -> Result:
    args = [*TINY, "train.total_steps=6", "train.eval_interval=1000", "train.checkpoint_interval=1000"]
    straight = _straight(root, args, "early-straight")
    d, log = root / "early", root / "early.log"
    p = start(train_cmd(*args, "--run-dir", str(d)), log)
    try:
        wait_for(lambda: len(effective(events(d))) >= 2 or p.poll() is not None, 300, "two train steps")
        if p.poll() is not None:
            return Result("kill-early", False, "the run finished before the kill: make it longer")
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        kill_group(p)
    if list((d / "checkpoints").glob("step-*.pt")):
        return Result("kill-early", False, "a checkpoint exists before the kill: the scenario did not hold")
    r = run(train_cmd("--run-dir", str(d), "--resume", "latest"), timeout=900)
    said = [ln for ln in (r.stdout + r.stderr).splitlines() if "step 0" in ln]
    if r.returncode != 0:
        return Result("kill-early", False, f"--resume latest exit {r.returncode}: {r.stderr.strip()[-200:]}")
    if not said:
        return Result("kill-early", False, "resumed, but no line says it starts from step 0")
    diff = _same(straight, d, 6)
    return Result("kill-early", diff is None, diff or f"started over in place, said: {said[0].strip()[-100:]}")


def kill_build(root: Path) -> Result:
    """A SIGKILL while the trainer builds a dataset nobody built yet, then --resume latest: the half-built
    dataset must not be taken for a whole one, and the run must complete."""
    seed = 10**7 + time.time_ns() // 1000 % 10**7  # a recipe never built before (the cache keeps every one)
    args = [*TINY, "train.total_steps=4", f"data.seed={seed}", "data.train=2000"]
    d, log = root / "build", root / "build.log"
    p = start(train_cmd(*args, "--run-dir", str(d)), log)
    try:
        building = lambda: any(e["kind"] == "status" and e["state"] == "building" for e in events(d))  # noqa: E731
        wait_for(lambda: building() or p.poll() is not None, 300, "status building", 0.01)
        if p.poll() is not None:
            return Result("kill-build", False, f"the trainer ended (exit {p.returncode}) before the kill")
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        kill_group(p)
    r = run(train_cmd("--run-dir", str(d), "--resume", "latest"), timeout=900)
    tr = effective(events(d))
    ok = r.returncode == 0 and sorted(tr) == [1, 2, 3, 4] and "Traceback" not in r.stderr
    return Result("kill-build", ok, f"killed while building; --resume latest exit {r.returncode}, steps {sorted(tr)}")


SCENARIOS: dict[str, Callable[[Path, argparse.Namespace, random.Random], list[Result] | Result]] = {
    "kill-soak": lambda root, a, rng: kill_soak(root, 3 if a.quick else 10, rng),
    "kill-early": lambda root, a, rng: kill_early(root),
    "kill-build": lambda root, a, rng: kill_build(root),
    "full-disk": lambda root, a, rng: full_disk(root),
    "socket": lambda root, a, rng: socket_abuse(root, rng),
    "files": lambda root, a, rng: corrupt_files(root, a.quick),
    "locks": lambda root, a, rng: exit_codes_and_locks(root),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer kills and fewer file/tool combinations")
    ap.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run only these scenarios")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args(argv)
    nice_env()
    root = Path(tempfile.mkdtemp(prefix="hrm-faults-"))
    results: list[Result] = []
    for name in a.only or list(SCENARIOS):
        t0 = time.monotonic()
        try:
            got = SCENARIOS[name](root, a, random.Random(a.seed))
        except Exception as e:  # a scenario that cannot finish is a FAIL with its reason, not a crash
            got = Result(name, False, f"{type(e).__name__}: {str(e).strip()[:200]}")
        for r in got if isinstance(got, list) else [got]:
            r.seconds = r.seconds or time.monotonic() - t0
            results.append(r)
            print(f"{'PASS' if r.ok else 'FAIL'} {r.name}: {r.reason}", flush=True)
    print(f"\n{'scenario':<28} {'result':<6} {'s':>6}  reason")
    for r in results:
        print(f"{r.name:<28} {'PASS' if r.ok else 'FAIL':<6} {r.seconds:>6.0f}  {r.reason[:110]}")
    if not a.keep:
        subprocess.run(["umount", "-l", *map(str, root.glob("disk*/mnt"))], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"scratch kept in {root}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
