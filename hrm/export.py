"""`hrm-export`: a run's events as a table (CSV or Parquet), or mirrored to TensorBoard / W&B.

    hrm-export RUN --csv [OUT] [--kinds train,eval]      (no OUT, or -: stdout)
    hrm-export RUN --parquet OUT
    hrm-export RUN --tensorboard DIR | --wandb DIR

RUN is a run directory (or its events.jsonl). One row per event; the columns are `kind`, `step`,
`t` and then the union of the events' scalar fields in first-seen order. Nested fields are
flattened with dots (`gpus.0.gpu_util`, `config.train.seed`), short lists of numbers by index
(`act_steps_hist.3`); token lists (`samples`) are left out. After a resume, the abandoned
train/eval rows (step > the resumed step) are dropped, as every reader of the run does.
Torch-free.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hrm.run.errors import ToolError, reading, writing
from hrm.run.layout import events_path

__all__ = ["main", "event_rows", "flatten_event", "write_csv", "write_parquet"]

_BASE = ("kind", "step", "t")
KINDS = ("run", "train", "eval", "system", "checkpoint", "status", "log")
_MAX_LIST = 64  # longer lists (token sequences) are not table material
_SKIP = frozenset({"v", "samples"})  # format version; puzzle token lists


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def flatten_event(event: dict[str, Any]) -> dict[str, Any]:
    """One event as a flat {column: scalar} dict (see the module docstring for the rules)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if _scalar(value):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list) and len(value) <= _MAX_LIST:
            if all(_scalar(v) for v in value) or all(isinstance(v, dict) for v in value):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{i}", v)

    for key, value in event.items():
        if key not in _SKIP:
            walk(str(key), value)
    return out


def event_rows(events_path: str | Path, kinds: set[str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of the run's events, superseded steps dropped, filtered by kind."""
    from hrm.run.events import drop_superseded, read_events

    rows = [
        flatten_event(e) for e in drop_superseded(read_events(events_path)) if kinds is None or e.get("kind") in kinds
    ]
    columns: dict[str, None] = dict.fromkeys(_BASE)
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), rows


def write_csv(path: str | Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Missing and null cells are empty; floats keep every digit (repr round-trips). Path "-": stdout."""
    with contextlib.ExitStack() as stack:
        f: TextIO = (
            sys.stdout
            if str(path) == "-"
            else stack.enter_context(open(stack.enter_context(_replaced(path)), "w", newline="", encoding="utf-8"))
        )
        w = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="raise")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        f.flush()


def _column_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    return "string"


def write_parquet(path: str | Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """One typed column per field (int64 / float64 / bool / string; nulls where absent)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'hrm-tui[parquet]' (or use --csv)") from exc
    arrays = {}
    for col in columns:
        values = [row.get(col) for row in rows]
        kind = _column_type(values)
        if kind == "float64":
            values = [None if v is None else float(v) for v in values]
        elif kind == "string":
            values = [None if v is None else str(v) for v in values]
        arrays[col] = pa.array(values, type=getattr(pa, kind)())
    with _replaced(path) as tmp:
        pq.write_table(pa.table(arrays), str(tmp))


@contextlib.contextmanager
def _replaced(path: str | Path) -> Iterator[Path]:
    """A temp file beside `path` that replaces it once the block succeeds: a failed write (a full
    disk) leaves no partial table and whatever `path` held before. Not for devices and pipes."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if path.exists() and not path.is_file():  # a device or a pipe (/dev/stdout): write to it, never replace it
        yield path
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _events_file(run: str) -> Path:
    p = Path(run)
    if p.is_dir():
        p = events_path(p)
    if not p.is_file():
        raise ToolError(f"{p}: no events file there; give a run directory (runs/<run-id>) or its events.jsonl")
    return p


def _check_events(path: Path) -> None:
    """A file with bytes but not one event line is not a run's events file (a .pt, garbage): say so
    rather than write an empty table."""
    from hrm.run.events import read_events

    with reading(path, "events file"):
        if path.stat().st_size and not read_events(path):
            raise ToolError(
                f"{path}: not an events file (no JSON event line in it); give a run directory or its events.jsonl"
            )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hrm-export", description="Export a run's metrics as a table, or mirror them to TensorBoard / W&B."
    )
    ap.add_argument("run", help="run directory (or its events.jsonl)")
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument(
        "--csv", metavar="OUT", nargs="?", const="-", help="write a CSV table to OUT (no OUT, or -: to stdout)"
    )
    out.add_argument("--parquet", metavar="OUT", help="write a Parquet table (needs pyarrow)")
    out.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files into DIR")
    out.add_argument("--wandb", metavar="DIR", help="write an offline W&B run under DIR (sync with `wandb sync`)")
    ap.add_argument(
        "--kinds", default="train,eval", help="event kinds to export, comma-separated, or 'all' (default: train,eval)"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = None if args.kinds.strip() == "all" else {k.strip() for k in args.kinds.split(",") if k.strip()}
    unknown = sorted((kinds or set()) - set(KINDS))
    if unknown or kinds == set():
        print(
            f"hrm-export: --kinds {args.kinds!r}: unknown kind {', '.join(unknown) or '(none given)'}; "
            f"use a comma-separated subset of {','.join(KINDS)} or 'all'",
            file=sys.stderr,
        )
        return 2
    events = _events_file(args.run)
    _check_events(events)
    if args.tensorboard or args.wandb:
        from hrm.train.sinks import TensorBoardSink, WandbSink, replay

        out = args.tensorboard or args.wandb
        with writing(out):
            sink = (
                TensorBoardSink(args.tensorboard)
                if args.tensorboard
                else WandbSink(args.wandb, name=events.parent.name)
            )
            try:
                n = replay(events, sink, kinds)
            finally:
                sink.close()
        print(f"mirrored {n} events to {out}")
        return 0
    with reading(events, "events file"):
        columns, rows = event_rows(events, kinds)
    out = args.csv or args.parquet
    try:
        with writing(out):
            if args.csv:
                write_csv(args.csv, columns, rows)
            else:
                write_parquet(args.parquet, columns, rows)
    except ImportError as exc:
        raise ToolError(str(exc)) from None
    # the CSV may be on stdout: the note goes to stderr then
    print(
        f"wrote {len(rows)} rows x {len(columns)} columns to {'stdout' if out == '-' else out}",
        file=sys.stderr if out == "-" else sys.stdout,
    )
    return 0


if __name__ == "__main__":
    from hrm.run.errors import run_tool

    sys.exit(run_tool("hrm-export", main))
