"""`hrm-tui` entry point."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print("hrm-tui: not ready yet in this build", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
