"""Small self-contained SVG charts for the conversion report: bars, histograms, curves, points.

Just enough plotting for fq_onnx.report, with no plotting library: a ``Chart`` maps data to
pixels on a linear, logarithmic or categorical x axis, draws marks, and renders one ``<svg>``
element (inline in HTML, or a standalone file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    v = first
    while v <= high + 1e-9 * step:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in [low, high]; with fewer than three, also 2x and 5x them."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0**e for e in range(lo, hi + 1) if low <= 10.0**e <= high]
    if len(decades) >= 3:
        return decades
    return [m * 10.0**e for e in range(lo, hi + 1) for m in (1, 2, 5) if low <= m * 10.0**e <= high]


def short_number(v: float) -> str:
    """Tick label: 1.5k, 20M, 0.25, 1e-05."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    if a < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


class Chart:
    """One plot area with axes. Add marks, then ``svg()``.

    ``x_categories`` makes a categorical x axis (one slot per name, labels turned 45 degrees
    when long); otherwise give ``x_range``. ``y_log``/``x_log`` use a log10 scale.
    """

    def __init__(self, width: int, height: int, *, title: str = "", x_label: str = "", y_label: str = "",
                 x_range: tuple[float, float] | None = None, y_range: tuple[float, float] = (0.0, 1.0),
                 x_categories: Sequence[str] | None = None, x_log: bool = False, y_log: bool = False,
                 y_format: Callable[[float], str] = short_number, x_format: Callable[[float], str] = short_number,
                 y_ticks: int = 5):
        self.width, self.height = width, height
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.categories = list(x_categories) if x_categories is not None else None
        self.x_log, self.y_log = x_log, y_log
        self.x_format, self.y_format, self.y_tick_count = x_format, y_format, y_ticks
        if self.categories is not None:
            x_range = (-0.5, len(self.categories) - 0.5)
        self.x_range = x_range or (0.0, 1.0)
        self.y_range = y_range
        rotate = self.categories is not None and max((len(c) for c in self.categories), default=0) * len(self.categories) * 6.5 > width - 80
        self.rotated = rotate
        label_room = int(min(max((len(c) for c in self.categories), default=0), 24) * 4.6) + 4 if rotate else 0
        self.left, self.right = 62, 14
        self.top = 30 if title else 12
        self.bottom = (40 if x_label else 22) + label_room
        self.marks: list[Callable[[], str]] = []
        self.legend: list[tuple[str, str, str]] = []  # (label, colour, kind)

    # -- coordinates -----------------------------------------------------------------------
    def _scale(self, v: float, lo: float, hi: float, log: bool) -> float:
        if log:
            v, lo, hi = (math.log10(max(t, 1e-300)) for t in (v, lo, hi))
        return (v - lo) / (hi - lo) if hi != lo else 0.5

    def px(self, x: float) -> float:
        return self.left + self._scale(x, *self.x_range, self.x_log) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        y = min(max(y, self.y_range[0]), self.y_range[1]) if not self.y_log else y
        frac = self._scale(y, *self.y_range, self.y_log)
        return self.height - self.bottom - min(max(frac, 0.0), 1.0) * (self.height - self.top - self.bottom)

    # -- marks (drawn when the layout is final: the legend decides the top margin) -----------
    def bars(self, xs: Sequence[float], heights: Sequence[float], width: float, colour: str, label: str = "",
             offset: float = 0.0, base: float | None = None, opacity: float = 1.0, titles: Sequence[str] | None = None):
        """Vertical bars centred at ``xs + offset`` (data units), from ``base`` (y axis minimum) up."""
        base = self.y_range[0] if base is None else base

        def draw() -> str:
            parts = []
            for i, (x, h) in enumerate(zip(xs, heights)):
                if h is None or not math.isfinite(h):
                    continue
                x0, x1 = self.px(x + offset - width / 2), self.px(x + offset + width / 2)
                y0, y1 = self.py(base), self.py(h)
                tip = f"<title>{escape(titles[i])}</title>" if titles else ""
                parts.append(f'<rect x="{_num(x0)}" y="{_num(min(y0, y1))}" width="{_num(max(x1 - x0, 0.5))}" '
                             f'height="{_num(abs(y0 - y1))}">{tip}</rect>')
            return f'<g fill="{colour}" fill-opacity="{opacity}">{"".join(parts)}</g>'

        self._add(draw, label, colour, "box")

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: str, label: str = "", width: float = 1.6,
             dash: str = "", markers: bool = False):
        """A polyline; a non-finite value breaks it."""
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""

        def draw() -> str:
            segments, current = [], []
            for x, y in zip(xs, ys):
                if math.isfinite(x) and math.isfinite(y):
                    current.append(f"{_num(self.px(x))},{_num(self.py(y))}")
                elif current:
                    segments.append(current)
                    current = []
            if current:
                segments.append(current)
            return "".join(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
                           f'stroke-width="{width}"{dash_attr} stroke-linejoin="round"/>' for points in segments)

        self._add(draw, label, colour, "dash" if dash else "line")
        if markers:
            self.points(xs, ys, colour)

    def points(self, xs: Sequence[float], ys: Sequence[float], colour: str, label: str = "", radius: float = 3.5,
               titles: Sequence[str] | None = None, hollow: bool = False):
        style = f'fill="white" stroke="{colour}" stroke-width="1.8"' if hollow else f'fill="{colour}"'

        def draw() -> str:
            parts = []
            for i, (x, y) in enumerate(zip(xs, ys)):
                tip = f"<title>{escape(titles[i])}</title>" if titles else ""
                parts.append(f'<circle cx="{_num(self.px(x))}" cy="{_num(self.py(y))}" r="{radius}">{tip}</circle>')
            return f'<g {style}>{"".join(parts)}</g>'

        self._add(draw, label, colour, "ring" if hollow else "dot")

    def ticks(self, xs: Sequence[float], colour: str, label: str = "", length: float = 9.0):
        """Short vertical marks standing on the x axis (e.g. quantization levels)."""
        def draw() -> str:
            y = self.height - self.bottom
            parts = "".join(f'<line x1="{_num(self.px(x))}" x2="{_num(self.px(x))}" y1="{_num(y)}" y2="{_num(y - length)}"/>'
                            for x in xs if self.x_range[0] <= x <= self.x_range[1])
            return f'<g stroke="{colour}" stroke-width="1.5">{parts}</g>'

        self._add(draw, label, colour, "tick")

    def hline(self, y: float, colour: str, label: str = "", dash: str = "5,4"):
        def draw() -> str:
            return (f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{_num(self.py(y))}" '
                    f'y2="{_num(self.py(y))}" stroke="{colour}" stroke-width="1.2" stroke-dasharray="{dash}"/>')

        self._add(draw, label, colour, "dash")

    def _add(self, draw: Callable[[], str], label: str, colour: str, kind: str) -> None:
        self.marks.append(draw)
        if label:
            self.legend.append((label, colour, kind))

    # -- output ------------------------------------------------------------------------------
    def _axes(self) -> str:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        out = [f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#bbb"/>']
        y_ticks = log_ticks(*self.y_range) if self.y_log else nice_ticks(*self.y_range, self.y_tick_count)
        for t in y_ticks:
            y = self.py(t)
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{_num(y)}" y2="{_num(y)}" stroke="#e3e3e3"/>')
            out.append(f'<text x="{x0 - 5}" y="{_num(y + 4)}" text-anchor="end">{escape(self.y_format(t))}</text>')
        if self.categories is not None:
            for i, name in enumerate(self.categories):
                x = self.px(i)
                if self.rotated:
                    short = name if len(name) <= 24 else "…" + name[-23:]  # the distinct end of long paths
                    out.append(f'<text x="{_num(x)}" y="{y0 + 12}" text-anchor="end" '
                               f'transform="rotate(-45 {_num(x)} {y0 + 12})">{escape(short)}<title>{escape(name)}</title></text>')
                else:
                    out.append(f'<text x="{_num(x)}" y="{y0 + 15}" text-anchor="middle">{escape(name)}</text>')
        else:
            x_ticks = log_ticks(*self.x_range) if self.x_log else nice_ticks(*self.x_range, max(2, (x1 - x0) // 70))
            for t in x_ticks:
                x = self.px(t)
                out.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{y0}" y2="{y0 + 4}" stroke="#888"/>')
                out.append(f'<text x="{_num(x)}" y="{y0 + 16}" text-anchor="middle">{escape(self.x_format(t))}</text>')
        if self.x_label:
            out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.height - 6}" text-anchor="middle">{escape(self.x_label)}</text>')
        if self.y_label:
            yc = (y0 + y1) / 2
            out.append(f'<text x="14" y="{yc:.1f}" text-anchor="middle" transform="rotate(-90 14 {yc:.1f})">'
                       f'{escape(self.y_label)}</text>')
        if self.title:
            out.append(f'<text x="{x0}" y="18" font-weight="600" font-size="13">{escape(self.title)}</text>')
        return "".join(out)

    @staticmethod
    def _item_width(label: str) -> float:
        return 6.3 * len(label) + 30

    def _legend_rows(self) -> list[list[tuple[str, str, str]]]:
        rows, current, used = [], [], 0.0
        for item in self.legend:
            width = self._item_width(item[0])
            if current and used + width > self.width - 16:
                rows.append(current)
                current, used = [], 0.0
            current.append(item)
            used += width
        return rows + ([current] if current else [])

    def _layout_legend(self) -> list[tuple[float, list]]:
        """Rows of the legend with their baseline y; sets the top margin to make room for them."""
        rows = self._legend_rows()
        title_width = 7.5 * len(self.title) + 20 if self.title else 0
        beside = bool(rows) and len(rows) == 1 and title_width + sum(self._item_width(i[0]) for i in rows[0]) \
            <= self.width - self.left - self.right
        below = 0 if beside else len(rows)
        self.top = (30 if self.title else 10) + 18 * below
        first = 23 if beside or not self.title else 41
        return [(first + 18 * i, row) for i, row in enumerate(rows)]

    def _legend(self, rows: list[tuple[float, list]]) -> str:
        out = []
        for y, row in rows:  # right-aligned rows above the plot area
            x = self.width - self.right - sum(self._item_width(i[0]) for i in row) + 8
            for label, colour, kind in row:
                if kind == "box":
                    sym = f'<rect x="{_num(x)}" y="{y - 8}" width="12" height="9" fill="{colour}"/>'
                elif kind in ("dot", "ring"):
                    fill = "white" if kind == "ring" else colour
                    sym = f'<circle cx="{_num(x + 6)}" cy="{y - 4}" r="4" fill="{fill}" stroke="{colour}" stroke-width="1.6"/>'
                elif kind == "tick":
                    sym = f'<line x1="{_num(x + 6)}" x2="{_num(x + 6)}" y1="{y - 9}" y2="{y + 1}" stroke="{colour}" stroke-width="1.8"/>'
                else:
                    dash = ' stroke-dasharray="4,3"' if kind == "dash" else ""
                    sym = f'<line x1="{_num(x)}" x2="{_num(x + 12)}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
                out.append(sym + f'<text x="{_num(x + 16)}" y="{y}">{escape(label)}</text>')
                x += self._item_width(label)
        return "".join(out)

    def svg(self, description: str = "") -> str:
        """The chart as one ``<svg>`` element (valid standalone XML)."""
        desc = f"<desc>{escape(description)}</desc>" if description else ""
        legend = self._layout_legend()
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-size="11" style="{FONT}" role="img">'
                f'<title>{escape(self.title)}</title>{desc}{self._axes()}{"".join(draw() for draw in self.marks)}{self._legend(legend)}</svg>')
