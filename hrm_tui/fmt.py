"""Numbers as the app shows them: sizes, durations, percentages; "—" for what is unknown."""

from __future__ import annotations

import math

UNKNOWN = "—"


def _known(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pct(v: object, digits: int = 1) -> str:
    return f"{v * 100:.{digits}f} %" if _known(v) else UNKNOWN  # type: ignore[operator]


def num(v: object, fmt: str = ".3g") -> str:
    return format(v, fmt) if _known(v) else UNKNOWN


def signed_points(v: object) -> str:
    """A change of a fraction in percentage points, with its sign ("+2.4 pp")."""
    return f"{v * 100:+.1f} pp" if _known(v) else UNKNOWN  # type: ignore[operator]


def human_bytes(n: float | None) -> str:
    if not isinstance(n, (int, float)):
        return "N/A"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_gib(n: float | None) -> str:
    return f"{n / 2**30:.1f}" if isinstance(n, (int, float)) else "N/A"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
