"""bench/learn.py: its curves, table and summary from events files (synthetic ones: fast), and one real
bench of the tiny preset through the real trainer, its stop and its table checked against the run's events."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from support.train import events

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_learn", REPO / "bench" / "learn.py")
assert _spec and _spec.loader
learn = importlib.util.module_from_spec(_spec)
sys.modules["bench_learn"] = learn
_spec.loader.exec_module(learn)


def write_run(d: Path, preset: str, model: dict[str, int], evs: list[dict[str, Any]]) -> Path:
    d.mkdir(parents=True)
    run = {"kind": "run", "t": 0.0, "step": 0, "task": "sudoku", "config": {"model": model, "run": {"preset": preset}}}
    d.joinpath("events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [run, *evs]))
    return d


def ev(t: float, kind: str, **kw: Any) -> dict[str, Any]:
    return {"t": t, "kind": kind, **kw}


ONE_PASS = {"H_cycles": 1, "L_cycles": 1, "halt_max_steps": 1}
THINK = {"H_cycles": 2, "L_cycles": 2, "halt_max_steps": 4}


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    # one-pass: building 100 s (not counted), running 100..220, eval at 160 (1.0 min) and one of 6 s at 220 (1.9 min)
    a = write_run(
        tmp_path / "a",
        "sudoku-cpu",
        ONE_PASS,
        [
            ev(0, "status", state="building"),
            ev(100, "status", state="running"),
            ev(160, "eval", step=50, changed_accuracy=0.5, exact_accuracy=0.01, act_steps_hist=[256]),
            ev(220, "eval", step=100, changed_accuracy=0.8, exact_accuracy=0.04, act_steps_hist=[256], seconds=6.0),
            ev(221, "status", state="stopped"),
        ],
    )
    # recursive: running 10..70, paused 70..400 (not counted), running again 400..460: 2.0 min at the eval
    b = write_run(
        tmp_path / "b",
        "trm-sudoku-cpu",
        THINK,
        [
            ev(10, "status", state="running"),
            ev(70, "status", state="paused"),
            ev(400, "status", state="running"),
            ev(460, "eval", step=40, changed_accuracy=0.9, exact_accuracy=0.25, act_steps_hist=[3, 0, 50, 203]),
            ev(461, "status", state="stopped"),
        ],
    )
    return a, b


def test_minutes_count_only_the_time_spent_running(runs: tuple[Path, Path]) -> None:
    a, b = learn.report(list(runs))
    assert [r["minutes"] for r in a.rows] == [1.0, 1.9] and a.one_pass is True  # less the 6 s eval
    assert [r["minutes"] for r in b.rows] == [2.0] and b.one_pass is False
    assert (a.preset, b.preset, a.task) == ("sudoku-cpu", "trm-sudoku-cpu", "sudoku")
    assert b.state == "stopped" and b.minutes() == pytest.approx(121 / 60)  # the stop came 1 s later


def test_table_and_summary_carry_the_last_eval_the_gain_and_the_histogram(runs, capsys) -> None:
    assert learn.main(["--report", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    line_a = next(x for x in out.splitlines() if x.startswith("sudoku-cpu "))
    line_b = next(x for x in out.splitlines() if x.startswith("trm-sudoku-cpu "))
    assert line_a.split()[2:6] == ["1.9", "100", "80.0%", "4.0%"] and line_a.split()[6] == "-"
    # exact 25 % against the one-pass run's 4 %: +21.0 points; mean segment (3 + 150 + 812) / 256 = 3.77
    assert line_b.split()[2:8] == ["2.0", "40", "90.0%", "25.0%", "+21.0", "3.77"]
    assert line_b.endswith("1:3 3:50 4:203")
    assert "trm-sudoku-cpu     blanks 90.0% exact 25.0% at step 40 after 2.0 min: target NOT met" in out
    assert "load average" in out


def test_mean_and_histogram_text() -> None:
    assert learn.mean_steps([0, 0, 4]) == "3.00" and learn.mean_steps([]) == "-"
    assert learn.hist_text([0, 2, 0, 1]) == "2:2 4:1" and learn.hist_text([0, 0]) == "-"


def test_a_directory_without_events_is_one_line(tmp_path: Path, capsys) -> None:
    assert learn.main(["--report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "events.jsonl" in err


@pytest.mark.slow
def test_a_real_bench_stops_the_trainer_on_time_and_reports_its_last_eval(tmp_path: Path, capsys) -> None:
    args = ["--presets", "tiny", "--minutes", "0.05", "--every", "0.01", "--runs-root", str(tmp_path)]
    sets = ["train.total_steps=1000000", "train.eval_interval=1000000", "train.eval_max_examples=8"]
    assert learn.main([*args, *(x for s in sets for x in ("--set", s)), "--json", str(tmp_path / "c.json")]) == 0
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    evs = events(run_dir)
    last_status = [e for e in evs if e["kind"] == "status"][-1]
    # stopped by the bench after its minutes, long before its planned steps
    assert "stop command" in last_status["reason"] and last_status["step"] < 1000000
    evals = [e for e in evs if e["kind"] == "eval"]
    assert evals, "the bench asks for a final eval before the stop"
    (curve,) = json.loads((tmp_path / "c.json").read_text())
    last = curve["curve"][-1]
    assert last["step"] == evals[-1]["step"] and last["exact_accuracy"] == evals[-1]["exact_accuracy"]
    assert last["act_steps_hist"] == evals[-1]["act_steps_hist"] and sum(last["act_steps_hist"]) == 8
    assert last["minutes"] >= 0.05
    out = capsys.readouterr().out
    row = next(x for x in out.split("== final")[1].splitlines() if x.startswith("tiny "))
    assert row.split()[3] == str(evals[-1]["step"])
