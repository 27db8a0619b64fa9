"""Console entry points: hrm-train, hrm-data, hrm-eval (each dispatches to its module)."""

from __future__ import annotations

import sys


def _not_ready(name: str) -> int:
    print(f"{name}: not ready yet in this build", file=sys.stderr)
    return 2


def train_main(argv: list[str] | None = None) -> int:
    return _not_ready("hrm-train")


def data_main(argv: list[str] | None = None) -> int:
    return _not_ready("hrm-data")


def eval_main(argv: list[str] | None = None) -> int:
    return _not_ready("hrm-eval")
