"""hrm-export: CSV / Parquet tables of a run's events, resume-superseded rows dropped, TB mirror."""

from __future__ import annotations

import csv
import sys

import pytest

from hrm.cli import export_main as main  # the entry point: errors become one line and an exit status
from hrm.export import flatten_event
from hrm.run.events import EventWriter, drop_superseded, read_events


def make_run(run_dir):
    """A run that trained to step 4, resumed from step 2 and went on to 4 again, then evaluated."""
    with EventWriter(run_dir / "events.jsonl") as w:
        w.write("run", 0, config={"train": {"seed": 0}}, num_params=1000, resumed_from=None)
        for s in range(1, 5):
            w.write("train", s, loss=1.0 / s, lr=1e-4 * s, accuracy=0.1 * s, count=32, epoch=s / 3)
        w.write(
            "eval",
            4,
            exact_accuracy=0.5,
            accuracy=0.9,
            split="test",
            num_examples=64,
            act_steps_hist=[1, 2, 61],
            samples=[{"input": [1] * 81, "prediction": [2] * 81, "label": [2] * 81}],
        )
        w.write("system", 4, cpu_percent=50.0, rss=10**9, gpus=[{"index": 0, "gpu_util": None}])
        w.write("run", 2, config={"train": {"seed": 0}}, num_params=1000, resumed_from="checkpoints/step-00000002.pt")
        for s in (3, 4):
            w.write(
                "train", s, loss=10.0 + s, lr=1e-4 * s, accuracy=0.2 * s, count=32, epoch=s / 3, grad_norm=float("nan")
            )
        w.write(
            "eval",
            4,
            exact_accuracy=0.75,
            accuracy=0.95,
            split="test",
            num_examples=64,
            act_steps_hist=[0, 0, 64],
            samples=[{"input": [1, 2], "prediction": [2, 2], "label": [2, 2]}],
        )
    return run_dir / "events.jsonl"


def parse(cell: str):
    if cell == "":
        return None
    for conv in (int, float):
        try:
            return conv(cell)
        except ValueError:
            pass
    return cell


def test_csv_round_trips_the_events(tmp_path, capsys):
    events_path = make_run(tmp_path)
    out = tmp_path / "metrics.csv"
    assert main([str(tmp_path), "--csv", str(out)]) == 0
    assert "wrote 5 rows" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [e for e in drop_superseded(read_events(events_path)) if e["kind"] in ("train", "eval")]
    assert [(r["kind"], int(r["step"])) for r in rows] == [(e["kind"], e["step"]) for e in kept]
    assert [float(r["loss"]) for r in rows if r["kind"] == "train"] == [1.0, 0.5, 13.0, 14.0]
    for row, event in zip(rows, kept):
        flat = flatten_event(event)
        assert {k: parse(v) for k, v in row.items() if v != ""} == {k: v for k, v in flat.items() if v is not None}
    header = list(rows[0])
    assert header[:3] == ["kind", "step", "t"] and "act_steps_hist.2" in header
    assert not any(h.startswith("samples") for h in header) and "v" not in header
    assert rows[2]["grad_norm"] == "" and rows[0]["grad_norm"] == ""  # NaN was stored as null


def test_kinds_all_includes_run_and_system_columns(tmp_path):
    make_run(tmp_path)
    out = tmp_path / "all.csv"
    assert main([str(tmp_path / "events.jsonl"), "--csv", str(out), "--kinds", "all"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows].count("run") == 2
    system = next(r for r in rows if r["kind"] == "system")
    assert system["rss"] == "1000000000" and system["gpus.0.index"] == "0" and system["gpus.0.gpu_util"] == ""
    assert rows[0]["config.train.seed"] == "0"


def test_parquet_has_typed_columns(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (pip install 'hrm-tui[parquet]')")
    make_run(tmp_path)
    out = tmp_path / "metrics.parquet"
    assert main([str(tmp_path), "--parquet", str(out)]) == 0
    table = pq.read_table(out)
    assert str(table.schema.field("step").type) == "int64"
    assert str(table.schema.field("loss").type) == "double"
    assert str(table.schema.field("split").type) == "string"
    cols = table.to_pydict()
    assert cols["loss"] == [1.0, 0.5, 13.0, 14.0, None]
    assert cols["exact_accuracy"][-1] == 0.75


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    make_run(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main([str(tmp_path), "--parquet", str(tmp_path / "x.parquet")]) == 2
    assert "pip install 'hrm-tui[parquet]'" in capsys.readouterr().err


def test_unknown_kind_is_one_clear_error(tmp_path, capsys):
    make_run(tmp_path)
    assert main([str(tmp_path), "--csv", str(tmp_path / "x.csv"), "--kinds", "train,evals"]) == 2
    err = capsys.readouterr().err
    assert "unknown kind evals" in err and "run,train,eval" in err
    assert not (tmp_path / "x.csv").exists()


def test_missing_run_is_one_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--csv", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "no events file" in err and "nope" in err


def test_tensorboard_mirror_of_a_resumed_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_run(tmp_path)
    assert main([str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 0
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5), (3, 13.0), (4, 14.0)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/exact_accuracy")] == [(4, 0.75)]


@pytest.mark.parametrize("dash", [[], ["-"]])
def test_csv_without_a_file_name_or_dash_goes_to_stdout(tmp_path, capsys, monkeypatch, dash):
    make_run(tmp_path)
    out = tmp_path / "metrics.csv"
    assert main([str(tmp_path), "--csv", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main([str(tmp_path), "--csv", *dash]) == 0
    got = capsys.readouterr()
    assert got.out == out.read_bytes().decode() and "wrote 5 rows x" in got.err and "to stdout" in got.err
    assert not (tmp_path / "-").exists()


def test_csv_on_stdout_of_a_real_run(tmp_path, capsys):
    """The trainer's own events: one row per train step, its loss and blanks accuracy as the events have them."""
    from hrm.train.cli import main as train

    run_dir = tmp_path / "run"
    assert train(["tiny", "train.total_steps=3", "train.eval_interval=3", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main([str(run_dir), "--csv", "--kinds", "train"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    train = [e for e in read_events(run_dir / "events.jsonl") if e["kind"] == "train"]
    assert [int(r["step"]) for r in rows] == [e["step"] for e in train] == [1, 2, 3]
    for r, e in zip(rows, train):
        assert float(r["loss"]) == e["loss"] and float(r["param_norm"]) == e["param_norm"]
        assert r["changed_accuracy"] == ("" if e["changed_accuracy"] is None else repr(e["changed_accuracy"]))
