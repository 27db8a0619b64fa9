"""What a screen may use of the app: the whole of it, typed, so no screen reaches into app state.

`HrmApp` implements it; screens get it from `host(self)`. The attached run is held once, in the app's
`attached_run` reactive: the dashboard watches it, every other screen changes it only through
`attach` / `forget`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from textual.dom import DOMNode


class AppHost(Protocol):
    runs_root: Path
    readonly: bool
    clock: Callable[[], float]
    child_env: dict[str, str] | None  # environment of launched trainers (None: inherit ours)

    @property
    def attached_run(self) -> Path | None:
        """The run the dashboard shows (None: none yet)."""
        ...

    def attach(self, run_dir: Path, *, reload: bool = False) -> None:
        """Show `run_dir` on the dashboard; `reload` replays its events even if it is shown already."""
        ...

    def forget(self, run_dir: Path) -> None:
        """`run_dir` is gone (deleted): detach from it if attached."""
        ...

    def back(self) -> None:
        """Leave the picker or the runs list: the dashboard when a run is attached, else the other list."""
        ...

    def cuda_missing(self) -> str | None:
        """Why this machine cannot train on CUDA, or None when it can (probed once per app start)."""
        ...

    def set_sampling(self, on: bool) -> None:
        """Let the app sample NVML/host itself (on) or not (a live run reports its own samples)."""
        ...


def host(node: DOMNode) -> AppHost:
    return cast(AppHost, node.app)
