"""The SVG chart primitives: scales, ticks, escaping, geometry and "no data" charts."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fediot.faces.report.svg import (
    BarSeries,
    ChartSize,
    HistogramSeries,
    Interval,
    LinearScale,
    LogScale,
    RangeRow,
    Reference,
    Series,
    bar_chart,
    empty_chart,
    format_number,
    histogram_chart,
    line_chart,
    nice_step,
    number_text,
    range_chart,
    roc_chart,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """The chart as XML (it must be well-formed to parse)."""
    return ET.fromstring(svg)


def elements(root: ET.Element, tag: str, css_class: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if css_class in e.get("class", "").split()]


def path_points(d: str) -> list[tuple[float, float]]:
    assert re.fullmatch(r"[MLZ0-9.,\s-]+", d), d
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def plot_area(root: ET.Element) -> tuple[float, float, float, float]:
    (rect,) = elements(root, "rect", "plot-area")
    x, y = float(rect.get("x", "")), float(rect.get("y", ""))
    return x, y, x + float(rect.get("width", "")), y + float(rect.get("height", ""))


@pytest.mark.parametrize(("span", "count", "step"), [
    (10, 5, 2), (1, 5, 0.2), (0.7, 5, 0.2), (100, 4, 50), (3, 5, 1), (0.004, 5, 0.001),
])
def test_nice_steps_are_one_two_five(span: float, count: int, step: float) -> None:
    assert nice_step(span, count) == pytest.approx(step)


def test_linear_scale_maps_the_nice_domain_onto_the_pixels() -> None:
    scale = LinearScale(0.13, 0.87, 300, 100)  # a y axis: larger values higher up
    assert (scale.lo, scale.hi) == pytest.approx((0.0, 1.0))
    assert scale(0.0) == pytest.approx(300) and scale(1.0) == pytest.approx(100)
    assert scale(0.25) == pytest.approx(250)
    assert scale.ticks() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    percent = LinearScale(0, 1, 0, 100, percent=True)
    assert percent.tick_label(0.4) == "40%"
    rounds = LinearScale(1, 3, 0, 100, integer=True, nice=False)
    assert rounds.ticks() == [1, 2, 3]


def test_degenerate_domains_are_widened_not_divided_by_zero() -> None:
    scale = LinearScale(1.24, 1.24, 0, 100)
    assert scale.lo < 1.24 < scale.hi
    assert 0 < scale(1.24) < 100
    zero = LinearScale(0, 0, 0, 100)
    assert zero.lo < 0 < zero.hi


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6), st.integers(2, 8))
def test_linear_ticks_cover_the_data_evenly(lo: float, span: float, count: int) -> None:
    hi = lo + span
    scale = LinearScale(lo, hi, 0.0, 500.0, count=count)
    slack = 1e-6 * scale.step  # floating-point noise below a tick is not a new tick
    assert scale.lo <= lo + slack and scale.hi >= hi - slack
    ticks = scale.ticks()
    assert len(ticks) >= 2
    gaps = [b - a for a, b in pairwise(ticks)]
    assert all(g == pytest.approx(scale.step, rel=1e-6) for g in gaps)
    assert all(scale.lo - slack <= t <= scale.hi + slack for t in ticks)
    assert -1e-3 <= scale(lo) < scale(hi) <= 500 + 1e-3


def test_log_scale_puts_decades_at_equal_distances() -> None:
    scale = LogScale(1e-3, 1e5, 0, 800)
    assert scale(1e-3) == pytest.approx(0) and scale(1e5) == pytest.approx(800)
    assert scale(10) - scale(1) == pytest.approx(scale(1) - scale(0.1)) == pytest.approx(100)
    assert all(math.log10(t) == round(math.log10(t)) for t in scale.ticks())
    assert "<tspan" in scale.tick_label(100.0)
    assert LogScale(0.87, 15.8, 0, 100).ticks() == pytest.approx([1, 2, 5, 10])
    assert not scale.accepts(0.0) and not scale.accepts(-1.0)


def tick_labels(scale: LogScale) -> list[str]:
    return [scale.tick_label(t) for t in scale.ticks()]


@pytest.mark.parametrize(("lo", "hi", "notation", "pattern"), [
    (1e-6, 1.0, "power", r'10<tspan[^>]*>-?\d+</tspan>'),  # decades only
    (0.015, 12.0, "plain", r"[\d.,]+"),  # 0.02 … 10: decades among them are plain too
    (4e-4, 0.05, "scientific", r'[\d.]+×10<tspan[^>]*>-\d+</tspan>'),  # 5×10⁻⁴ … 5×10⁻²
    (2e-5, 3e-4, "scientific", r'[\d.]+×10<tspan[^>]*>-\d+</tspan>'),
])
def test_a_log_axis_writes_all_its_ticks_in_one_notation(
        lo: float, hi: float, notation: str, pattern: str) -> None:
    scale = LogScale(lo, hi, 0, 500)
    assert scale.notation == notation
    labels = tick_labels(scale)
    assert len(labels) >= 2 and all(re.fullmatch(pattern, t) for t in labels), labels


def test_scientific_ticks_keep_their_value() -> None:
    scale = LogScale(4e-4, 0.05, 0, 500)
    for tick, label in zip(scale.ticks(), tick_labels(scale), strict=True):
        match = re.fullmatch(r'([\d.]+)×10<tspan[^>]*>(-?\d+)</tspan>', label)
        assert match is not None, label
        assert float(match[1]) * 10.0 ** int(match[2]) == pytest.approx(tick)


def test_number_text_has_no_e_notation() -> None:
    assert number_text(1e-5) == "10⁻⁵"
    assert number_text(1.0) == "10⁰"
    assert number_text(5.396e-6) == "5.4×10⁻⁶"
    assert number_text(0.02) == "0.02"
    assert number_text(0.001667) == "0.001667"


def test_format_number() -> None:
    assert format_number(0) == "0"
    assert format_number(1.2401103) == "1.24"
    assert format_number(12345.678) == "12,346"
    assert format_number(2.5e-7) == "2.5e-07"


HOSTILE = 'a<script>alert("x")</script>&\'b'


def test_every_text_is_escaped() -> None:
    charts = [
        line_chart([Series(HOSTILE, [(1, 2), (2, 3)], HOSTILE)], title=HOSTILE,
                   x_label=HOSTILE, y_label=HOSTILE,
                   references=[Reference(HOSTILE, 2.5, HOSTILE)]),
        bar_chart([HOSTILE, "b"], [BarSeries(HOSTILE, [1.0, 2.0], HOSTILE)], title=HOSTILE,
                  y_label=HOSTILE),
        roc_chart([Series(HOSTILE, [(0, 0), (0.5, 0.9), (1, 1)], HOSTILE,
                          data={"auc": HOSTILE})], title=HOSTILE),
        histogram_chart([1, 10, 100], [HistogramSeries(HOSTILE, [3, 4], HOSTILE)],
                        title=HOSTILE, x_label=HOSTILE),
        range_chart([RangeRow(HOSTILE, HOSTILE, [Interval(HOSTILE, 1, 2, 3, HOSTILE)], 2.5)],
                    title=HOSTILE, x_label=HOSTILE, marker_label=HOSTILE),
        roc_chart([Series(HOSTILE, [(0, 0), (0.5, 0.9), (1, 1)], HOSTILE)], title=HOSTILE,
                  fpr_floor=1e-4),
        empty_chart("line", HOSTILE, HOSTILE),
    ]
    for svg in charts:
        assert "<script" not in svg
        root = parse(svg)  # well-formed XML
        assert not list(root.iter(f"{SVG}script"))
        assert root.find(f"{SVG}title") is not None
        assert HOSTILE in "".join(root.itertext()) or any(
            HOSTILE in value for e in root.iter() for value in e.attrib.values())


def test_line_chart_draws_each_series_inside_the_plot() -> None:
    svg = line_chart([Series("loss", [(1, 0.9), (2, 0.5), (3, 0.45)], "training loss"),
                      Series("other", [(1, 0.2), (3, 0.3)])],
                     title="Loss", x_label="round", y_label="loss", x_integer=True,
                     references=[Reference("final", 0.4, "final value")])
    root = parse(svg)
    assert root.get("data-chart") == "line"
    x0, y0, x1, y1 = plot_area(root)
    paths = {p.get("data-series"): path_points(p.get("d", ""))
             for p in elements(root, "path", "series")}
    assert set(paths) == {"loss", "other"}
    assert len(paths["loss"]) == 3
    for points in paths.values():
        assert all(x0 - 0.01 <= x <= x1 + 0.01 and y0 - 0.01 <= y <= y1 + 0.01
                   for x, y in points)
    # the first loss point is higher on the page than the last (larger value → smaller y)
    assert paths["loss"][0][1] < paths["loss"][-1][1]
    assert [e.get("data-series") for e in elements(root, "g", "legend-item")] == [
        "final", "loss", "other"]
    (line,) = elements(root, "line", "reference")
    assert line.get("data-reference") == "final" and float(line.get("data-value", "")) == 0.4
    assert len(elements(root, "circle", "point")) == 5
    ticks = [float(t.get("data-value", "")) for axis in elements(root, "g", "axis")
             if axis.get("data-axis") == "x" for t in elements(axis, "g", "tick")]
    assert ticks == [1, 2, 3]


def test_a_log_axis_skips_values_it_cannot_draw() -> None:
    svg = line_chart([Series("t", [(1, 0.0), (2, 1e-3), (3, float("nan")), (4, 1e2)])],
                     title="T", x_label="x", y_label="y", y_log=True)
    (path,) = elements(parse(svg), "path", "series")
    assert len(path_points(path.get("d", ""))) == 2


def test_bar_heights_are_proportional_to_the_values() -> None:
    values = [0.25, 0.5, None, 1.0]
    svg = bar_chart(["a", "b", "c", "d"], [BarSeries("tpr", values, "TPR")],
                    title="TPR", y_label="TPR", y_percent=True, y_max=1.0)
    root = parse(svg)
    _, y0, _, y1 = plot_area(root)
    bars = elements(root, "rect", "bar")
    assert [b.get("data-group") for b in bars] == ["a", "b", "d"]  # None: no bar
    for bar in bars:
        value = float(bar.get("data-value", ""))
        assert float(bar.get("height", "")) == pytest.approx(value * (y1 - y0), abs=0.02)
        assert float(bar.get("y", "")) + float(bar.get("height", "")) == pytest.approx(
            y1, abs=0.02)


def test_long_group_labels_are_rotated() -> None:
    groups = [f"a rather long device label {i}" for i in range(9)]
    svg = bar_chart(groups, [BarSeries("x", [float(i) for i in range(9)])], title="t",
                    y_label="y")
    labels = elements(parse(svg), "text", "group-label")
    assert len(labels) == 9 and all("rotate" in t.get("transform", "") for t in labels)


def test_mismatched_bar_series_is_refused() -> None:
    with pytest.raises(ValueError, match="'x' has 1 values for 2 groups"):
        bar_chart(["a", "b"], [BarSeries("x", [1.0])], title="t", y_label="y")


def test_roc_chart_has_unit_domains_and_the_diagonal() -> None:
    svg = roc_chart([Series("dev", [(0, 0), (0.1, 0.6), (1, 1)], "dev (AUC 0.75)",
                            data={"auc": "0.75"})])
    root = parse(svg)
    assert root.get("data-chart") == "roc"
    assert (root.get("data-x-min"), root.get("data-x-max")) == ("0.0", "1.0")
    (path,) = elements(root, "path", "series")
    assert path.get("data-auc") == "0.75"
    x0, y0, x1, y1 = plot_area(root)
    assert path_points(path.get("d", ""))[0] == pytest.approx((x0, y1), abs=0.01)
    assert path_points(path.get("d", ""))[-1] == pytest.approx((x1, y0), abs=0.01)
    assert elements(root, "path", "diagonal")


def test_roc_chart_with_a_log_fpr_axis_draws_fpr_zero_at_the_floor() -> None:
    svg = roc_chart([Series("dev", [(0, 0), (0, 0.5), (0.01, 0.9), (1, 1)], "dev")],
                    fpr_floor=1e-4)
    root = parse(svg)
    assert root.get("data-fpr-floor") == "0.0001"
    assert (float(root.get("data-x-min", "")), float(root.get("data-x-max", ""))) == (
        pytest.approx(1e-4), pytest.approx(1.0))
    x0, y0, x1, y1 = plot_area(root)
    (path,) = elements(root, "path", "series")
    points = path_points(path.get("d", ""))
    # FPR 0 sits on the left edge; FPR 0.01 halfway along the four decades 1e-4 … 1
    assert points[0] == pytest.approx((x0, y1), abs=0.01)
    assert points[1] == pytest.approx((x0, y1 - 0.5 * (y1 - y0)), abs=0.01)
    assert points[2] == pytest.approx((x0 + 0.5 * (x1 - x0), y1 - 0.9 * (y1 - y0)), abs=0.01)
    assert points[-1] == pytest.approx((x1, y0), abs=0.01)
    ticks = [t.get("data-value") for axis in elements(root, "g", "axis")
             if axis.get("data-axis") == "x" for t in elements(axis, "g", "tick")]
    assert [float(t or "") for t in ticks] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1])
    assert "10⁻⁴" in "".join(root.itertext())  # the floor is stated on the axis
    (diagonal,) = elements(root, "path", "diagonal")
    assert len(path_points(diagonal.get("d", ""))) > 10  # TPR = FPR curves on a log axis
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="fpr_floor"):
            roc_chart([], fpr_floor=bad)


def test_range_chart_puts_bands_and_markers_where_their_values_are() -> None:
    rows = [RangeRow("a", "device a", [Interval("benign", 0.01, 0.1, 1.0, "benign"),
                                       Interval("attack", 10.0, 100.0, 1000.0, "attack")],
                     marker=3.0),
            RangeRow("b", "device b", [Interval("benign", 0.02, 0.2, 2.0, "benign")],
                     marker=None)]
    root = parse(range_chart(rows, title="t", x_label="error", marker_label="threshold"))
    assert root.get("data-chart") == "ranges"
    x0, _, x1, _ = plot_area(root)
    lo, hi = float(root.get("data-x-min", "")), float(root.get("data-x-max", ""))
    assert lo <= 0.01 and hi >= 1000.0

    def pixel(value: float) -> float:
        return x0 + (math.log10(value) - math.log10(lo)) / (
            math.log10(hi) - math.log10(lo)) * (x1 - x0)

    groups = elements(root, "g", "range-row")
    assert [g.get("data-row") for g in groups] == ["a", "b"]
    assert groups[0].get("data-marker") == "3.0" and groups[1].get("data-marker") is None
    bands = [(g.get("data-row"), band) for g in groups for band in elements(g, "line",
                                                                          "interval")]
    assert [(row, b.get("data-series")) for row, b in bands] == [
        ("a", "benign"), ("a", "attack"), ("b", "benign")]
    for _, band in bands:
        assert float(band.get("x1", "")) == pytest.approx(pixel(float(band.get("data-low", ""))),
                                                          abs=0.01)
        assert float(band.get("x2", "")) == pytest.approx(
            pixel(float(band.get("data-high", ""))), abs=0.01)
    (marker,) = elements(root, "line", "marker")
    assert float(marker.get("x1", "")) == pytest.approx(pixel(3.0), abs=0.01)
    # rows stack downwards, bands of a row one under the other
    ys = [float(b.get("y1", "")) for _, b in bands]
    assert ys[0] < ys[1] < ys[2]
    assert [e.get("data-series") for e in elements(root, "g", "legend-item")] == [
        "benign", "attack", "marker"]
    empty = parse(range_chart([RangeRow("a", "a", [Interval("x", 0, 0, 0)])], title="t",
                              x_label="x"))
    assert empty.get("data-empty") == "true"


def test_histogram_draws_shares_and_the_marker() -> None:
    edges = [10.0 ** (k / 10) for k in range(-20, 21)]  # 40 bins over 1e-2 … 1e2
    benign = [0] * 40
    benign[10:14] = [1, 5, 3, 1]
    attack = [0] * 40
    attack[30] = 7
    svg = histogram_chart(edges, [HistogramSeries("benign", benign),
                                  HistogramSeries("attack", attack)],
                          title="scores", x_label="error",
                          markers=[Reference("threshold", 0.5, "threshold")],
                          size=ChartSize(width=480))
    root = parse(svg)
    assert root.get("data-chart") == "histogram"
    series = {p.get("data-series"): p for p in elements(root, "path", "series")}
    assert float(series["benign"].get("data-total", "")) == 10
    _, y0, _, y1 = plot_area(root)
    top = float(root.get("data-y-max", ""))
    # the attack bin holds all attack rows: its share 1.0 reaches y = 1.0 on the axis
    highest = min(y for _, y in path_points(series["attack"].get("d", "")))
    assert y1 - highest == pytest.approx((y1 - y0) / top, abs=0.02)
    (marker,) = elements(root, "line", "reference")
    assert float(marker.get("data-value", "")) == 0.5
    assert float(root.get("data-x-min", "")) <= 0.5 <= float(root.get("data-x-max", ""))


@pytest.mark.parametrize("svg", [
    line_chart([], title="Loss", x_label="x", y_label="y"),
    line_chart([Series("a", [(1, float("nan"))])], title="Loss", x_label="x", y_label="y"),
    bar_chart(["a"], [BarSeries("s", [None])], title="Bars", y_label="y"),
    bar_chart([], [], title="Bars", y_label="y"),
    roc_chart([]),
    histogram_chart([1, 10, 100], [HistogramSeries("a", [0, 0])], title="H", x_label="x"),
    histogram_chart([1, 10], [], title="H", x_label="x"),
])
def test_no_data_gives_a_clear_empty_chart(svg: str) -> None:
    root = parse(svg)
    assert root.get("data-empty") == "true"
    (message,) = elements(root, "text", "no-data")
    assert message.text and ("no data" in message.text or "no ROC" in message.text)
    assert not elements(root, "path", "series")
