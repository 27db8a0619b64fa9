"""Console entry points. Each imports its module lazily so `hrm-data --help` never pays for torch, and
each runs through `hrm.run.errors.run_tool`: a failure is one or two lines naming the file, the problem
and the fix, never a traceback (unless --debug)."""

from __future__ import annotations

from hrm.run.errors import run_tool


def train_main(argv: list[str] | None = None) -> int:
    def main(args: list[str]) -> int:
        from hrm.train.cli import main

        return main(args)

    return run_tool("hrm-train", main, argv, parses_debug=True)


def data_main(argv: list[str] | None = None) -> int:
    def main(args: list[str]) -> int:
        from hrm.data.cli import main

        return main(args)

    return run_tool("hrm-data", main, argv)


def eval_main(argv: list[str] | None = None) -> int:
    def main(args: list[str]) -> int:
        from hrm.eval import main

        return main(args)

    return run_tool("hrm-eval", main, argv)


def export_main(argv: list[str] | None = None) -> int:
    def main(args: list[str]) -> int:
        from hrm.export import main

        return main(args)

    return run_tool("hrm-export", main, argv)
