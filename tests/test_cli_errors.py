"""Every command-line tool, run as a real process on bad inputs (a missing file, a directory where a
file belongs and the reverse, garbage bytes, a checkpoint of our own trainer cut in half, a foreign
.pt, a full disk): a non-zero exit, no traceback, and at most two lines that name the file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.train import TINY, proc_env, run, train_cmd

pytestmark = pytest.mark.slow  # ~35 tool processes, each importing torch

REPO = Path(__file__).resolve().parents[1]
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")  # the trainer's own log lines

_ENTRY = {
    "hrm-train": "from hrm.cli import train_main as m",
    "hrm-eval": "from hrm.cli import eval_main as m",
    "hrm-data": "from hrm.cli import data_main as m",
    "hrm-export": "from hrm.cli import export_main as m",
    "hrm-tui": "from hrm_tui.__main__ import main as m",
}


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    code = f"import sys; {_ENTRY[name]}; sys.exit(m())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=proc_env(), capture_output=True, text=True, timeout=300
    )


def snapshot(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


class Files:
    """A finished run of our trainer and bad inputs made from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.before: dict[Path, dict[Path, bytes]] = {}
        proc = run(train_cmd(*TINY, "train.total_steps=2", "--run-dir", str(self.run)), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        self.ckpt = sorted((self.run / "checkpoints").glob("step-*.pt"))[-1]
        self.dataset = Path(json.loads((self.run / "events.jsonl").read_text().splitlines()[0]).get("data_path", ""))
        self.missing = root / "no-such-file.pt"
        self.adir = root / "a-directory"
        self.adir.mkdir()
        self.garbage = root / "garbage.bin"
        self.garbage.write_bytes(bytes(range(256)) * 20)
        self.truncated = root / "truncated.pt"
        data = self.ckpt.read_bytes()
        self.truncated.write_bytes(data[: len(data) // 2])
        self.foreign = root / "foreign.pt"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, torch; torch.save({'state_dict': {'fc.weight': torch.ones(3, 3)}, 'epoch': 7}, sys.argv[1])",
                str(self.foreign),
            ],
            check=True,
        )
        self.garbage_yaml = root / "garbage.yaml"
        self.garbage_yaml.write_bytes(b"\xff\xfe\x00: [unclosed\n")
        self.garbage_dataset = root / "garbage-dataset"
        for split in ("train", "test"):
            (self.garbage_dataset / split).mkdir(parents=True)
            (self.garbage_dataset / split / "dataset.json").write_bytes(b"\x00garbage{")
        self.garbage_run = root / "garbage-run"
        self.garbage_run.mkdir()
        (self.garbage_run / "events.jsonl").write_bytes(bytes(range(256)) * 4)
        (self.garbage_run / "control.sock").write_bytes(b"not a socket")
        self.garbage_csv = root / "garbage-csv"
        self.garbage_csv.mkdir()
        for split in ("train", "test"):
            (self.garbage_csv / f"{split}.csv").write_bytes(b"\xff\xfe\x00\x01garbage,,\n\x00")

    def run_copy(self, config: bytes | None = None) -> Path:
        dst = self.root / f"run-copy-{len(list(self.root.glob('run-copy-*')))}"
        shutil.copytree(self.run, dst)
        if config is not None:
            (dst / "config.yaml").write_bytes(config)
        self.before[dst] = snapshot(dst)
        return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("cli-errors"))


# (tool, arguments, the path the message must name); f = the Files fixture
Case = tuple[str, Callable[[Files], list[str]], Callable[[Files], Path]]
BAD_CKPTS = ("missing", "adir", "garbage", "truncated", "foreign")
CASES: dict[str, Case] = {}
for bad in BAD_CKPTS:
    CASES[f"train-resume-{bad}"] = (
        "hrm-train",
        lambda f, b=bad: ["--run-dir", str(f.run_copy()), "--resume", str(getattr(f, b))],
        lambda f, b=bad: getattr(f, b),
    )
    CASES[f"eval-checkpoint-{bad}"] = (
        "hrm-eval",
        lambda f, b=bad: ["--checkpoint", str(getattr(f, b)), "--data", str(f.dataset)],
        lambda f, b=bad: getattr(f, b),
    )
for bad in ("missing", "adir", "garbage_yaml"):
    CASES[f"train-preset-{bad}"] = (
        "hrm-train",
        lambda f, b=bad: [str(getattr(f, b)) + ("" if b == "garbage_yaml" else "/x.yaml")],
        lambda f, b=bad: getattr(f, b),
    )
CASES.update(
    {
        "train-config-garbage": (
            "hrm-train",
            lambda f: ["--run-dir", str(f.run_copy(config=f.garbage.read_bytes())), "--resume", "latest"],
            lambda f: Path("config.yaml"),
        ),
        "train-init-from-foreign": (
            "hrm-train",
            lambda f: [
                *TINY,
                "train.total_steps=2",
                f"train.init_from={f.foreign}",
                "--run-dir",
                str(f.root / "r-init"),
            ],
            lambda f: f.foreign,
        ),
        "eval-data-missing": (
            "hrm-eval",
            lambda f: ["--checkpoint", str(f.ckpt), "--data", str(f.missing)],
            lambda f: f.missing,
        ),
        "eval-data-file": (
            "hrm-eval",
            lambda f: ["--checkpoint", str(f.ckpt), "--data", str(f.garbage)],
            lambda f: f.garbage,
        ),
        "eval-data-garbage": (
            "hrm-eval",
            lambda f: ["--checkpoint", str(f.ckpt), "--data", str(f.garbage_dataset)],
            lambda f: f.garbage_dataset,
        ),
        "data-show-missing": ("hrm-data", lambda f: ["show", str(f.missing)], lambda f: f.missing),
        "data-show-file": ("hrm-data", lambda f: ["show", str(f.garbage)], lambda f: f.garbage),
        "data-show-garbage": ("hrm-data", lambda f: ["show", str(f.garbage_dataset)], lambda f: f.garbage_dataset),
        "data-csv-garbage": (
            "hrm-data",
            lambda f: ["sudoku", "--out", str(f.root / "out-csv"), "--from-csv", str(f.garbage_csv), "--quiet"],
            lambda f: f.garbage_csv,
        ),
        "data-csv-missing": (
            "hrm-data",
            lambda f: ["maze", "--out", str(f.root / "out-csv2"), "--from-csv", str(f.missing), "--quiet"],
            lambda f: f.missing,
        ),
        "export-missing": (
            "hrm-export",
            lambda f: [str(f.missing), "--csv", str(f.root / "o.csv")],
            lambda f: f.missing,
        ),
        "export-empty-dir": ("hrm-export", lambda f: [str(f.adir), "--csv", str(f.root / "o.csv")], lambda f: f.adir),
        "export-garbage": (
            "hrm-export",
            lambda f: [str(f.garbage_run), "--csv", str(f.root / "o.csv")],
            lambda f: f.garbage_run / "events.jsonl",
        ),
        "export-foreign": (
            "hrm-export",
            lambda f: [str(f.foreign), "--csv", str(f.root / "o.csv")],
            lambda f: f.foreign,
        ),
        "export-to-directory": ("hrm-export", lambda f: [str(f.run), "--csv", str(f.adir)], lambda f: f.adir),
        "export-disk-full": ("hrm-export", lambda f: [str(f.run), "--csv", "/dev/full"], lambda f: Path("/dev/full")),
        "ctl-missing": ("hrm-train", lambda f: ["ctl", str(f.missing), "pause"], lambda f: f.missing),
        "ctl-file": ("hrm-train", lambda f: ["ctl", str(f.garbage), "status"], lambda f: f.garbage),
        "ctl-not-a-socket": (
            "hrm-train",
            lambda f: ["ctl", str(f.garbage_run), "pause"],
            lambda f: f.garbage_run / "control.sock",
        ),
        "ctl-status-garbage": (
            "hrm-train",
            lambda f: ["ctl", str(f.garbage_run), "status"],
            lambda f: f.garbage_run,
        ),
        "tui-attach-missing": ("hrm-tui", lambda f: ["attach", str(f.missing)], lambda f: f.missing),
        "tui-attach-file": ("hrm-tui", lambda f: ["attach", str(f.garbage)], lambda f: f.garbage),
        "tui-runs-root-file": ("hrm-tui", lambda f: ["--runs-root", str(f.garbage)], lambda f: f.garbage),
    }
)


Outcome = tuple[list[str], subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def outcomes(files: Files) -> dict[str, Outcome]:
    """Every case's arguments and process, three at a time: most of each is importing torch."""
    argvs = {case: (name, args(files)) for case, (name, args, _) in CASES.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        running = {case: (argv, pool.submit(tool, name, *argv)) for case, (name, argv) in argvs.items()}
        return {case: (argv, job.result()) for case, (argv, job) in running.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_or_two_lines_naming_the_file(files: Files, outcomes: dict[str, Outcome], case: str) -> None:
    _name, _args, named = CASES[case]
    argv, proc = outcomes[case]
    said = [line for line in proc.stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert 1 <= len(said) <= 2, said
    path = named(files)
    assert any(str(path) in line or path.name in line for line in said), (str(path), said)
    if case.startswith("train-resume-"):  # a refused resume changes nothing in the run; its log only grows
        run_dir = Path(argv[argv.index("--run-dir") + 1])
        after, before = snapshot(run_dir), files.before[run_dir]
        log = run_dir / "trainer.log"
        assert after[log].startswith(before.pop(log)) and {p: after[p] for p in before} == before
        assert set(after) == set(before) | {log}


def test_debug_shows_the_traceback_and_the_same_message(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\x00\x01 not json\n")
    plain = tool("hrm-export", str(events), "--csv", str(tmp_path / "o.csv"))
    debug = tool("hrm-export", str(events), "--csv", str(tmp_path / "o.csv"), "--debug")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert plain.stderr.strip().splitlines()[-1] == debug.stderr.strip().splitlines()[-1]
    assert f"{events}: not an events file" in plain.stderr
    assert not (tmp_path / "o.csv").exists()  # refused before anything was written


def test_a_refused_export_leaves_an_existing_output_alone(files: Files) -> None:
    out = files.root / "keep.csv"
    out.write_text("precious\n")
    proc = tool("hrm-export", str(files.garbage_run), "--csv", str(out))
    assert proc.returncode == 2 and out.read_text() == "precious\n"


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 256 KiB filesystem (tmpfs; needs root with mount rights, else skipped) for a full disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_named_and_the_earlier_output_kept(files: Files, full_disk: Path) -> None:
    out = full_disk / "metrics.csv"
    out.write_text("yesterday's table\n")
    with open(full_disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
        while True:
            filler.write(b"\0" * 4096)
    proc = tool("hrm-export", str(files.run), "--csv", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"hrm-export: {out}: no space left on device; free space there (or choose another location) and run again"
    )
    assert out.read_text() == "yesterday's table\n" and sorted(p.name for p in full_disk.iterdir()) == [
        "filler",
        "metrics.csv",
    ]


def test_a_dataset_build_on_a_full_disk_names_it_and_leaves_nothing(full_disk: Path) -> None:
    out = full_disk / "maze"
    proc = tool(
        "hrm-data", "maze", "--out", str(out), "--level", "easy", "--train", "2000", "--test", "2000", "--quiet"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{out}: no space left on device" in proc.stderr and "nothing was written" in proc.stderr
    assert list(full_disk.iterdir()) == []
