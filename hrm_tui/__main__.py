"""`hrm-tui [--runs-root DIR] [--readonly]` and `hrm-tui attach RUN [--readonly]`.

Without `attach`, the app re-attaches to the run it showed last under the same runs root while that
run's trainer lives (remembered in hrm_tui.lastrun's file); otherwise it opens the runs list, or the
preset picker when there are no runs yet."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hrm-tui", description="Launch, watch and steer HRM training runs.")
    parser.add_argument(
        "--runs-root",
        type=Path,
        default=Path(os.environ.get("HRM_RUNS_ROOT", "runs")),
        help="where runs live (default: $HRM_RUNS_ROOT or ./runs, as hrm-train)",
    )
    parser.add_argument("--readonly", action="store_true", help="watch only: hide every control")
    sub = parser.add_subparsers(dest="command")
    attach = sub.add_parser("attach", help="open one run directory directly")
    attach.add_argument("run", type=Path, help="a run directory (or a run id under --runs-root)")
    attach.add_argument("--readonly", action="store_true", dest="attach_readonly")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from hrm.run.errors import run_tool  # one way for every tool to fail: a line, never a traceback

    sys.exit(run_tool("hrm-tui", _main, argv))


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.runs_root.exists() and not args.runs_root.is_dir():
        print(
            f"hrm-tui: --runs-root {args.runs_root} is a file, not a directory: give the folder runs live in",
            file=sys.stderr,
        )
        return 2
    run_dir = None
    if args.command == "attach":
        run_dir = args.run if args.run.is_dir() else args.runs_root / args.run
        if not run_dir.is_dir():
            print(
                f"hrm-tui: no run directory {args.run} (nor {run_dir}): give a path to a run "
                f"directory, or a run id under --runs-root",
                file=sys.stderr,
            )
            return 2
        run_dir = run_dir.resolve()
    from hrm_tui import lastrun
    from hrm_tui.app import HrmApp  # after argument errors: they need no Textual start-up

    readonly = args.readonly or getattr(args, "attach_readonly", False)
    app = HrmApp(args.runs_root.resolve(), attach=run_dir, readonly=readonly, last_run_file=lastrun.default_path())
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    main()
