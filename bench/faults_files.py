"""Fault battery scenarios on files and the control socket: corrupt and foreign files against every
CLI (on copies of a run our trainer wrote), and abuse of a live trainer's control socket."""

from __future__ import annotations

import json
import pickle
import random
import resource
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from faults_common import Result, changed, refusal_problem, tool, tree_hash
from support.train import TINY, kill_group, last_train_step, run, show, start, statuses, train_cmd, wait_for
from test_control_abuse import ABUSE, _exchange_or_closed, _idle_connections

from hrm.run.control_client import send_command

CK2, CK4 = "checkpoints/step-00000002.pt", "checkpoints/step-00000004.pt"


def _half(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))


def _torch_save(obj_code: str, p: Path) -> None:
    code = f"import sys, torch; torch.save({obj_code}, sys.argv[1])"
    r = run([sys.executable, "-c", code, str(p)])
    assert r.returncode == 0, r.stderr


FOREIGN = {
    "random-tensors": "{'a': torch.randn(7, 3), 'b': torch.randn(2)}",
    "reference-state-dict": "{'_orig_mod.model.inner.embed_tokens.embedding_weight': torch.randn(11, 32), "
    "'_orig_mod.model.inner.lm_head.weight': torch.randn(11, 32)}",
}


def _make(base: Path, root: Path, name: str, harm: Callable[[Path], None]) -> Path:
    d = root / f"files-{name}"
    shutil.copytree(base, d)
    harm(d)
    return d


def _harms() -> dict[str, Callable[[Path], None]]:
    def foreign(kind: str) -> Callable[[Path], None]:
        def h(d: Path) -> None:
            p = d / "foreign.pt"
            if kind == "pickle":
                p.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "epoch": 3}))
            else:
                _torch_save(FOREIGN[kind], p)

        return h

    return {
        "ckpt-half": lambda d: _half(d / CK4),
        "ckpt-flip": lambda d: _flip(d / CK4),
        "foreign-random-tensors": foreign("random-tensors"),
        "foreign-pickle": foreign("pickle"),
        "foreign-reference": foreign("reference-state-dict"),
        "index-garbage": lambda d: (d / "checkpoints/index.json").write_bytes(b"\x00{not json]]"),
        "state-garbage": lambda d: (d / "state.json").write_bytes(b"\xff\xfegarbage{"),
        "events-torn": lambda d: open(d / "events.jsonl", "ab").write(b'{"kind": "train", "step": 5, "lo'),
        "config-garbage": lambda d: (d / "config.yaml").write_bytes(b"\xff\xfe\x00: [unclosed\nmodel: {"),
    }


HARMED = {"index": "index.json", "state": "state.json", "events": "events.jsonl", "config": "config.yaml"}


def _tools(d: Path, harm: str, dataset: str) -> list[tuple[list[str], str | None, str, bool]]:
    """(tool argv, the file a refusal must name, what is expected, in --quick): `refuse` (one or two
    lines, non-zero, nothing changed), `fallback` (exit 0, naming the skipped file), `any` (succeed, or
    refuse as one or two lines; never a traceback; nothing changed unless it resumed)."""
    on_ckpt = harm.startswith(("ckpt", "foreign"))
    ck = str(d / ("foreign.pt" if harm.startswith("foreign") else CK4))
    named = Path(ck).name if on_ckpt else HARMED[harm.split("-")[0]]
    cfg = "refuse" if harm == "config-garbage" else "any"
    out = [
        (["hrm-train", "--run-dir", str(d), "--resume", ck], named, "refuse" if on_ckpt else cfg, on_ckpt),
        (["hrm-eval", "--checkpoint", ck, "--max-examples", "8"], named, "refuse" if on_ckpt else "any", on_ckpt),
    ]
    if harm.startswith("ckpt"):
        out.append((["hrm-eval", "--checkpoint", ck, "--data", dataset, "--max-examples", "8"], named, "refuse", False))
    if not harm.startswith("foreign"):
        latest = "fallback" if on_ckpt else cfg
        out += [
            (["hrm-train", "--run-dir", str(d), "--resume", "latest"], named, latest, True),
            (["hrm-export", str(d), "--csv", str(d.parent / f"{d.name}.csv")], named, "any", not on_ckpt),
            (["hrm-train", "ctl", str(d), "status"], named, "any", not on_ckpt),
            (["hrm-tui", "attach", str(d)], named, "any", harm == "config-garbage"),
        ]
    return out


def _check(d: Path, argv: list[str], named: str, expect: str) -> str | None:
    before = tree_hash(d)
    t = tool(argv[0], *argv[1:], timeout=25 if argv[0] == "hrm-tui" else 300)
    after = tree_hash(d)
    resumed = "--resume" in argv and t.rc == 0
    if "Traceback" in t.text:
        return "traceback: " + " | ".join(ln for ln in t.err.strip().splitlines()[-2:])[:150]
    if expect == "refuse":
        return refusal_problem(t, named) or (f"changed {changed(before, after)}" if before != after else None)
    if expect == "fallback":
        if t.rc != 0:
            return f"no fallback to an older checkpoint: exit {t.rc}: {t.err.strip()[-150:]}"
        if not [ln for ln in t.text.splitlines() if named in ln and "skip" in ln.lower()]:
            return f"resumed without a line saying it skipped {named}"
    elif t.rc not in (0, None):  # a refusal is allowed here, as one or two lines naming the file
        if why := refusal_problem(t, named):
            return why
    if not resumed and before != after:
        return f"changed {changed(before, after)}"
    if resumed:
        bad = [ln for ln in (d / "events.jsonl").read_bytes().splitlines() if not _parses(ln)]
        if len(bad) > 1 or (bad and not bad[0].endswith(b'"lo')):
            return f"events.jsonl after the resume has unparseable lines: {bad[-1][:80]!r}"
    return None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def corrupt_files(root: Path, quick: bool) -> list[Result]:
    base = root / "files-base"
    r = run(train_cmd(*TINY, "train.total_steps=4", "train.checkpoint_interval=2", "--run-dir", str(base)), 900)
    if r.returncode != 0:
        return [Result("files", False, f"base run failed: {r.stderr.strip()[-200:]}")]
    run_event = next(e for e in map(json.loads, (base / "events.jsonl").read_text().splitlines()) if e["kind"] == "run")
    dataset = str(run_event["dataset"]["path"])
    out: list[Result] = []
    for harm, fn in _harms().items():
        fails: list[str] = []
        cases = [c for c in _tools(base, harm, dataset) if c[3] or not quick]
        for i, (argv, named, expect, _) in enumerate(cases):
            d = _make(base, root, f"{harm}-{i}", fn)
            argv = [a.replace(str(base), str(d)) for a in argv]
            why = _check(d, argv, named, expect)
            if why:
                fails.append(f"{' '.join(argv[:2])} {argv[-1]}: {why}".replace(str(d), "RUN"))
        n = len(cases)
        out.append(Result(f"files-{harm}", not fails, "; ".join(fails) or f"{n} tools: clean answers, nothing changed"))
    return out + _dataset_files(root, Path(dataset), base / CK2)


DATA_HARMS: dict[str, tuple[str, Callable[[Path], None]]] = {  # done to both splits (show reads train)
    "inputs-half": ("all__inputs.npy", _half),
    "meta-garbage": ("dataset.json", lambda p: p.write_bytes(b"\x00{garbage")),
    "labels-foreign": ("all__labels.npy", lambda p: __import__("numpy").save(p, __import__("numpy").ones(3))),
}


def _dataset_files(root: Path, dataset: Path, ckpt: Path) -> list[Result]:
    """A copy of the run's dataset with one file harmed: `hrm-data show` and `hrm-eval --data` refuse it."""
    out = []
    for harm, (rel, fn) in DATA_HARMS.items():
        d = root / f"data-{harm}"
        shutil.copytree(dataset, d)
        for split in ("train", "test"):
            fn(d / split / rel)
        fails = []
        for argv in (["hrm-data", "show", str(d)], ["hrm-eval", "--checkpoint", str(ckpt), "--data", str(d)]):
            before = tree_hash(d)
            t = tool(argv[0], *argv[1:])
            why = refusal_problem(t, (rel, d.name))
            if why or tree_hash(d) != before:
                fails.append(f"{argv[0]}: {why or 'changed the dataset'}".replace(str(d), "DATA"))
        out.append(
            Result(f"data-{harm}", not fails, "; ".join(fails) or "hrm-data show, hrm-eval --data: clean refusals")
        )
    return out


def _half_open(sock: Path, n: int) -> list[socket.socket]:
    """Connections that sent part of a request and then nothing (no newline, no close)."""
    conns = []
    for i in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock))
        s.sendall(b'{"cmd": "sta' if i % 2 else b"[" * 1000)
        conns.append(s)
    return conns


def socket_abuse(root: Path, rng: random.Random) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))  # ours, not the trainer's
    d, log = root / "socket", root / "socket.log"
    args = [*TINY, "train.total_steps=100000", "train.eval_interval=100000", "train.checkpoint_interval=100000"]
    p = start(
        train_cmd(*args, "--run-dir", str(d)),
        log,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
    )
    conns: list[socket.socket] = []
    bad: list[str] = []

    def advancing(what: str) -> None:
        s = last_train_step(d)
        wait_for(lambda: last_train_step(d) > s + 1 or p.poll() is not None, 120, f"steps after {what}")
        if p.poll() is not None:
            raise AssertionError(f"trainer ended (exit {p.returncode}) after {what}: {show(log)[-300:]}")

    try:
        wait_for(lambda: last_train_step(d) >= 2 or p.poll() is not None, 300, "two steps")
        sock = d / "control.sock"
        payloads = dict(ABUSE)
        for i in range(8):
            payloads[f"random-{i}"] = rng.randbytes(rng.choice([1, 100, 5000, 70000]))
        payloads["huge-line"] = b'{"cmd": "status", "pad": "' + b"x" * 2_000_000 + b'"}\n'
        for name, data in payloads.items():
            try:
                reply = _exchange_or_closed(sock, data, shut=not data.endswith(b"\n"))
            except (ValueError, OSError) as e:  # an unparseable reply, or a timeout waiting for one
                bad.append(f"{name}: {type(e).__name__}")
                continue
            if reply is not None and reply.get("ok") is not False:
                bad.append(f"{name}: replied {str(reply)[:60]}")
        advancing("garbage")
        conns = _half_open(sock, 50)
        advancing("50 half-open connections")
        conns += _idle_connections(sock, 1100, time.monotonic() + 60)
        advancing(f"{len(conns)} idle connections")
        replies: list[dict] = []
        barrier = threading.Barrier(200)

        def client() -> None:
            barrier.wait()
            replies.append(send_command(d, "status", timeout=60))

        threads = [threading.Thread(target=client) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        answered = sum(bool(r.get("ok")) for r in replies)
        if answered < 200:
            bad.append(f"{answered}/200 simultaneous status requests answered")
        advancing("200 simultaneous requests")
        for c in conns:
            c.close()
        conns = []
        r = send_command(d, "stop", timeout=60)
        rc = p.wait(300)
    except AssertionError as e:
        return Result("socket", False, str(e)[:200])
    finally:
        for c in conns:
            c.close()
        kill_group(p)
    last = statuses(d)[-1]["state"]
    if rc != 0 or last not in ("stopped", "finished") or not r.get("ok"):
        bad.append(f"stop: exit {rc}, state {last}")
    if "Traceback" in log.read_text():
        bad.append("traceback in trainer.log")
    return Result("socket", not bad, "; ".join(bad) or f"kept stepping to {last_train_step(d)}; stopped, exit 0")
