"""One line for a failed checkpoint or event write (a full disk named as such, with the way out)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def describe_write_error(exc: BaseException, path: Path) -> str:
    """One line for a failed write: a full filesystem is named as such with the way out (torch's
    zip writer reports ENOSPC as "[enforce fail at inline_container.cc] unexpected pos ...")."""
    try:
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    nospace = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        free is not None and free < _NEARLY_FULL_BYTES
    )
    if nospace:
        return (
            f"no space left on device writing {path} ({_human(free)} free on that filesystem); "
            "free some space there (or lower train.keep_last), then continue with --resume latest"
        )
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text} (writing {path})"


# Below this much free space a failed write is put down to a full disk whatever the library said.
_NEARLY_FULL_BYTES = 1 << 20


def _human(n: int | None) -> str:
    if n is None:
        return "unknown space"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
