"""Small inline SVG charts in pure Python: line charts, grouped bars, ROC curves, histograms,
range rows (distribution bands with a marker per row).

The run report (:mod:`fediot.faces.report.html`) and the live dashboard embed these strings
directly in HTML: no JavaScript, no external resources, every text escaped.

Every chart is one ``<svg class="chart" data-chart="KIND" viewBox="0 0 W H" role="img">``
(``KIND``: ``line``, ``bars``, ``roc``, ``histogram`` or ``ranges``) with, for tests and styling:

- ``<title>`` (the chart's accessible name) and ``<desc>``;
- ``<rect class="plot-area">``: the plotting rectangle; the ``svg`` carries the value domain
  as ``data-x-min``/``data-x-max``/``data-y-min``/``data-y-max``;
- ``<g class="axis" data-axis="x|y">`` with one ``<g class="tick" data-value="…">`` per tick
  and a ``<text class="axis-label">``;
- one ``<path class="series" data-series="NAME">`` per line, curve or histogram series (its
  ``d`` uses only absolute ``M x,y`` / ``L x,y`` pairs and ``Z``), or one
  ``<rect class="bar" data-series="NAME" data-group="GROUP" data-value="…">`` per bar;
- ``<line class="reference" data-reference="NAME" data-value="…">`` per reference line
  (a threshold, the ROC diagonal);
- ``<g class="legend">`` with one ``<g class="legend-item" data-series="NAME">`` per entry.

A chart with nothing to draw is a "no data" chart (``data-empty="true"``, a
``<text class="no-data">`` message), never an exception. Values that are ``None``, NaN or
infinite are skipped (and values ≤ 0 on a log axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from html import escape
from typing import Final, Literal, Protocol

Point = tuple[float, float]
"""One ``(x, y)`` data point."""

PALETTE: Final[tuple[str, ...]] = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#b07aa1", "#9c755f", "#ff9da7", "#edc948", "#bab0ac",
)
"""Series colours in order (Tableau 10); pass ``color=`` to override one."""

CHAR_WIDTH: Final[float] = 6.2
"""Approximate width of one 11 px character, for legend and label layout."""


def esc(text: object) -> str:
    """``text`` escaped for HTML/SVG text and attribute values."""
    return escape(str(text), quote=True)


def fmt(value: float) -> str:
    """A coordinate with at most two decimals (``12.5``, ``3``)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_number(value: float) -> str:
    """A value for a tooltip or tick: four significant digits, no exponent for common sizes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e6:
        digits = max(0, 3 - math.floor(math.log10(magnitude)))
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.3g}"


_SUPERSCRIPT: Final = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def number_text(value: float) -> str:
    """A value for running text, with no ``e`` notation: a power of ten as ``10⁻⁵``, a value
    from 0.001 to a million as :func:`format_number` writes it, any other as ``5.4×10⁻⁶``
    (Unicode superscripts)."""
    if not (math.isfinite(value) and value > 0):
        return format_number(value)
    mantissa, exponent = _decimal_parts(value)
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    if mantissa == 1.0:
        return power
    if 1e-3 <= value < 1e6:
        return format_number(value)
    return f"{format_number(round(mantissa, 2))}×{power}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def nice_step(span: float, count: int = 5) -> float:
    """A 1, 2 or 5 × 10^k step giving about ``count`` intervals over ``span`` (> 0)."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power * 1.0000001:
            return factor * power
    return 10.0 * power


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """A non-degenerate domain around ``lo``…``hi``."""
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


class Scale(Protocol):
    """Maps data values to pixels along one axis and chooses the axis ticks."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float: ...

    def accepts(self, value: float) -> bool: ...

    def ticks(self) -> list[float]: ...

    def tick_label(self, value: float) -> str: ...


class LinearScale:
    """A linear map from the domain ``lo``…``hi`` to the pixel range ``start``…``end``.

    Parameters
    ----------
    lo, hi
        The domain (widened if ``lo == hi``).
    start, end
        Pixels for ``lo`` and ``hi`` (``end < start`` for a y axis, which grows upwards).
    count
        About how many tick intervals (default 5).
    nice
        Extend the domain to whole tick steps (default ``True``).
    percent
        Label ticks as percentages of fractions (``0.5`` → ``50%``; default ``False``).
    integer
        Only integer ticks (rounds; default ``False``).
    """

    def __init__(self, lo: float, hi: float, start: float, end: float, *, count: int = 5,
                 nice: bool = True, percent: bool = False, integer: bool = False) -> None:
        lo, hi = _widen(lo, hi)
        self.step = nice_step(hi - lo, count)
        if integer:
            self.step = max(1.0, round(self.step))
        if nice:
            lo = math.floor(lo / self.step + 1e-9) * self.step
            hi = math.ceil(hi / self.step - 1e-9) * self.step
        self.lo, self.hi, self.start, self.end = lo, hi, start, end
        self.percent, self.integer = percent, integer

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def accepts(self, value: float) -> bool:
        return math.isfinite(value)

    def ticks(self) -> list[float]:
        first = math.ceil(self.lo / self.step - 1e-9)
        last = math.floor(self.hi / self.step + 1e-9)
        return [round(i * self.step, 12) for i in range(first, last + 1)]

    def tick_label(self, value: float) -> str:
        step = self.step * (100 if self.percent else 1)
        shown = value * (100 if self.percent else 1)
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        text = f"{shown:,.{decimals}f}"
        return esc(text + ("%" if self.percent else ""))


class LogScale:
    """A log10 map from the domain ``lo``…``hi`` (both > 0) to ``start``…``end`` pixels.

    Ticks sit on powers of ten (``10⁻²``) when the domain spans three decades or more, on
    1, 2, 5 × 10^k over a narrower span, and on linear steps within a factor of four. All the
    ticks of one axis share one notation (:func:`log_tick_notation`): powers of ten when every
    tick is one, plain decimals when every tick is between 0.001 and a million, else
    ``m×10ᵏ``.
    """

    def __init__(self, lo: float, hi: float, start: float, end: float) -> None:
        if not (lo > 0 and hi > 0):
            lo, hi = 1.0, 10.0
        log_lo, log_hi = _widen(math.log10(lo), math.log10(hi))
        self.lo, self.hi = 10.0**log_lo, 10.0**log_hi
        self.log_lo, self.log_hi = log_lo, log_hi
        self.start, self.end = start, end
        self.notation = log_tick_notation(self.ticks())

    def __call__(self, value: float) -> float:
        position = (math.log10(value) - self.log_lo) / (self.log_hi - self.log_lo)
        return self.start + position * (self.end - self.start)

    def accepts(self, value: float) -> bool:
        return math.isfinite(value) and value > 0

    def ticks(self) -> list[float]:
        span = self.log_hi - self.log_lo
        if span >= 3:  # whole decades, every other one or sparser when wide
            step = float(math.ceil(nice_step(span, 5)))
            first = math.ceil(self.log_lo / step - 1e-9)
            last = math.floor(self.log_hi / step + 1e-9)
            return [10.0 ** round(i * step) for i in range(first, last + 1)]
        if span >= 0.6:  # 1, 2, 5 × 10^k
            return [m * 10.0**k
                    for k in range(math.floor(self.log_lo), math.ceil(self.log_hi) + 1)
                    for m in (1.0, 2.0, 5.0)
                    if self.lo * (1 - 1e-9) <= m * 10.0**k <= self.hi * (1 + 1e-9)]
        step = nice_step(self.hi - self.lo, 4)  # under a factor of four: plain linear steps
        first, last = math.ceil(self.lo / step - 1e-9), math.floor(self.hi / step + 1e-9)
        return [round(i * step, 12) for i in range(first, last + 1)]

    def tick_label(self, value: float) -> str:
        mantissa, exponent = _decimal_parts(value)
        if self.notation == "plain":
            return esc(format_number(value))
        power = f'10<tspan dy="-4" font-size="8">{exponent}</tspan>'
        if self.notation == "power":
            return power
        return f"{esc(format_number(mantissa))}×{power}"


LogNotation = Literal["power", "plain", "scientific"]
"""How a log axis writes its ticks: ``10ᵏ``, ``0.02``, or ``2×10ᵏ``."""


def _decimal_parts(value: float) -> tuple[float, int]:
    """``value`` as ``mantissa × 10^exponent`` with 1 ≤ mantissa < 10 (``value`` > 0)."""
    exponent = math.floor(math.log10(value) + 1e-9)
    return round(value / 10.0**exponent, 9), exponent


def log_tick_notation(ticks: Sequence[float]) -> LogNotation:
    """One notation for all of a log axis' ``ticks``: ``power`` when each is a power of ten,
    else ``plain`` when each lies in 0.001 … 10⁶ (:func:`format_number` writes those without
    an exponent), else ``scientific``."""
    if ticks and all(_decimal_parts(t)[0] == 1.0 for t in ticks):
        return "power"
    if all(1e-3 <= t < 1e6 for t in ticks):
        return "plain"
    return "scientific"


@dataclass(frozen=True)
class Series:
    """One line or curve.

    Parameters
    ----------
    name
        Identifier (the ``data-series`` attribute).
    points
        ``(x, y)`` pairs in drawing order; non-finite values are skipped.
    label
        Legend text (default: ``name``).
    color
        CSS colour (default: the palette colour of the series' position).
    emphasis
        Draw thicker (a pooled or total series; default ``False``).
    data
        Extra ``data-KEY="VALUE"`` attributes of the series' path (e.g. ``{"auc": "0.99"}``).
    """

    name: str
    points: Sequence[Point]
    label: str = ""
    color: str = ""
    emphasis: bool = False
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """A straight reference line across the plot (a threshold, a final value).

    Parameters
    ----------
    name
        Identifier (the ``data-reference`` attribute).
    value
        Where the line sits, in data units.
    label
        Legend text (default: ``name``).
    axis
        ``"y"``: a horizontal line at y = value (default); ``"x"``: a vertical line.
    color
        CSS colour (default dark grey).
    """

    name: str
    value: float
    label: str = ""
    axis: Literal["x", "y"] = "y"
    color: str = "#333333"


@dataclass(frozen=True)
class BarSeries:
    """One series of a grouped bar chart: a value per group (``None``: no bar).

    Parameters
    ----------
    name
        Identifier (``data-series``).
    values
        One value per group, in the groups' order.
    label
        Legend text (default: ``name``).
    color
        CSS colour (default: palette).
    """

    name: str
    values: Sequence[float | None]
    label: str = ""
    color: str = ""


@dataclass(frozen=True)
class HistogramSeries:
    """Counts over shared bin edges; drawn as the share of the series' total per bin.

    Parameters
    ----------
    name
        Identifier (``data-series``).
    counts
        One count per bin (``len(edges) - 1``).
    label
        Legend text (default: ``name``).
    color
        CSS colour (default: palette).
    """

    name: str
    counts: Sequence[float]
    label: str = ""
    color: str = ""


@dataclass(frozen=True)
class Interval:
    """One distribution summary on a row of a range chart: a band from ``low`` to ``high``
    with a dot at ``middle`` (e.g. the 1st–99th percentile and the median).

    Parameters
    ----------
    name
        Identifier (``data-series``); rows' intervals of one name share a legend entry.
    low, middle, high
        The band's ends and its dot, in data units (``low ≤ middle ≤ high``).
    label
        Legend text (default: ``name``).
    color
        CSS colour (default: palette by position in the row).
    """

    name: str
    low: float
    middle: float
    high: float
    label: str = ""
    color: str = ""


@dataclass(frozen=True)
class RangeRow:
    """One row of a range chart (a device): its intervals, one above the other, and an
    optional marker across them (its threshold).

    Parameters
    ----------
    name
        Identifier (``data-row``).
    label
        Text written above the row.
    intervals
        The row's bands, drawn top to bottom.
    marker
        Where the row's vertical marker sits (``None``: no marker).
    """

    name: str
    label: str
    intervals: Sequence[Interval]
    marker: float | None = None


@dataclass(frozen=True)
class ChartSize:
    """Chart geometry in SVG user units (the page scales the ``viewBox``).

    Parameters
    ----------
    width
        Whole chart width (default 640).
    plot_height
        Height of the plotting rectangle (default 240).
    left, right, top
        Margins around the plot (defaults 64, 20, 34: y tick labels, breathing room, title).
    """

    width: int = 640
    plot_height: int = 240
    left: int = 64
    right: int = 20
    top: int = 34


@dataclass(frozen=True)
class _LegendItem:
    name: str
    label: str
    color: str
    style: Literal["line", "dashed", "box"]


class _Canvas:
    """Lays out one chart: title, plot rectangle, axes, legend; collects the SVG elements."""

    def __init__(self, kind: str, title: str, description: str, size: ChartSize,
                 x_label: str, y_label: str, bottom_extra: float = 0.0) -> None:
        self.kind, self.title, self.description, self.size = kind, title, description, size
        self.x_label, self.y_label = x_label, y_label
        self.x0 = float(size.left)
        self.x1 = float(size.width - size.right)
        self.y0 = float(size.top)
        self.y1 = float(size.top + size.plot_height)
        self.axis_bottom = self.y1 + 34 + bottom_extra  # tick labels, then the axis label
        self.body: list[str] = []
        self.legend: list[_LegendItem] = []

    def legend_rows(self) -> list[list[tuple[_LegendItem, float]]]:
        rows: list[list[tuple[_LegendItem, float]]] = [[]]
        x = self.x0
        for item in self.legend:
            width = 26 + CHAR_WIDTH * len(item.label) + 14
            if rows[-1] and x + width > self.size.width - 4:
                rows.append([])
                x = self.x0
            rows[-1].append((item, x))
            x += width
        return [row for row in rows if row]

    def render(self, attributes: dict[str, str]) -> str:
        rows = self.legend_rows()
        legend_top = self.axis_bottom + 12
        height = legend_top + 18 * len(rows) + 4
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(self.kind)}"'
            f' viewBox="0 0 {self.size.width} {fmt(height)}" width="{self.size.width}"'
            f' height="{fmt(height)}" role="img" font-family="system-ui, sans-serif"'
            f' font-size="11"'
            + "".join(f' {k}="{esc(v)}"' for k, v in attributes.items()) + ">",
            f"<title>{esc(self.title)}</title>",
            f"<desc>{esc(self.description or self.title)}</desc>",
            f'<text class="chart-title" x="{fmt(self.x0)}" y="18" font-size="13"'
            f' font-weight="600">{esc(self.title)}</text>',
            *self.body,
        ]
        if rows:
            parts.append('<g class="legend">')
            for number, row in enumerate(rows):
                y = legend_top + 18 * number
                for item, x in row:
                    parts.append(_legend_item(item, x, y))
            parts.append("</g>")
        parts.append("</svg>")
        return "\n".join(parts)

    def frame(self, x_scale: Scale, y_scale: Scale, x_tick_labels: bool = True,
              y_ticks: bool = True) -> None:
        """Plot rectangle, grid lines, both axes with ticks (``y_ticks=False``: none on the y
        axis, whose rows label themselves) and labels."""
        width, height = self.x1 - self.x0, self.y1 - self.y0
        self.body.append(f'<rect class="plot-area" x="{fmt(self.x0)}" y="{fmt(self.y0)}"'
                         f' width="{fmt(width)}" height="{fmt(height)}" fill="#fbfbfb"'
                         f' stroke="#bbbbbb"/>')
        ticks = ['<g class="axis" data-axis="y">']
        for value in y_scale.ticks() if y_ticks else []:
            y = y_scale(value)
            ticks.append(
                f'<g class="tick" data-value="{value!r}"><line x1="{fmt(self.x0)}"'
                f' x2="{fmt(self.x1)}" y1="{fmt(y)}" y2="{fmt(y)}" stroke="#e4e4e4"/>'
                f'<text x="{fmt(self.x0 - 6)}" y="{fmt(y + 4)}" text-anchor="end"'
                f' fill="#444">{y_scale.tick_label(value)}</text></g>')
        middle = (self.y0 + self.y1) / 2
        ticks.append(f'<text class="axis-label" transform="translate(14 {fmt(middle)})'
                     f' rotate(-90)" text-anchor="middle" fill="#222">{esc(self.y_label)}'
                     "</text></g>")
        ticks.append('<g class="axis" data-axis="x">')
        if x_tick_labels:
            for value in x_scale.ticks():
                x = x_scale(value)
                ticks.append(
                    f'<g class="tick" data-value="{value!r}"><line x1="{fmt(x)}" x2="{fmt(x)}"'
                    f' y1="{fmt(self.y1)}" y2="{fmt(self.y1 + 4)}" stroke="#666"/>'
                    f'<text x="{fmt(x)}" y="{fmt(self.y1 + 16)}" text-anchor="middle"'
                    f' fill="#444">{x_scale.tick_label(value)}</text></g>')
        center = (self.x0 + self.x1) / 2
        ticks.append(f'<text class="axis-label" x="{fmt(center)}" y="{fmt(self.axis_bottom)}"'
                     f' text-anchor="middle" fill="#222">{esc(self.x_label)}</text></g>')
        self.body.extend(ticks)

    def reference(self, line: Reference, x_scale: Scale, y_scale: Scale) -> None:
        scale = y_scale if line.axis == "y" else x_scale
        if not scale.accepts(line.value):
            return
        at = min(max(scale(line.value), min(scale.start, scale.end)), max(scale.start, scale.end))
        if line.axis == "y":
            ends = f'x1="{fmt(self.x0)}" x2="{fmt(self.x1)}" y1="{fmt(at)}" y2="{fmt(at)}"'
        else:
            ends = f'x1="{fmt(at)}" x2="{fmt(at)}" y1="{fmt(self.y0)}" y2="{fmt(self.y1)}"'
        label = line.label or line.name
        self.body.append(
            f'<line class="reference" data-reference="{esc(line.name)}"'
            f' data-value="{line.value!r}" {ends} stroke="{esc(line.color)}"'
            f' stroke-width="1.5" stroke-dasharray="6 4"><title>{esc(label)}: '
            f"{esc(format_number(line.value))}</title></line>")
        self.legend.append(_LegendItem(line.name, label, line.color, "dashed"))


def _legend_item(item: _LegendItem, x: float, y: float) -> str:
    if item.style == "box":
        mark = (f'<rect x="{fmt(x)}" y="{fmt(y - 8)}" width="18" height="10"'
                f' fill="{esc(item.color)}"/>')
    else:
        dash = ' stroke-dasharray="5 3"' if item.style == "dashed" else ""
        mark = (f'<line x1="{fmt(x)}" x2="{fmt(x + 18)}" y1="{fmt(y - 3)}" y2="{fmt(y - 3)}"'
                f' stroke="{esc(item.color)}" stroke-width="2.5"{dash}/>')
    return (f'<g class="legend-item" data-series="{esc(item.name)}">{mark}'
            f'<text x="{fmt(x + 24)}" y="{fmt(y + 1)}" fill="#222">{esc(item.label)}</text></g>')


def empty_chart(kind: str, title: str, message: str = "no data",
                size: ChartSize = ChartSize()) -> str:
    """A chart frame that says ``message`` instead of plotting (``data-empty="true"``)."""
    height = size.top + size.plot_height // 2
    middle = size.top + size.plot_height // 4
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(kind)}"'
        f' data-empty="true" viewBox="0 0 {size.width} {height}" width="{size.width}"'
        f' height="{height}" role="img" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{esc(title)}: {esc(message)}</title>",
        f'<text class="chart-title" x="{size.left}" y="18" font-size="13"'
        f' font-weight="600">{esc(title)}</text>',
        f'<rect class="plot-area" x="{size.left}" y="{size.top}"'
        f' width="{size.width - size.left - size.right}" height="{size.plot_height // 2 - 8}"'
        ' fill="#fbfbfb" stroke="#dddddd"/>',
        f'<text class="no-data" x="{size.width // 2}" y="{middle}" text-anchor="middle"'
        f' fill="#777" font-size="13">{esc(message)}</text>',
        "</svg>",
    ])


def _color(color: str, index: int) -> str:
    return color or PALETTE[index % len(PALETTE)]


def _clean(points: Iterable[Point], x_scale: Scale, y_scale: Scale) -> list[Point]:
    return [(x, y) for x, y in points
            if _finite(x) and _finite(y) and x_scale.accepts(x) and y_scale.accepts(y)]


def _path(points: Sequence[Point], close: bool = False) -> str:
    """``M x,y L x,y …`` with consecutive duplicates and collinear runs dropped."""
    kept: list[Point] = []
    for point in points:
        if kept and point == kept[-1]:
            continue
        if (len(kept) >= 2 and _collinear(kept[-2], kept[-1], point)):
            kept[-1] = point
            continue
        kept.append(point)
    text = " ".join(("M" if i == 0 else "L") + f" {fmt(x)},{fmt(y)}"
                    for i, (x, y) in enumerate(kept))
    return text + (" Z" if close and kept else "")


def _collinear(a: Point, b: Point, c: Point) -> bool:
    """``b`` lies on the horizontal or vertical segment from ``a`` to ``c``."""
    if a[0] == b[0] == c[0]:
        return min(a[1], c[1]) <= b[1] <= max(a[1], c[1])
    if a[1] == b[1] == c[1]:
        return min(a[0], c[0]) <= b[0] <= max(a[0], c[0])
    return False


def _bounds(values: Iterable[float]) -> tuple[float, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else None


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               references: Sequence[Reference] = (), description: str = "",
               x_domain: tuple[float, float] | None = None,
               y_domain: tuple[float, float] | None = None, y_log: bool = False,
               y_percent: bool = False, x_integer: bool = False,
               size: ChartSize = ChartSize(), empty_message: str = "no data") -> str:
    """Lines over a shared x axis, with optional horizontal/vertical reference lines.

    Domains default to the data's (and the references') extent; ``y_log`` uses a log10 y axis
    (non-positive values skipped); ``y_percent`` labels y ticks as percentages of fractions;
    ``x_integer`` keeps only integer x ticks (rounds). Points get hover tooltips when a series
    has at most 60 of them. With no finite point and no reference: :func:`empty_chart`.
    """
    return _xy_chart("line", series, title=title, x_label=x_label, y_label=y_label,
                     references=references, description=description, x_domain=x_domain,
                     y_domain=y_domain, y_log=y_log, y_percent=y_percent,
                     x_integer=x_integer, size=size, empty_message=empty_message)


def roc_chart(series: Sequence[Series], *, title: str = "ROC curves",
              description: str = "", fpr_floor: float | None = None,
              size: ChartSize = ChartSize(plot_height=300),
              empty_message: str = "no ROC curve: needs benign and attack scores") -> str:
    """ROC curves: x = false-positive rate, y = true-positive rate (0…1), with the chance
    line. Give each :class:`Series` its ``(fpr, tpr)`` points; put the AUC in the label.

    ``fpr_floor`` (e.g. ``1e-5``) puts the FPR axis on a log10 scale from the floor to 1, so
    curves that reach a high TPR at a tiny FPR are told apart; points with a lower FPR (0
    included: thresholds above every benign score) are drawn at the floor, and the chart's
    ``data-fpr-floor`` holds it. ``None`` (default): a linear FPR axis from 0 to 1.
    """
    if fpr_floor is not None:
        if not (math.isfinite(fpr_floor) and 0 < fpr_floor < 1):
            raise ValueError(f"fpr_floor must be in (0, 1); got {fpr_floor!r}")
        series = [replace(s, points=[(max(x, fpr_floor), y) for x, y in s.points])
                  for s in series]
        steps = 64  # the chance line TPR = FPR is a curve on a log axis
        log_floor = math.log10(fpr_floor)
        chance = [(10.0 ** (log_floor * (1 - i / steps)),) * 2 for i in range(steps + 1)]
        diagonal = Series("chance", chance)
        x_label = (f"false-positive rate (FPR), log scale; FPR below "
                   f"{number_text(fpr_floor)} drawn at it")
    else:
        diagonal = Series("chance", [(0.0, 0.0), (1.0, 1.0)])
        x_label = "false-positive rate (FPR)"
    return _xy_chart("roc", series, title=title, x_label=x_label,
                     y_label="true-positive rate (TPR)", references=(),
                     description=description, x_domain=(fpr_floor or 0.0, 1.0),
                     y_domain=(0.0, 1.0), y_log=False, y_percent=True, x_integer=False,
                     size=size, empty_message=empty_message, x_percent=fpr_floor is None,
                     diagonal=diagonal, x_log=fpr_floor is not None,
                     extra_attributes={} if fpr_floor is None else {
                         "data-fpr-floor": repr(fpr_floor)})


def _xy_chart(kind: str, series: Sequence[Series], *, title: str, x_label: str, y_label: str,
              references: Sequence[Reference], description: str,
              x_domain: tuple[float, float] | None, y_domain: tuple[float, float] | None,
              y_log: bool, y_percent: bool, x_integer: bool, size: ChartSize,
              empty_message: str, x_percent: bool = False, x_log: bool = False,
              diagonal: Series | None = None,
              extra_attributes: Mapping[str, str] | None = None) -> str:
    usable = [s for s in series
              if any(_finite(x) and _finite(y) and (not y_log or y > 0) and (not x_log or x > 0)
                     for x, y in s.points)]
    if not usable and not references:
        return empty_chart(kind, title, empty_message, size)
    xs = [x for s in usable for x, _ in s.points if not x_log or (_finite(x) and x > 0)]
    xs += [r.value for r in references if r.axis == "x" and (not x_log or r.value > 0)]
    ys = [y for s in usable for _, y in s.points if not y_log or (_finite(y) and y > 0)]
    ys += [r.value for r in references if r.axis == "y" and (not y_log or r.value > 0)]
    x_lo, x_hi = x_domain or _bounds(xs) or (0.0, 1.0)
    y_lo, y_hi = y_domain or _bounds(ys) or (0.0, 1.0)
    canvas = _Canvas(kind, title, description, size, x_label, y_label)
    x_scale: Scale = (LogScale(x_lo, x_hi, canvas.x0, canvas.x1) if x_log else
                      LinearScale(x_lo, x_hi, canvas.x0, canvas.x1, integer=x_integer,
                                  percent=x_percent, nice=x_domain is None))
    y_scale: Scale = (LogScale(y_lo, y_hi, canvas.y1, canvas.y0) if y_log else
                      LinearScale(y_lo, y_hi, canvas.y1, canvas.y0, percent=y_percent,
                                  nice=y_domain is None))
    canvas.frame(x_scale, y_scale)
    if diagonal is not None:
        canvas.body.append(
            f'<path class="diagonal" d="{_path(_pixels(diagonal.points, x_scale, y_scale))}"'
            ' stroke="#999" stroke-dasharray="3 3" fill="none"/>')
    for reference in references:
        canvas.reference(reference, x_scale, y_scale)
    for index, line in enumerate(series):
        points = _clean(line.points, x_scale, y_scale)
        color = _color(line.color, index)
        label = line.label or line.name
        canvas.legend.append(_LegendItem(line.name, label, color, "line"))
        if not points:
            continue
        width = 3.0 if line.emphasis else 1.8
        extra = "".join(f' data-{esc(key)}="{esc(value)}"' for key, value in line.data.items())
        canvas.body.append(
            f'<path class="series" data-series="{esc(line.name)}"{extra}'
            f' d="{_path(_pixels(points, x_scale, y_scale))}" fill="none"'
            f' stroke="{esc(color)}" stroke-width="{width}" stroke-linejoin="round">'
            f"<title>{esc(label)}</title></path>")
        if kind == "line" and len(points) <= 60:
            canvas.body.extend(_markers(line.name, label, color, points, x_scale, y_scale,
                                        y_percent))
    attributes = {**_domain_attributes(x_scale, y_scale), **(extra_attributes or {})}
    return canvas.render(attributes)


def _pixels(points: Iterable[Point], x_scale: Scale, y_scale: Scale) -> list[Point]:
    return [(x_scale(x), y_scale(y)) for x, y in points]


def _markers(name: str, label: str, color: str, points: Sequence[Point], x_scale: Scale,
             y_scale: Scale, percent: bool) -> list[str]:
    shown: Callable[[float], str] = ((lambda v: f"{100 * v:.2f}%") if percent
                                     else format_number)
    return [f'<circle class="point" data-series="{esc(name)}" cx="{fmt(x_scale(x))}"'
            f' cy="{fmt(y_scale(y))}" r="3" fill="{esc(color)}"><title>{esc(label)}:'
            f" {esc(format_number(x))} → {esc(shown(y))}</title></circle>"
            for x, y in points]


def _domain_attributes(x_scale: Scale, y_scale: Scale) -> dict[str, str]:
    return {"data-x-min": repr(x_scale.lo), "data-x-max": repr(x_scale.hi),
            "data-y-min": repr(y_scale.lo), "data-y-max": repr(y_scale.hi)}


def bar_chart(groups: Sequence[str], series: Sequence[BarSeries], *, title: str,
              y_label: str, x_label: str = "", description: str = "",
              y_max: float | None = None, y_percent: bool = False,
              size: ChartSize = ChartSize(), empty_message: str = "no data") -> str:
    """Grouped bars: one group per entry of ``groups`` (x axis), one bar per series in each.

    The y axis starts at 0 (or the lowest negative value) and ends at a whole tick step above
    the largest value, or at ``y_max``. Each bar's ``data-value`` holds its value; its
    ``<title>`` the group, series and value. No finite value: :func:`empty_chart`.
    """
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    if not groups or not values:
        return empty_chart("bars", title, empty_message, size)
    for bars in series:
        if len(bars.values) != len(groups):
            raise ValueError(f"bar series {bars.name!r} has {len(bars.values)} values for "
                             f"{len(groups)} groups")
    plot_width = size.width - size.left - size.right
    group_width = plot_width / len(groups)
    longest = max(len(g) for g in groups)
    rotate = longest * CHAR_WIDTH > group_width - 4
    extra = longest * CHAR_WIDTH * 0.6 if rotate else 0.0
    canvas = _Canvas("bars", title, description, size, x_label, y_label, bottom_extra=extra)
    lo = min(0.0, *values)
    hi = y_max if y_max is not None else max(0.0, *values)
    if hi <= lo:  # all zero: an axis from 0 to 1 rather than around 0
        hi = lo + 1.0
    y_scale = LinearScale(lo, hi, canvas.y1, canvas.y0, percent=y_percent,
                          nice=y_max is None)
    x_scale = LinearScale(0.0, float(len(groups)), canvas.x0, canvas.x1, nice=False)
    canvas.frame(x_scale, y_scale, x_tick_labels=False)
    bar_width = group_width * 0.8 / max(len(series), 1)
    zero = y_scale(0.0)
    labels = []
    for number, group in enumerate(groups):
        center = canvas.x0 + group_width * (number + 0.5)
        if rotate:
            labels.append(f'<text class="group-label" transform="translate({fmt(center)}'
                          f' {fmt(canvas.y1 + 12)}) rotate(-35)" text-anchor="end"'
                          f' fill="#444">{esc(group)}</text>')
        else:
            labels.append(f'<text class="group-label" x="{fmt(center)}"'
                          f' y="{fmt(canvas.y1 + 16)}" text-anchor="middle"'
                          f' fill="#444">{esc(group)}</text>')
    canvas.body.append('<g class="groups">' + "".join(labels) + "</g>")
    shown: Callable[[float], str] = ((lambda v: f"{100 * v:.2f}%") if y_percent
                                     else format_number)
    for index, bars in enumerate(series):
        color = _color(bars.color, index)
        label = bars.label or bars.name
        canvas.legend.append(_LegendItem(bars.name, label, color, "box"))
        for number, (group, value) in enumerate(zip(groups, bars.values, strict=True)):
            if value is None or not math.isfinite(value):
                continue
            x = canvas.x0 + group_width * (number + 0.1) + bar_width * index
            top = y_scale(min(value, y_scale.hi))
            y, height = min(top, zero), abs(zero - top)
            canvas.body.append(
                f'<rect class="bar" data-series="{esc(bars.name)}" data-group="{esc(group)}"'
                f' data-value="{value!r}" x="{fmt(x)}" y="{fmt(y)}" width="{fmt(bar_width)}"'
                f' height="{fmt(height)}" fill="{esc(color)}"><title>{esc(group)} · '
                f"{esc(label)}: {esc(shown(value))}</title></rect>")
    return canvas.render({"data-y-min": repr(y_scale.lo), "data-y-max": repr(y_scale.hi)})


def histogram_chart(edges: Sequence[float], series: Sequence[HistogramSeries], *, title: str,
                    x_label: str, y_label: str = "share of rows", description: str = "",
                    markers: Sequence[Reference] = (), x_log: bool = True,
                    size: ChartSize = ChartSize(), empty_message: str = "no data") -> str:
    """Overlaid histograms over shared bin ``edges``, each drawn as its share per bin.

    Only the bins from the first to the last non-empty one (of any series, padded by two bins,
    widened to include the markers) are drawn. ``x_log`` (default) puts the x axis on a log10
    scale (edges must be > 0). ``markers`` are vertical reference lines (``axis="x"``), e.g.
    a threshold. A series without counts is listed but not drawn; no counts at all:
    :func:`empty_chart`.
    """
    n_bins = len(edges) - 1
    for hist in series:
        if len(hist.counts) != n_bins:
            raise ValueError(f"histogram series {hist.name!r} has {len(hist.counts)} counts "
                             f"for {n_bins} bins")
    totals = [float(sum(h.counts)) for h in series]
    used = [i for h, total in zip(series, totals, strict=True) if total > 0
            for i, count in enumerate(h.counts) if count > 0]
    if n_bins < 1 or not used:
        return empty_chart("histogram", title, empty_message, size)
    first, last = max(min(used) - 2, 0), min(max(used) + 2, n_bins - 1)
    x_lo, x_hi = float(edges[first]), float(edges[last + 1])
    for marker in markers:  # keep markers inside, a little off the frame
        if x_log and math.isfinite(marker.value) and marker.value > 0:
            x_lo, x_hi = min(x_lo, marker.value / 1.1), max(x_hi, marker.value * 1.1)
        elif not x_log and math.isfinite(marker.value):
            pad = 0.02 * (x_hi - x_lo)
            x_lo, x_hi = min(x_lo, marker.value - pad), max(x_hi, marker.value + pad)
    shares = [[c / total if total else 0.0 for c in h.counts]
              for h, total in zip(series, totals, strict=True)]
    top = max(max(s[first: last + 1]) for s in shares)
    canvas = _Canvas("histogram", title, description, size, x_label, y_label)
    x_scale: Scale = (LogScale(x_lo, x_hi, canvas.x0, canvas.x1) if x_log else
                      LinearScale(x_lo, x_hi, canvas.x0, canvas.x1, nice=False))
    y_scale = LinearScale(0.0, top, canvas.y1, canvas.y0, percent=True)
    canvas.frame(x_scale, y_scale)
    for index, (hist, share, total) in enumerate(zip(series, shares, totals, strict=True)):
        color = _color(hist.color, index)
        label = hist.label or hist.name
        canvas.legend.append(_LegendItem(hist.name, label, color, "box"))
        if total <= 0:
            continue
        outline: list[Point] = [(float(edges[first]), 0.0)]
        for i in range(first, last + 1):
            outline += [(float(edges[i]), share[i]), (float(edges[i + 1]), share[i])]
        outline.append((float(edges[last + 1]), 0.0))
        pixels = _pixels(_clean(outline, x_scale, y_scale), x_scale, y_scale)
        canvas.body.append(
            f'<path class="series" data-series="{esc(hist.name)}" data-total="{total!r}"'
            f' d="{_path(pixels, close=True)}" fill="{esc(color)}" fill-opacity="0.35"'
            f' stroke="{esc(color)}" stroke-width="1.2"><title>{esc(label)}:'
            f" {esc(format_number(total))} rows</title></path>")
    for marker in markers:
        canvas.reference(Reference(marker.name, marker.value, marker.label, "x", marker.color),
                         x_scale, y_scale)
    return canvas.render(_domain_attributes(x_scale, y_scale))


RANGE_ROW_LABEL: Final[float] = 14.0
"""Height of a range chart row's label line, in SVG units."""
RANGE_BAND: Final[float] = 9.0
"""Vertical distance between the bands of one range chart row."""


def range_chart(rows: Sequence[RangeRow], *, title: str, x_label: str,
                marker_label: str = "marker", description: str = "", x_log: bool = True,
                size: ChartSize = ChartSize(), empty_message: str = "no data") -> str:
    """One row per entry of ``rows``, each with its :class:`Interval` bands (a thick line from
    ``low`` to ``high``, a dot at ``middle``) and its marker (a black vertical tick labelled
    ``marker_label`` in the legend), over a shared x axis (log10 by default: values ≤ 0 are
    not drawn). ``size.plot_height`` is ignored: the rows set the plot's height.

    Each row is ``<g class="range-row" data-row="NAME" data-marker="…">`` holding
    ``<line class="interval" data-series="…" data-low data-middle data-high>`` per band and
    ``<line class="marker" data-value="…">``. Nothing drawable: :func:`empty_chart`.
    """
    scale_accepts: Callable[[float], bool] = ((lambda v: _finite(v) and v > 0) if x_log
                                              else _finite)
    values = [v for row in rows for band in row.intervals
              for v in (band.low, band.middle, band.high) if scale_accepts(v)]
    values += [row.marker for row in rows if row.marker is not None
               and scale_accepts(row.marker)]
    if not values:
        return empty_chart("ranges", title, empty_message, size)
    bands = max((len(row.intervals) for row in rows), default=0)
    row_height = RANGE_ROW_LABEL + RANGE_BAND * max(bands, 1) + 8
    layout = replace(size, plot_height=round(row_height * len(rows) + 4))
    canvas = _Canvas("ranges", title, description, layout, x_label, "")
    lo, hi = min(values), max(values)
    x_scale: Scale = (LogScale(lo / 1.3, hi * 1.3, canvas.x0, canvas.x1) if x_log else
                      LinearScale(lo, hi, canvas.x0, canvas.x1))
    y_scale = LinearScale(0.0, float(len(rows)), canvas.y0, canvas.y1, nice=False)
    canvas.frame(x_scale, y_scale, y_ticks=False)
    names: dict[str, _LegendItem] = {}
    for number, row in enumerate(rows):
        top = canvas.y0 + 4 + row_height * number
        marker = "" if row.marker is None else f' data-marker="{row.marker!r}"'
        parts = [f'<g class="range-row" data-row="{esc(row.name)}"{marker}>',
                 f'<text class="row-label" x="{fmt(canvas.x0 + 4)}" y="{fmt(top + 10)}"'
                 f' fill="#222">{esc(row.label)}</text>']
        if number:
            parts.append(f'<line x1="{fmt(canvas.x0)}" x2="{fmt(canvas.x1)}" y1="{fmt(top - 2)}"'
                         f' y2="{fmt(top - 2)}" stroke="#e4e4e4"/>')
        for index, band in enumerate(row.intervals):
            color = _color(band.color, index)
            names.setdefault(band.name, _LegendItem(band.name, band.label or band.name,
                                                    color, "box"))
            if not all(scale_accepts(v) for v in (band.low, band.middle, band.high)):
                continue
            y = top + RANGE_ROW_LABEL + RANGE_BAND * index + 2
            parts.append(
                f'<line class="interval" data-series="{esc(band.name)}"'
                f' data-low="{band.low!r}" data-middle="{band.middle!r}"'
                f' data-high="{band.high!r}" x1="{fmt(x_scale(band.low))}"'
                f' x2="{fmt(x_scale(band.high))}" y1="{fmt(y)}" y2="{fmt(y)}"'
                f' stroke="{esc(color)}" stroke-width="6" stroke-opacity="0.55"'
                f' stroke-linecap="butt"><title>{esc(row.label)} · {esc(band.label or band.name)}:'
                f" {esc(format_number(band.low))} … {esc(format_number(band.high))}"
                f" (dot {esc(format_number(band.middle))})</title></line>"
                f'<circle class="interval-middle" data-series="{esc(band.name)}"'
                f' cx="{fmt(x_scale(band.middle))}" cy="{fmt(y)}" r="3.5" fill="{esc(color)}"'
                ' stroke="#fff" stroke-width="1"/>')
        if row.marker is not None and scale_accepts(row.marker):
            x = x_scale(row.marker)
            bottom = top + RANGE_ROW_LABEL + RANGE_BAND * max(len(row.intervals) - 1, 0) + 8
            parts.append(
                f'<line class="marker" data-value="{row.marker!r}" x1="{fmt(x)}" x2="{fmt(x)}"'
                f' y1="{fmt(top + RANGE_ROW_LABEL - 4)}" y2="{fmt(bottom)}" stroke="#111"'
                f' stroke-width="2"><title>{esc(row.label)} · {esc(marker_label)}:'
                f" {esc(format_number(row.marker))}</title></line>")
        parts.append("</g>")
        canvas.body.append("".join(parts))
    canvas.legend.extend(names.values())
    if any(row.marker is not None for row in rows):
        canvas.legend.append(_LegendItem("marker", marker_label, "#111111", "line"))
    return canvas.render(_domain_attributes(x_scale, y_scale))
