"""Fault battery scenarios on whole runs: a filling disk, and the run lock with the exit codes (a
live trainer, a stopped one, a foreign-host record, --take-over, a failed run)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from faults_common import Result, changed, tree_hash
from support.train import TINY, kill_group, last_train_step, run, start, statuses, train_cmd, wait_for

from hrm.run.control_client import send_command


def _mount(at: Path, size: str) -> str | None:
    at.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(at)], capture_output=True, text=True)
    return None if p.returncode == 0 else p.stderr.strip() or "mount failed"


def _all_lines_parse(path: Path) -> str | None:
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            return f"{path.name} line {i} does not parse: {line[:60]!r}"
    return None


def _disk_case(root: Path, name: str, size: str, fill_after: int | None) -> Result:
    """A run on a tmpfs of `size`; with fill_after, a filler file takes every free byte once that step is
    logged (the disk completely full: even events cannot be written)."""
    mnt = root / f"disk-{name}" / "mnt"
    err = _mount(mnt, size)
    if err:
        return Result(f"full-disk-{name}", False, f"cannot mount a tmpfs ({err}); no ENOSPC injection fallback")
    try:
        d, log = mnt / "run", root / f"disk-{name}.log"
        args = [*TINY, "train.total_steps=8", "train.eval_interval=4", "train.checkpoint_interval=2"]
        p = start(train_cmd(*args, "--run-dir", str(d)), log)
        first: dict[str, str] = {}
        try:
            if fill_after is not None:
                wait_for(lambda: last_train_step(d) >= fill_after or p.poll() is not None, 300, "the fill step")
                with open(mnt / "filler", "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                    except OSError:
                        pass
            wait_for(lambda: (d / "checkpoints/step-00000002.pt").is_file() or p.poll() is not None, 300, "ckpt 2")
            first = {k: v for k, v in tree_hash(d).items() if k.endswith("step-00000002.pt")}
            rc = p.wait(300)
        finally:
            kill_group(p)
        text = log.read_text()
        sts = statuses(d)
        last = sts[-1] if sts else {}
        from hrm.run.status import read_status

        st = read_status(d)
        problems = []
        if rc == 0:
            problems.append("exit 0")
        if "Traceback" in text:
            problems.append("traceback in the output")
        lines = [ln for ln in text.splitlines() if "no space left on device" in ln.lower()]
        if not lines:
            problems.append("no line says 'no space left on device': " + text.strip().splitlines()[-1][-120:])
        elif not any(str(mnt) in ln or "checkpoints" in ln or "events" in ln for ln in lines):
            problems.append("the no-space line names no path: " + lines[-1][-120:])
        elif not any(w in lines[-1].lower() for w in ("free", "make room", "delete", "remove", "another")):
            problems.append("the no-space line gives no fix: " + lines[-1][-120:])
        if st.state in ("finished", "running") or last.get("state") == "finished":
            problems.append(f"last state {st.state!r} (event: {last.get('state')!r})")
        if (d / "events.jsonl").is_file() and (why := _all_lines_parse(d / "events.jsonl")):
            problems.append(why)
        after = {k: v for k, v in tree_hash(d).items() if k.endswith("step-00000002.pt")}
        if fill_after is None and (not first or first != after):
            problems.append("the step-2 checkpoint changed or is gone")
        if problems:
            return Result(f"full-disk-{name}", False, "; ".join(problems))
        return Result(f"full-disk-{name}", True, f"exit {rc}, state {st.state}: {lines[-1].strip()[-100:]}")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def full_disk(root: Path) -> list[Result]:
    # a tiny checkpoint is ~0.9 MB: 1.4 MB holds the first (step 2) but not the second's temporary file
    return [_disk_case(root, "ckpt", "1400k", None), _disk_case(root, "filled", "4m", 3)]


def _foreign_record(d: Path) -> None:
    rec = {"pid": 4242, "create_time": time.time() - 7200, "hostname": "container-gone-7f3a", "argv": ["hrm-train"]}
    (d / "trainer.pid").write_text(json.dumps({**rec, "started": time.time() - 7200}))


def exit_codes_and_locks(root: Path) -> list[Result]:
    out: list[Result] = []
    d, log = root / "locks", root / "locks.log"
    args = [*TINY, "train.total_steps=100000", "train.eval_interval=100000", "train.checkpoint_interval=100000"]
    p = start(train_cmd(*args, "--run-dir", str(d)), log)
    try:
        wait_for(lambda: last_train_step(d) >= 2 or p.poll() is not None, 300, "two steps")
        r = run(train_cmd("--run-dir", str(d), "--resume", "latest", "--take-over"), timeout=300)
        s0 = last_train_step(d)
        alive = p.poll() is None and wait_for(lambda: last_train_step(d) > s0, 120, "steps after the take-over try")
        ok = r.returncode != 0 and "Traceback" not in r.stderr and str(p.pid) in r.stderr and alive
        out.append(Result("locks-live", ok, f"exit {r.returncode}, trainer alive={alive}: {r.stderr.strip()[-140:]}"))
        reply = send_command(d, "stop", timeout=60)
        rc = p.wait(300)
    finally:
        kill_group(p)
    step = last_train_step(d)
    last = statuses(d)[-1]
    from hrm.run.ckpt_index import latest_checkpoint

    ck = latest_checkpoint(d / "checkpoints")
    ok = rc == 0 and reply.get("ok") and ck is not None and ck.name == f"step-{step:08d}.pt"
    ok = ok and last["state"] in ("stopped", "finished") and last["state"] != "failed"
    out.append(Result("exit-stopped", bool(ok), f"exit {rc}, state {last['state']}, final checkpoint {ck and ck.name}"))

    # a record from another host (a container that restarted): refused naming host, pid, age, --take-over
    _foreign_record(d)
    before = tree_hash(d)
    r = run(train_cmd("--run-dir", str(d), "--resume", "latest", "train.total_steps=" + str(step + 3)), timeout=300)
    ch = changed(before, tree_hash(d))
    need = ["container-gone-7f3a", "4242", "--take-over"]
    miss = [w for w in need if w not in r.stderr]
    aged = any(u in r.stderr for u in ("ago", " h", "hour", "min"))
    ok = r.returncode != 0 and not miss and aged and not ch and "Traceback" not in r.stderr
    why = f"missing {miss}" if miss else ("no age" if not aged else (f"changed {ch}" if ch else ""))
    out.append(Result("locks-foreign", ok, why or f"refused: {r.stderr.strip().splitlines()[-1][:120]}"))
    r = run(
        train_cmd("--run-dir", str(d), "--resume", "latest", "--take-over", f"train.total_steps={step + 3}"),
        timeout=600,
    )
    done = statuses(d)[-1]
    ok = r.returncode == 0 and done["state"] == "finished" and last_train_step(d) == step + 3
    out.append(Result("locks-take-over", ok, f"exit {r.returncode}, {done['state']} at step {last_train_step(d)}"))
    out.append(Result("exit-finished", ok, f"--take-over run: exit {r.returncode}, state {done['state']}"))

    # a dead pid on this host: simply replaced (no dead end), or refused naming the flag
    rec = json.loads((d / "trainer.pid").read_text()) if (d / "trainer.pid").is_file() else {}
    (d / "trainer.pid").write_text(json.dumps({**rec, "pid": 999999, "hostname": socket.gethostname()}))
    r = run(train_cmd("--run-dir", str(d), "--resume", "latest", f"train.total_steps={step + 4}"), timeout=600)
    ok = r.returncode == 0 or ("--take-over" in r.stderr and "999999" in r.stderr)
    ok = ok and "Traceback" not in r.stderr
    out.append(
        Result("locks-dead-pid", ok, f"exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][-120:]}")
    )

    # a failed run: lr so large the weights are wrecked after the update -> non-zero, never `finished`
    f = root / "failed"
    r = run(train_cmd(*TINY, "train.total_steps=6", "optim.lr=1e30", "--run-dir", str(f)), timeout=600)
    sts = statuses(f)
    state = sts[-1]["state"] if sts else "?"
    ok = r.returncode != 0 and state == "failed" and "Traceback" not in r.stderr
    from hrm.run.ckpt_index import list_checkpoints

    wrecked = []
    for c in list_checkpoints(f / "checkpoints"):
        import torch

        m = torch.load(c.path, map_location="cpu", weights_only=True)["model"]
        norm = float(sum(float(v.double().pow(2).sum()) for v in m.values() if v.is_floating_point()) ** 0.5)
        if not norm < 1e6:
            wrecked.append(f"{c.path.name} norm {norm:.3g}")
    ok = ok and not wrecked
    out.append(Result("exit-failed", ok, f"lr=1e30: exit {r.returncode}, state {state}, wrecked kept: {wrecked}"))
    return out
