"""`python -m hrm.train ...` (also as `torchrun ... -m hrm.train ...`)."""

from __future__ import annotations

import sys

from hrm.run.errors import run_tool
from hrm.train.cli import main

if __name__ == "__main__":
    sys.exit(run_tool("hrm-train", main, parses_debug=True))
