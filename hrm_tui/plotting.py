"""Braille line plots and block sparklines rendered to Rich `Text` (pure functions, fixed width).

Our own renderer rather than plotext: it is deterministic (snapshot tests), cheap enough to redraw
a few times a second from 200k points (we sample at most a few hundred), and has no global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][col] within a cell
_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass
class Series:
    xs: Sequence[float]
    ys: Sequence[float]
    style: str
    dots: bool = False  # markers only (eval points), not a line
    marker: str = "●"


def sample_indices(start: int, stop: int, limit: int) -> range | list[int]:
    """At most `limit` indices spread evenly over [start, stop), always keeping the last one."""
    n = stop - start
    if n <= limit:
        return range(start, stop)
    step = n / limit
    out = [start + int(i * step) for i in range(limit)]
    out[-1] = stop - 1
    return out


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def format_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.1e}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def braille_plot(
    series: list[Series],
    width: int,
    height: int,
    *,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
    x_range: tuple[float, float] | None = None,
) -> list[Text]:
    """`height` lines of `width` cells: a y-axis gutter, then the braille canvas."""
    gutter = 8
    cols = max(1, width - gutter)
    rows = max(1, height)
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    pts: list[tuple[list[tuple[float, float]], Series]] = []
    for s in series:
        p = [(float(x), ty(float(y))) for x, y in zip(s.xs, s.ys) if _finite(y) and _finite(x) and (not log_y or y > 0)]
        pts.append((p, s))
    all_pts = [q for p, _ in pts for q in p]
    if not all_pts:
        blank = [Text(" " * width) for _ in range(rows)]
        blank[rows // 2] = Text("no data yet".center(width), style="dim")
        return blank
    x0, x1 = x_range if x_range is not None else (min(q[0] for q in all_pts), max(q[0] for q in all_pts))
    if y_range is not None:
        y0, y1 = ty(y_range[0]), ty(y_range[1])
    else:
        y0 = min(q[1] for q in all_pts)
        y1 = max(q[1] for q in all_pts)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 - x0 < 1e-12:
        x1 = x0 + 1
    pw, ph = cols * 2, rows * 4
    bits = [[0] * cols for _ in range(rows)]
    owner: list[list[str | None]] = [[None] * cols for _ in range(rows)]
    markers: dict[tuple[int, int], str] = {}  # (row, col) -> style of a point marker (eval)

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = round((x - x0) / (x1 - x0) * (pw - 1))
        py = round((y1 - y) / (y1 - y0) * (ph - 1))
        return min(max(px, 0), pw - 1), min(max(py, 0), ph - 1)

    def dot(px: int, py: int, style: str) -> None:
        r, c = py // 4, px // 2
        bits[r][c] |= _DOTS[py % 4][px % 2]
        owner[r][c] = style

    for p, s in pts:
        prev: tuple[int, int] | None = None
        for x, y in p:
            cur = to_px(x, y)
            if s.dots:
                markers[(cur[1] // 4, cur[0] // 2)] = f"{s.marker}{s.style}"
            elif prev is None:
                dot(*cur, s.style)
            else:
                _line(prev, cur, lambda a, b, st=s.style: dot(a, b, st))
            prev = cur
    inv = (lambda v: 10**v) if log_y else (lambda v: v)
    lines: list[Text] = []
    for r in range(rows):
        label = ""
        if r == 0:
            label = format_tick(inv(y1))
        elif r == rows - 1:
            label = format_tick(inv(y0))
        elif r == rows // 2 and rows >= 5:
            label = format_tick(inv((y0 + y1) / 2))
        line = Text()
        line.append(label.rjust(gutter - 1)[: gutter - 1] + "│", style="dim")
        for c in range(cols):
            b = bits[r][c]
            if (r, c) in markers:
                line.append(markers[(r, c)][0], style=markers[(r, c)][1:])
            else:
                line.append(chr(0x2800 + b) if b else " ", style=owner[r][c] or "")
        lines.append(line)
    return lines


def _line(a: tuple[int, int], b: tuple[int, int], plot) -> None:
    (xa, ya), (xb, yb) = a, b
    n = max(abs(xb - xa), abs(yb - ya), 1)
    for i in range(n + 1):
        plot(round(xa + (xb - xa) * i / n), round(ya + (yb - ya) * i / n))


def sparkline(values: Sequence[float], width: int, lo: float = 0.0, hi: float | None = None) -> str:
    """The last `width` values as block characters; unknown values are blanks."""
    vals = list(values)[-width:]
    finite = [v for v in vals if _finite(v)]
    if hi is None:
        hi = max(finite) if finite else 1.0
    span = (hi - lo) or 1.0
    out = []
    for v in vals:
        if not _finite(v):
            out.append(" ")
        else:
            k = int((min(max(v, lo), hi) - lo) / span * (len(_BLOCKS) - 1) + 0.5)
            out.append(_BLOCKS[k])
    return "".join(out).rjust(width)


def bar(fraction: float | None, width: int) -> str:
    if fraction is None or not _finite(fraction):
        return "░" * width
    full = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "█" * full + "░" * (width - full)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not pulled
    towards 0); unknown values are carried over, never averaged in. weight 0 returns the values."""
    if weight <= 0:
        return list(values)
    out: list[float] = []
    acc, n = 0.0, 0
    for v in values:
        if _finite(v):
            acc = acc * weight + (1 - weight) * v
            n += 1
        out.append(acc / (1 - weight**n) if n else float("nan"))
    return out


def ema_last(values: Sequence[float], weight: float) -> float | None:
    """The last EMA value, from enough of the tail that older points weigh < 1e-4."""
    look = len(values) if weight <= 0 else min(len(values), int(10 / max(1e-6, 1 - weight)))
    tail = [v for v in values[len(values) - look :] if _finite(v)]
    return ema(tail, weight)[-1] if tail else None


def x_axis(x0: float, x1: float, width: int, mark: float | None, gutter: int = 8) -> Text:
    """The x axis under a braille plot: the first step at the left, `▲step` at the column of `mark`
    (the current step), the last step at the right when the mark is not there."""
    cols = max(1, width - gutter)
    line = [" "] * cols

    def put(text: str, at: int) -> None:
        at = min(max(0, at), cols - len(text))
        for i, ch in enumerate(text[:cols]):
            line[at + i] = ch

    put(f"{x0:,.0f}", 0)
    span = (x1 - x0) or 1.0
    if mark is not None:
        col = round((mark - x0) / span * (cols - 1))
        right = f"▲{mark:,.0f}"
        if col + len(right) <= cols:
            put(right, col)
        else:  # no room on its right: the number goes before the mark
            put(f"{mark:,.0f}▲", col - len(right) + 1)
    if mark is None or x1 > mark:
        put(f"{x1:,.0f}", cols)
    return Text(" " * (gutter - 5) + "step " + "".join(line), style="dim")
