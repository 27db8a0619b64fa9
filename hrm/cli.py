"""Console entry points. Each imports its module lazily so `hrm-data --help` never pays for torch."""

from __future__ import annotations

import sys


def train_main(argv: list[str] | None = None) -> int:
    from hrm.train.cli import main

    return main(argv)


def data_main(argv: list[str] | None = None) -> int:
    from hrm.data.cli import main

    return main(argv)


def eval_main(argv: list[str] | None = None) -> int:
    from hrm.eval import main

    return main(argv)


def export_main(argv: list[str] | None = None) -> int:
    from hrm.export import main

    return main(argv)


def _exit(code: int | None) -> None:
    sys.exit(code or 0)
