"""Shared pieces of the fault battery (bench/faults.py): real tool processes, run-directory hashes and
the checks every refusal must pass (non-zero exit, no traceback, one or two lines naming the file)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the trainer tests' helpers: proc_env, train_cmd, events, ...

from support.train import proc_env  # noqa: E402

_ENTRY = {
    "hrm-train": "from hrm.cli import train_main as m",
    "hrm-eval": "from hrm.cli import eval_main as m",
    "hrm-data": "from hrm.cli import data_main as m",
    "hrm-export": "from hrm.cli import export_main as m",
    "hrm-tui": "from hrm_tui.__main__ import main as m",
}


@dataclass
class Result:
    name: str
    ok: bool
    reason: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Tool:
    """One finished tool process; `rc` is None when it was still running at its timeout (the app)."""

    argv: list[str]
    rc: int | None
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def tool(name: str, *args: str, timeout: float = 300) -> Tool:
    code = f"import sys; {_ENTRY[name]}; sys.exit(m())"
    argv = [sys.executable, "-c", code, *args]
    try:
        p = subprocess.run(
            argv, cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Tool([name, *args], None, out, err)
    return Tool([name, *args], p.returncode, p.stdout, p.stderr)


def tree_hash(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under root (sockets and the trainer's log left out: the log is
    the trainer's own diary, and a refused command may note itself there)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_socket() and p.name != "trainer.log":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k))


def message_lines(t: Tool) -> list[str]:
    """stderr lines that are the tool's message (the trainer's own timestamped log lines left out)."""
    import re

    log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
    return [ln for ln in t.err.splitlines() if ln.strip() and not log_line.match(ln)]


def refusal_problem(t: Tool, names: str | Path | tuple[str, ...]) -> str | None:
    """Why this refusal breaks the rules, or None: non-zero exit, no traceback, one or two lines, the
    file named (by its name: a message may shorten the directory)."""
    if "Traceback" in t.text:
        return "traceback: " + t.err.strip().splitlines()[-1][:120]
    if t.rc is None:
        return "still running at the timeout"
    if t.rc == 0:
        return "exit 0 on a bad input: " + (t.text.strip().splitlines() or ["(no output)"])[-1][:120]
    lines = message_lines(t)
    if not 1 <= len(lines) <= 2:
        return f"{len(lines)} message lines: " + " | ".join(lines)[:160]
    wanted = [Path(n).name for n in (names if isinstance(names, tuple) else (names,))]
    if not any(n in "\n".join(lines) for n in wanted):
        return f"message does not name {' or '.join(wanted)}: " + " | ".join(lines)[:160]
    return None


def nice_env() -> None:
    """Be kind to the shared machine: lower priority, one thread per process (children inherit both)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    try:
        os.nice(10 - os.nice(0)) if os.nice(0) < 10 else None
    except OSError:
        pass
