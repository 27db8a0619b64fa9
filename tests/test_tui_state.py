"""The app's logic without a UI: folding events, run status, drawings, plots, launching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.tui import T0, run_events, write_run

from hrm.run.events import EventTailer, EventWriter
from hrm.run.lock import write_pidfile
from hrm_tui import runs
from hrm_tui.plotting import Series, braille_plot, sample_indices, sparkline
from hrm_tui.runstate import RunState, human_duration

REPO = Path(__file__).resolve().parents[1]


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(x) for x in lines]


def test_fold_train_eval_checkpoint_status() -> None:
    st = RunState()
    st.apply(_events(run_events(300, total=1000, eval_every=100, status="finished")))
    assert st.step == 300 and len(st.steps) == 300 and st.total_steps == 1000
    assert [e["step"] for e in st.evals] == [100, 200, 300]
    assert "samples" not in st.evals[0] and len(st.latest_eval["samples"]) == 2
    assert [c["step"] for c in st.checkpoints] == [100, 200, 300]
    assert st.status == "finished" and st.halt_max_steps == 8
    assert st.seconds_per_step() == pytest.approx(0.5)  # dt = 0.5 s per step in the fixture
    assert st.eta_seconds() == pytest.approx(350.0)
    texts = [line.text for line in st.log]
    assert any("warning" == line.level and "grad norm" in line.text for line in st.log)
    assert any(t.startswith("checkpoint step 300 · 5.2 MB") for t in texts)


def test_train_metrics_over_no_halted_sequences_are_left_out() -> None:
    """count == 0: accuracies are 0/0 in the reference's sums; they must not plot as a drop to 0."""
    st = RunState()
    st.apply(
        [
            {"kind": "train", "step": 1, "t": 1.0, "loss": 2.0, "accuracy": 0.4, "act_steps_mean": 2.0, "count": 8},
            {"kind": "train", "step": 2, "t": 2.0, "loss": 1.9, "accuracy": 0.0, "act_steps_mean": 0.0, "count": 0},
        ]
    )
    assert st.series["loss"][1] == 1.9 and st.series["accuracy"][0] == 0.4
    assert st.series["accuracy"][1] != st.series["accuracy"][1]  # NaN: a gap in the plot
    assert st.latest_act["step"] == 1 and st.latest_train["step"] == 2


def test_resume_drops_superseded_steps() -> None:
    """A run event with resumed_from at step S supersedes train/eval/checkpoint history past S."""
    lines = run_events(300, eval_every=100, status=None)
    resumed = {
        "v": 1,
        "t": T0 + 1000,
        "kind": "run",
        "step": 100,
        "resumed_from": "checkpoints/step-00000100.pt",
        "total_steps": 1000,
        "task": "sudoku",
        "grid": [9, 9],
    }
    after = [{"v": 1, "t": T0 + 1001 + i, "kind": "train", "step": 101 + i, "loss": 9.0} for i in range(5)]
    st = RunState()
    st.apply(_events(lines) + [resumed] + after)
    assert list(st.steps) == list(range(1, 106))
    assert st.series["loss"][-1] == 9.0 and st.series["loss"][99] != 9.0
    assert [e["step"] for e in st.evals] == [100] and [c["step"] for c in st.checkpoints] == [100]
    assert st.step == 105
    # Same answer as the library's own rule, so the app and scripts agree on history.
    from hrm.run.events import drop_superseded

    kept = [e["step"] for e in drop_superseded(_events(lines) + [resumed] + after) if e["kind"] == "train"]
    assert kept == list(st.steps)


def test_tailer_torn_line_and_growth(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("status", 0, state="running")
    with open(path, "a") as f:
        f.write('{"v":1,"t":1.0,"kind":"train","step":1,"lo')  # writer mid-line
    tail = EventTailer(path)
    st = RunState()
    st.apply(tail.read())
    assert st.status == "running" and st.step == 0
    with open(path, "a") as f:
        f.write('ss":0.5}\n')
    st.apply(tail.read())
    assert st.step == 1 and st.series["loss"][-1] == 0.5


def test_history_replay_thins_only_old_train_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hrm_tui import history

    path = tmp_path / "events.jsonl"
    lines = run_events(2000, eval_every=500, status="finished")
    path.write_text("\n".join(lines) + "\n")
    size = path.stat().st_size
    full, offset = history.replay(path, size)
    assert offset == size and len(full.steps) == 2000
    monkeypatch.setattr(history, "FULL_RES_BYTES", size // 4)  # keep the last quarter whole
    monkeypatch.setattr(history, "CHUNK", 4096)
    thin, _ = history.replay(path, size, stride=10)
    assert [e["step"] for e in thin.evals] == [e["step"] for e in full.evals]  # never thinned
    assert [c["step"] for c in thin.checkpoints] == [c["step"] for c in full.checkpoints]
    assert 200 < len(thin.steps) < 1000 and thin.steps[-1] == 2000 and thin.status == "finished"
    recent = [s for s in full.steps if s > thin.steps[-1] - 300]
    assert set(recent) <= set(thin.steps)  # the recent history is whole
    assert any("kept 1 in 10" in line.text for line in thin.log)
    empty, offset = history.replay(tmp_path / "missing.jsonl", 0)
    assert offset == 0 and empty.events_seen == 0


def test_derive_status() -> None:
    assert runs.derive_status("running", alive=True) == "running"
    assert runs.derive_status("paused", alive=True) == "paused"
    assert runs.derive_status("finished", alive=False) == "finished"
    assert runs.derive_status("failed", alive=False) == "failed"
    assert runs.derive_status("stopping", alive=False) == "stopped"
    assert runs.derive_status("running", alive=False) == "died"  # kill -9: no final status
    assert runs.derive_status("unknown", alive=False, has_events=False) == "unknown"
    assert runs.derive_status("unknown", alive=False, has_events=False, has_log=True) == "died"
    assert runs.derive_status("finished", alive=True) == "starting"  # a resume on its way up


def test_run_info_and_list_runs(tmp_path: Path) -> None:
    write_run(tmp_path, "a-done", run_events(50, status="finished"))
    write_run(tmp_path, "b-died", run_events(80, status=None))
    live = write_run(tmp_path, "c-live", run_events(20, status=None))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_pidfile(live, pid=sleeper.pid)
        infos = {i.name: i for i in runs.list_runs(tmp_path)}
        assert infos["a-done"].status == "finished" and infos["a-done"].step == 50
        assert infos["b-died"].status == "died" and not infos["b-died"].alive
        assert infos["c-live"].status == "running" and infos["c-live"].alive
        assert runs.list_runs(tmp_path)[0].name == "c-live"  # live runs first
        with pytest.raises(runs.LaunchError, match="running"):
            runs.delete_run(live)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not runs.run_info(live).alive  # same pid file, process gone: stale, not alive
    # A trainer that exited on bad arguments leaves only trainer.log: `starting` while it may still
    # be importing torch, `died` once the log is older than any start-up.
    bad = tmp_path / "d-bad-args"
    bad.mkdir()
    (bad / "trainer.log").write_text("hrm-train: error: unrecognized arguments: --nope\n")
    assert runs.run_info(bad).status == "starting"
    old = time.time() - runs.STARTUP_GRACE_S - 1
    os.utime(bad / "trainer.log", (old, old))
    assert runs.run_info(bad).status == "died" and not runs.run_info(bad).alive
    runs.delete_run(tmp_path / "a-done")
    assert not (tmp_path / "a-done").exists()


def test_log_tail(tmp_path: Path) -> None:
    (tmp_path / "trainer.log").write_text("".join(f"line {i}\n" for i in range(100)))
    assert runs.log_tail(tmp_path, 3) == ["line 97", "line 98", "line 99"]
    assert runs.log_tail(tmp_path / "missing") == []


def test_train_command_single_and_multi_gpu(tmp_path: Path) -> None:
    one = runs.train_command("tiny", tmp_path, ["train.total_steps=5"])
    assert one == [sys.executable, "-m", "hrm.train", "tiny", "--run-dir", str(tmp_path), "train.total_steps=5"]
    two = runs.train_command("tiny", tmp_path, [], gpus=2)
    assert two[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert two[5:8] == ["-m", "hrm.train", "tiny"]


def test_resume_of_a_torchrun_run_uses_torchrun(tmp_path: Path) -> None:
    from hrm.run.config import apply_overrides, load_preset, save_config

    run = tmp_path / "r"
    run.mkdir()
    assert runs.run_gpus(run) == 1  # no config.yaml
    save_config(apply_overrides(load_preset("tiny"), ["train.gpus=2"]), run / "config.yaml")
    assert runs.run_gpus(run) == 2
    argv = runs.train_command(None, run, ["--resume", "x.pt"], runs.run_gpus(run))
    assert argv[-7:] == ["--nproc_per_node=2", "-m", "hrm.train", "--run-dir", str(run), "--resume", "x.pt"]


def test_new_run_dir_names(tmp_path: Path) -> None:
    d = runs.new_run_dir(tmp_path, "tiny", now=T0)
    assert d == tmp_path / "tiny-20251125-080000"
    with pytest.raises(runs.LaunchError, match="not allowed"):
        runs.new_run_dir(tmp_path, "tiny", name="../escape")
    (tmp_path / "taken").mkdir()
    with pytest.raises(runs.LaunchError, match="already exists"):
        runs.new_run_dir(tmp_path, "tiny", name="taken")


def test_spawn_is_detached_with_output_in_trainer_log(tmp_path: Path) -> None:
    """The launched process has its own session (a closed terminal's SIGHUP never reaches it),
    no stdin, and writes to trainer.log."""
    code = "import os, sys; print('sid', os.getsid(0), 'stdin', sys.stdin.read() == ''); sys.stdout.flush()"
    # The child stays alive until the test has looked (a file it waits for, not a fixed sleep).
    go = tmp_path / "go"
    code += f"\nimport time\nend = time.monotonic() + 60\nwhile not os.path.exists({str(go)!r}) and time.monotonic() < end:\n"
    proc = runs._spawn([sys.executable, "-c", code + "    time.sleep(0.02)"], tmp_path / "r")
    assert runs.trainer_alive(tmp_path / "r")  # ours and starting, before any pid file exists
    go.touch()
    assert proc.wait(60) == 0
    assert not runs.trainer_alive(tmp_path / "r")
    log = (tmp_path / "r" / "trainer.log").read_text()
    assert f"sid {proc.pid} stdin True" in log  # session leader: its sid is its own pid
    assert os.getsid(0) != proc.pid


def test_braille_plot_is_deterministic_and_sized() -> None:
    xs = list(range(100))
    ys = [1.0 / (1 + x) for x in xs]
    a = braille_plot([Series(xs, ys, "red")], 40, 6, log_y=True)
    b = braille_plot([Series(xs, ys, "red")], 40, 6, log_y=True)
    assert [t.plain for t in a] == [t.plain for t in b]
    assert len(a) == 6 and all(len(t.plain) == 40 for t in a)
    assert a[0].plain.startswith("   1.00│") and a[-1].plain.startswith("  0.010│")
    assert "no data yet" in braille_plot([], 30, 3)[1].plain


def test_sample_indices_and_sparkline() -> None:
    idx = list(sample_indices(0, 200_000, 100))
    assert len(idx) == 100 and idx[0] == 0 and idx[-1] == 199_999
    assert list(sample_indices(5, 8, 100)) == [5, 6, 7]
    assert sparkline([0, 50, 100, float("nan")], 4, 0, 100) == "▁▅█ "


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 75, 3 * 3600 + 120, 90000)] == ["5s", "1m15s", "3h02m", "1d01h"]


def test_cli_attach_to_a_missing_run_says_what_to_give(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hrm_tui.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--runs-root", str(tmp_path), "attach", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no run directory nope" in err and "run id under --runs-root" in err


def test_cost_estimates_order_presets() -> None:
    from hrm.run.config import describe, load_preset
    from hrm_tui.costs import estimate

    def est(name: str) -> tuple[float, float]:
        cfg = load_preset(name)
        mem, step = estimate(describe(cfg))
        assert mem.startswith("≈") and mem.endswith(" MiB") and step.startswith("≈") and step.endswith((" s", " ms"))
        value, unit = step[1:].split()
        return float(mem[1:-4].replace(",", "")), float(value) / (1000 if unit == "ms" else 1)

    tiny, small = est("tiny"), est("sudoku-cpu")
    assert tiny[0] < small[0] and tiny[1] < small[1]
    maze = describe(load_preset("maze-hard-1k", ["train.gpus=1"]))
    assert estimate(maze)[0].startswith("≈14") and estimate(maze)[0].endswith(" GiB/GPU")  # 768 mazes on one GPU
    assert estimate(maze, gpu_mem_total=80 * 2**30)[0].endswith("✗ > 80.0 GiB")
    assert estimate(describe(load_preset("sudoku-extreme-1k")), gpu_mem_total=80 * 2**30)[0].endswith("✓")
