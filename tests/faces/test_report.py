"""``fediot report``: a real run's report, opened in a real headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fediot.faces.cli.main  # noqa: F401  (registers every command)
from federated_data import device_rows, small_run_config, write_uci_dataset
from fediot.core.catalog import DEVICES, client_label
from fediot.core.config import Config
from fediot.core.io import write_features
from fediot.core.metrics import roc_curve_from_histograms
from fediot.core.model import ErrorStats, threshold_quantile
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import local_summary, run_centralised, run_local, simulate
from fediot.faces.cli.app import app, console, err_console
from fediot.faces.report import render_report, report_summary, write_report
from fediot.faces.report.html import BAND_QUANTILES, TPR_AT_FPR, system_totals
from fediot.faces.report.svg import number_text

ROUNDS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3)
    # gafgyt.udp attacks close to benign traffic, so ROC curves and histograms overlap
    for device in DEVICES[:3]:
        rows = device_rows(device.uci_id, 150, None, seed=7)
        rows[:, :20] *= 1.3
        write_features(root / device.name / "gafgyt_attacks" / "udp.csv", rows)
    return root


def config(dataset: Path, runs: Path) -> Config:
    # one global threshold: the threshold chart's single reference line is what is checked
    return small_run_config(dataset, runs, **{
        "train_args.comm_round": ROUNDS, "validation_args.frequency_of_the_test": 1,
        "detection_args.threshold_mode": "global"})


@pytest.fixture(scope="module")
def run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunView:
    """A finished 3-round federated run with its comparison.json."""
    cfg = config(dataset, tmp_path_factory.mktemp("runs"))
    result, folder = simulate(cfg)
    folder.save_comparison({"federated": result.evaluation,
                            "centralised": run_centralised(cfg).evaluation,
                            "local": local_summary(run_local(cfg))})
    return RunView(folder.root)


@pytest.fixture(scope="module")
def default_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunView:
    """A finished run with the default detection settings: a threshold per device, rounds not
    evaluated during training (so no per-round threshold exists)."""
    cfg = small_run_config(dataset, tmp_path_factory.mktemp("default-runs"))
    assert cfg.detection_args.threshold_mode == "per_device"
    assert cfg.validation_args.frequency_of_the_test == 0
    _, folder = simulate(cfg)
    write_report(RunView(folder.root))
    return RunView(folder.root)


@pytest.fixture(scope="module")
def results(run: RunView) -> dict[str, Any]:
    data = run.results()
    assert data is not None
    return data


@pytest.fixture(scope="module")
def report(run: RunView) -> Path:
    return write_report(run)


@pytest.fixture
def page(browser_page: Any, report: Path) -> Any:
    requests: list[str] = []
    browser_page.on("request", lambda request: requests.append(request.url))
    browser_page.goto(report.as_uri())
    browser_page.requests = requests
    return browser_page


DEVICE_IDS = [d.name for d in DEVICES[:3]]


def path_points(d: str) -> list[tuple[float, float]]:
    assert re.fullmatch(r"[MLZ0-9.,\s-]+", d), d
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def plot_box(page: Any, chart: str) -> dict[str, float]:
    box: dict[str, float] = page.eval_on_selector(
        f"{chart} rect.plot-area",
        "r => ({x: r.x.baseVal.value, y: r.y.baseVal.value, width: r.width.baseVal.value,"
        " height: r.height.baseVal.value})")
    return box


def test_report_is_one_self_contained_file(run: RunView, report: Path, page: Any) -> None:
    assert report == run.root / "report.html"
    assert not list(run.root.glob("*.tmp")) and not list(run.root.glob(".*.tmp"))
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"@import|url\(", text)
    assert "Content-Security-Policy" in text and "<script" not in text
    # nothing but the page itself was requested
    assert page.requests == [report.as_uri()]
    links = page.eval_on_selector_all("[href]", "els => els.map(e => e.getAttribute('href'))")
    assert links and all(link.startswith("#") for link in links)
    assert page.eval_on_selector_all("[src]", "els => els.length") == 0


def test_every_chart_kind_is_drawn_inside_its_frame(page: Any) -> None:
    kinds = page.eval_on_selector_all(
        "svg.chart", "els => els.map(e => [e.dataset.chart, e.dataset.empty || ''])")
    counts = {kind: sum(1 for k, _ in kinds if k == kind)
              for kind in ("line", "bars", "roc", "histogram", "ranges")}
    assert counts["line"] == 3 and counts["roc"] == 1 and counts["histogram"] == 3
    assert counts["ranges"] == 1
    assert counts["bars"] >= 2 + 3 + 1  # TPR, FPR; 3+ system figures; comparison
    assert not [k for k, empty in kinds if empty], "no chart of this run should be empty"
    paths = page.eval_on_selector_all(
        "svg.chart path.series",
        "els => els.map(e => [e.closest('svg').dataset.chart, e.dataset.series,"
        " e.getAttribute('d'), Array.from(e.closest('svg').viewBox.baseVal ?"
        " [e.closest('svg').viewBox.baseVal.width, e.closest('svg').viewBox.baseVal.height]"
        " : [])])")
    assert len(paths) >= 1 + 4 + 4 + 6  # loss, round metrics, ROC, 3 × 2 histograms
    for chart, series, d, (width, height) in paths:
        points = path_points(d)
        assert len(set(points)) >= 2, (chart, series, d)
        assert all(0 <= x <= width and 0 <= y <= height for x, y in points), (chart, series)
    titles = page.eval_on_selector_all("svg.chart > title", "els => els.map(e => e.textContent)")
    assert len(titles) == len(kinds) and all(titles)


def log_fpr(page: Any, chart: str, box: dict[str, float], x: float) -> float:
    """The FPR at pixel ``x`` of a log-FPR chart (its domain is in data-x-min/max)."""
    lo, hi = (float(page.eval_on_selector(chart, f"s => s.dataset.{k}")) for k in ("xMin",
                                                                                  "xMax"))
    share = (x - box["x"]) / box["width"]
    return 10.0 ** (math.log10(lo) + share * (math.log10(hi) - math.log10(lo)))


def test_roc_curves_per_device_and_pooled_match_the_results(
        page: Any, results: dict[str, Any]) -> None:
    chart = "svg[data-chart=roc]"
    curves = page.eval_on_selector_all(
        f"{chart} path.series",
        "els => els.map(e => [e.dataset.series, e.dataset.auc, e.getAttribute('d')])")
    assert [c[0] for c in curves] == [*DEVICE_IDS, "pooled"]
    box = plot_box(page, chart)
    evaluation = results["evaluation"]
    # a log FPR axis whose floor lies below one benign row's FPR of all devices together
    benign_rows = sum(results["error_stats"][d]["benign"]["n"] for d in DEVICE_IDS)
    floor = float(page.eval_on_selector(chart, "s => s.dataset.fprFloor"))
    assert float(page.eval_on_selector(chart, "s => s.dataset.xMin")) == floor
    assert floor <= 1 / benign_rows and math.log10(floor) == round(math.log10(floor))
    ticks = page.eval_on_selector_all(f"{chart} g.axis[data-axis=x] g.tick",
                                      "els => els.map(e => Number(e.dataset.value))")
    assert ticks[0] == pytest.approx(floor) and ticks[-1] == 1.0
    for name, auc, d in curves:
        expected = (evaluation["pooled"] if name == "pooled" else
                    evaluation["devices"][name])["roc_auc"]
        assert float(auc) == pytest.approx(expected, abs=1e-9)
        # the drawn curve, read back through the log axis, encloses the same area (FPR 0 is
        # drawn at the floor: at most `floor` more)
        points = [(log_fpr(page, chart, box, x), (box["y"] + box["height"] - y) / box["height"])
                  for x, y in path_points(d)]
        area = sum((x1 - x0) * (y0 + y1) / 2
                   for (x0, y0), (x1, y1) in pairwise(points))
        assert area == pytest.approx(expected, abs=2e-3 + floor)
    assert 0.55 < evaluation["pooled"]["roc_auc"] < 0.99  # a curve worth drawing
    legend = page.eval_on_selector_all(
        f"{chart} .legend-item text", "els => els.map(e => e.textContent)")
    assert f"all devices (AUC {evaluation['pooled']['roc_auc']:.4f})" in legend
    assert f"logarithmic from {number_text(floor)} to 1" in page.inner_text(
        "[data-note=roc-axis]")


def test_roc_table_has_one_auc_column_and_operating_points(
        page: Any, results: dict[str, Any]) -> None:
    headers = page.eval_on_selector_all("table[data-table=roc] thead th",
                                        "els => els.map(e => e.textContent)")
    assert headers == ["device", "ROC AUC", *(f"TPR at FPR ≤ {100 * x:g}\u00a0%"
                                              for x in TPR_AT_FPR)]
    assert not any("json" in h or "curve" in h for h in headers)
    rows = page.eval_on_selector_all(
        "table[data-table=roc] tbody tr",
        "els => els.map(e => [e.dataset.key, Array.from(e.querySelectorAll('td'),"
        " c => c.textContent)])")
    assert [key for key, _ in rows] == [*DEVICE_IDS, "pooled"]
    stats = {d: [ErrorStats.from_dict(results["error_stats"][d][k]) for k in ("benign",
                                                                          "attack")]
             for d in DEVICE_IDS}
    stats["pooled"] = [ErrorStats.pool(pair[i] for pair in stats.values()) for i in (0, 1)]
    for key, cells in rows:
        metrics = results["evaluation"]["pooled" if key == "pooled" else "devices"]
        auc = (metrics if key == "pooled" else metrics[key])["roc_auc"]
        fpr, tpr = roc_curve_from_histograms(stats[key][0].hist, stats[key][1].hist)
        expected = [f"{100 * tpr[fpr <= x + 1e-12].max():.2f}\u00a0%" for x in TPR_AT_FPR]
        assert cells == [f"{auc:.4f}", *expected]
    aucs = {cells[0] for _, cells in rows[:-1]}
    if len({round(results["evaluation"]["devices"][d]["roc_auc"], 4) for d in DEVICE_IDS}) > 1:
        assert len(aucs) > 1  # devices that differ show different numbers


def test_bars_show_missed_attacks_and_false_alarms_zoomed(
        page: Any, results: dict[str, Any]) -> None:
    devices = results["evaluation"]["devices"]
    pooled = results["evaluation"]["pooled"]
    for figure, key, rate in (("bars-missed", "recall", lambda v: 1.0 - v),
                              ("bars-fpr", "fpr", lambda v: v)):
        chart = f"figure[data-figure={figure}] svg"
        box = plot_box(page, chart)
        y_max = float(page.eval_on_selector(chart, "s => s.dataset.yMax"))
        bars = page.eval_on_selector_all(
            f"{chart} rect.bar", "els => els.map(e => [e.dataset.series, e.dataset.group,"
            " Number(e.dataset.value), e.getBBox().height, e.getBBox().y + e.getBBox().height])")
        drawn = {(series, group): (value, height, bottom)
                 for series, group, value, height, bottom in bars}
        expected_values = []
        for device in DEVICE_IDS:
            for kind in ("rows", "window_vote"):
                value, height, bottom = drawn[(kind, client_label(device))]
                assert value == rate(devices[device][kind][key])
                assert height == pytest.approx(value / y_max * box["height"], abs=0.02)
                assert bottom == pytest.approx(box["y"] + box["height"], abs=0.02)
                expected_values.append(value)
        assert drawn[("window_vote", "all devices")][0] == rate(pooled["window_vote"][key])
        # the axis is zoomed to the largest rate (one tick step above it at most), not 100 %
        largest = max(v for v, _, _ in drawn.values())
        assert 0 < largest <= y_max <= 2 * largest + 1e-12
        # per-device rates that differ give bars of different heights
        per_row = [drawn[("rows", client_label(d))] for d in DEVICE_IDS]
        if len({v for v, _, _ in per_row}) > 1:
            assert len({round(h, 2) for _, h, _ in per_row}) > 1
    title = page.text_content("figure[data-figure=bars-missed] svg > text.chart-title")
    assert title == "Missed attacks (1 − TPR) per device"


def test_histograms_mark_each_device_threshold(page: Any, results: dict[str, Any]) -> None:
    for device in DEVICE_IDS:
        chart = f"figure[data-device={device}] svg[data-chart=histogram]"
        series = page.eval_on_selector_all(f"{chart} path.series",
                                           "els => els.map(e => [e.dataset.series,"
                                           " Number(e.dataset.total)])")
        stats = results["error_stats"][device]
        assert series == [["benign", stats["benign"]["n"]], ["attack", stats["attack"]["n"]]]
        marker = page.eval_on_selector(
            f"{chart} line.reference[data-reference=threshold]",
            "l => [Number(l.dataset.value), l.x1.baseVal.value]")
        assert marker[0] == results["thresholds"]["per_device"][device]
        box = plot_box(page, chart)
        assert box["x"] < marker[1] < box["x"] + box["width"]
        ticks = page.eval_on_selector_all(
            f"{chart} g.axis[data-axis=x] g.tick text", "els => els.map(e => e.innerHTML)")
        assert len(ticks) >= 2
        assert_one_notation(ticks)


def assert_one_notation(ticks: Sequence[str]) -> None:
    """Every tick label of one axis is a plain decimal, or every one a power of ten
    (``10<tspan>k</tspan>``), or every one ``m×10<tspan>k</tspan>``: never mixed."""
    kinds = {"power" if re.fullmatch(r'10<tspan[^>]*>-?\d+</tspan>', t) else
             "scientific" if re.fullmatch(r'[\d.]+×10<tspan[^>]*>-?\d+</tspan>', t) else
             "plain" if re.fullmatch(r"[\d.,]+", t) else f"other: {t}" for t in ticks}
    assert len(kinds) == 1 and not next(iter(kinds)).startswith("other"), ticks


def test_every_log_axis_uses_one_notation(page: Any) -> None:
    axes = page.eval_on_selector_all(
        "svg.chart g.axis", "els => els.map(a => Array.from(a.querySelectorAll('g.tick text'),"
        " t => t.innerHTML))")
    assert len(axes) >= 10
    for ticks in axes:
        if ticks:
            assert_one_notation([t.replace("%", "") for t in ticks])


def test_training_charts_and_threshold_note(page: Any, run: RunView,
                                            results: dict[str, Any]) -> None:
    loss = page.eval_on_selector("figure[data-figure=loss] path.series",
                                 "e => e.getAttribute('d')")
    assert len(path_points(loss)) == ROUNDS
    metrics = page.eval_on_selector_all("figure[data-figure=round-metrics] circle.point"
                                        "[data-series=f1_w]", "els => els.length")
    evaluated = [r for r in run.rounds() if r["evaluation"]]
    assert len(evaluated) == ROUNDS - 1  # the last round's evaluation is the final one
    assert metrics == len(evaluated) + 1
    figure = "figure[data-figure=thresholds]"
    # evaluated rounds record the thresholds they applied: one point per evaluated round
    assert page.eval_on_selector(figure, "f => f.dataset.perRound") == "yes"
    global_line = page.eval_on_selector(f"{figure} path.series[data-series=global]",
                                        "e => e.getAttribute('d')")
    assert len(path_points(global_line)) == len(evaluated)
    final = page.eval_on_selector(f"{figure} line.reference", "l => Number(l.dataset.value)")
    assert final == results["thresholds"]["global"]
    assert "Per-round thresholds are absent" not in page.inner_text(figure)


def band_values(stats: ErrorStats) -> list[float]:
    return [threshold_quantile(stats, q) for q in BAND_QUANTILES]


def check_threshold_placement(page: Any, results: dict[str, Any]) -> list[float]:
    """The thresholds vs scores chart: per device its bands equal the percentiles of the
    results.json histograms, its marker the device's threshold; returns the markers."""
    chart = "figure#threshold-placement svg[data-chart=ranges]"
    rows = page.eval_on_selector_all(
        f"{chart} g.range-row",
        "els => els.map(g => [g.dataset.row, Number(g.dataset.marker),"
        " Array.from(g.querySelectorAll('line.interval'), l => [l.dataset.series,"
        " Number(l.dataset.low), Number(l.dataset.middle), Number(l.dataset.high),"
        " l.x1.baseVal.value, l.x2.baseVal.value]),"
        " Array.from(g.querySelectorAll('line.marker'), l => l.x1.baseVal.value)])")
    assert [r[0] for r in rows] == DEVICE_IDS
    box = plot_box(page, chart)
    markers = []
    for device, marker, bands, marker_x in rows:
        assert marker == results["thresholds"]["per_device"][device]
        markers.append(marker)
        assert log_fpr(page, chart, box, marker_x[0]) == pytest.approx(marker, rel=1e-3)
        stats = results["error_stats"][device]
        expected = {
            "threshold_rows": band_values(ErrorStats.from_dict(
                results["threshold_stats"][device])),
            "benign": band_values(ErrorStats.from_dict(stats["benign"])),
            "attack": band_values(ErrorStats.from_dict(stats["attack"]))}
        assert [b[0] for b in bands] == list(expected)
        for name, low, middle, high, x1, x2 in bands:
            assert [low, middle, high] == expected[name]
            assert log_fpr(page, chart, box, x1) == pytest.approx(low, rel=1e-3)
            assert log_fpr(page, chart, box, x2) == pytest.approx(high, rel=1e-3)
        # the benign rows mostly lie below the threshold, the attack rows' median above it
        assert expected["threshold_rows"][1] < marker
    return markers


def test_thresholds_against_score_bands(page: Any, results: dict[str, Any]) -> None:
    markers = check_threshold_placement(page, results)
    assert len(set(markers)) == 1  # this run's threshold mode is global


def test_default_run_explains_and_shows_its_thresholds(
        default_run: RunView, browser_page: Any) -> None:
    results = default_run.results()
    assert results is not None
    browser_page.goto((default_run.root / "report.html").as_uri())
    # no per-round threshold exists: the training section says precisely why, no empty chart
    assert browser_page.eval_on_selector_all("figure[data-figure=thresholds]",
                                             "e => e.length") == 0
    note = browser_page.inner_text("#training [data-note=thresholds]")
    assert "validation_args.frequency_of_the_test = 0" in note
    assert "set once, after the last round" in note
    assert browser_page.eval_on_selector("#training [data-note=thresholds] a",
                                         "a => a.getAttribute('href')") == "#threshold-placement"
    assert not browser_page.eval_on_selector_all("svg.chart[data-empty]", "e => e.length")
    markers = check_threshold_placement(browser_page, results)
    assert len(set(markers)) == len(DEVICE_IDS)  # each device its own threshold
    # the histograms' threshold lines are the same numbers
    lines = browser_page.eval_on_selector_all(
        "figure[data-figure=histogram] line.reference", "els => els.map(l => Number("
        "l.dataset.value))")
    assert lines == markers


def test_visible_text_names_devices_and_facts(page: Any, run: RunView,
                                              results: dict[str, Any]) -> None:
    text = page.inner_text("body")
    for device in DEVICE_IDS:
        assert client_label(device) in text
    assert run.run_id in text and "FedAvg" in text and "inprocess" in text
    assert "Partial report" not in text
    pooled = results["evaluation"]["pooled"]
    cells = page.eval_on_selector_all("table[data-table=pooled] tr[data-key=window_vote] td",
                                      "els => els.map(e => e.textContent)")
    assert cells[0] == f"{100 * pooled['window_vote']['f1']:.2f}\u00a0%"
    assert page.title() == f"FedIoT run {run.run_id}"


PHONE_WIDTHS = (360, 390, 414)


@pytest.mark.parametrize("width", PHONE_WIDTHS)
def test_phone_widths_do_not_scroll_sideways(width: int, browser_page: Any, report: Path,
                                             default_run: RunView) -> None:
    for path in (report, default_run.root / "report.html"):
        browser_page.set_viewport_size({"width": width, "height": 800})
        browser_page.goto(path.as_uri())
        sizes = browser_page.evaluate(
            "() => [document.documentElement.scrollWidth, document.body.scrollWidth,"
            " window.innerWidth]")
        assert sizes[0] <= sizes[2] and sizes[1] <= sizes[2], (path.name, sizes)
        # every chart is on screen whole: visible, drawn at a readable size, inside the page
        charts = browser_page.eval_on_selector_all(
            "svg.chart", "els => els.map(e => { const r = e.getBoundingClientRect();"
            " const s = getComputedStyle(e); return [e.dataset.chart, r.left, r.right,"
            " r.width, r.height, s.visibility, s.display]; })")
        assert len(charts) >= 10
        for kind, left, right, chart_width, height, visibility, display in charts:
            assert visibility == "visible" and display != "none", kind
            assert left >= 0 and right <= width + 0.5, (kind, left, right)
            assert chart_width >= 0.8 * (width - 40) and height > 50, (kind, chart_width)
        # wide tables scroll inside their own box, which fits the page
        boxes = browser_page.eval_on_selector_all(
            "div.table-scroll", "els => els.map(e => e.getBoundingClientRect().right)")
        assert boxes and all(right <= width + 0.5 for right in boxes)


def test_run_id_never_breaks_inside_a_part(browser_page: Any, report: Path,
                                           run: RunView) -> None:
    browser_page.set_viewport_size({"width": 360, "height": 800})
    browser_page.goto(report.as_uri())
    for where in ("h1 .run-id", "[data-fact=run] dd"):
        parts = browser_page.eval_on_selector_all(
            f"{where} .whole", "els => els.map(e => [e.textContent, e.getClientRects().length])")
        assert "".join(text for text, _ in parts) == run.run_id
        assert parts[0][0] == run.run_id[:16]  # the YYYYmmdd-HHMMSS- stamp is one part
        assert all(lines == 1 for _, lines in parts), parts  # each part on one line
    heights = browser_page.eval_on_selector(
        "h1 .run-id", "e => e.getClientRects().length")
    assert heights >= 1


def test_system_figures_per_device(page: Any, run: RunView) -> None:
    totals = system_totals(run.rounds())
    assert set(totals) == set(DEVICE_IDS)
    cpu = page.eval_on_selector_all(
        "figure[data-key=cpu_seconds] rect.bar", "els => els.map(e => Number(e.dataset.value))")
    assert cpu == [totals[d]["cpu_seconds"] for d in DEVICE_IDS]
    peak = page.eval_on_selector_all(
        "figure[data-key=peak_rss_bytes] rect.bar", "els => els.map(e => Number(e.dataset.value))")
    peaks = [max(r["system"][d]["peak_rss_bytes"] for r in run.rounds()) for d in DEVICE_IDS]
    # shown in the largest binary unit the biggest value reaches (MiB, or GiB past 1 GiB)
    factor = next(f for f in (2**30, 2**20, 2**10, 1) if max(peaks) >= f)
    assert peak == pytest.approx([b / factor for b in peaks])
    keys = {k for r in run.rounds() for figures in r["system"].values() for k in figures}
    shown = page.eval_on_selector_all("figure[data-figure=system]",
                                      "els => els.map(e => e.dataset.key)")
    assert set(shown) == keys  # every numeric key, whatever the engine records
    assert "CPU time (total, s)" in page.inner_text("table[data-table=system]")


def test_comparison_table_and_chart(page: Any, run: RunView) -> None:
    comparison = run.comparison()
    assert comparison is not None
    series = page.eval_on_selector_all(
        "figure[data-figure=comparison] rect.bar",
        "els => els.map(e => [e.dataset.series, e.dataset.group, Number(e.dataset.value)])")
    expected = [[mode, client_label(d) if d else "all devices",
                 (comparison[mode]["devices"][d] if d else comparison[mode]["pooled"])
                 ["window_vote"]["f1"]]
                for mode in ("federated", "centralised", "local") for d in [*DEVICE_IDS, None]]
    assert series == [e for e in expected if e[2] is not None]
    assert len(series) >= 3 * len(DEVICE_IDS)
    header = page.inner_text("table[data-table=comparison] thead")
    assert all(mode in header for mode in ("federated", "centralised", "local"))


def test_screenshot_is_not_blank(page: Any) -> None:
    png = page.screenshot(full_page=True)
    page.goto("about:blank")
    colours = page.evaluate(
        """async (data) => {
            const img = new Image();
            img.src = 'data:image/png;base64,' + data;
            await img.decode();
            const canvas = document.createElement('canvas');
            canvas.width = img.width; canvas.height = img.height;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            const pixels = context.getImageData(0, 0, img.width, img.height).data;
            const seen = new Set();
            for (let i = 0; i < pixels.length; i += 4)
                seen.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
            return [img.width, img.height, seen.size, seen.has(0x4e79a7), seen.has(0xf28e2b)];
        }""", base64.b64encode(png).decode())
    width, height, distinct, blue, orange = colours
    assert width >= 800 and height > 2000
    assert distinct > 50 and blue and orange  # the bars' palette colours are on screen


class RunInterruptedError(Exception):
    """Stands for a crash in the middle of a run."""


class StopAfterRound:
    """An observer that stops the run after ``rounds`` rounds, as a crash would."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: Any) -> None:
        if record.server_round >= self.rounds:
            raise RunInterruptedError

    def on_logs(self, lines: Sequence[Any]) -> None:
        pass


def test_a_run_without_results_gets_a_partial_report(
        dataset: Path, tmp_path: Path, browser_page: Any) -> None:
    with pytest.raises(RunInterruptedError):
        simulate(config(dataset, tmp_path / "runs"), StopAfterRound(2))
    (root,) = (tmp_path / "runs").iterdir()
    view = RunView(root)
    assert view.results() is None and len(view.rounds()) == 2
    path = write_report(view, tmp_path / "out" / "partial.html")
    browser_page.goto(path.as_uri())
    text = browser_page.inner_text("body")
    assert "Partial report" in text and "2 of 3 rounds" in text
    assert browser_page.title().endswith("(partial)")
    loss = browser_page.eval_on_selector("figure[data-figure=loss] path.series",
                                         "e => e.getAttribute('d')")
    assert len(path_points(loss)) == 2
    assert browser_page.eval_on_selector_all("svg[data-chart=roc]", "e => e.length") == 0
    assert "ROC curves appear when the run finishes" in text
    assert "partial report" in report_summary(view)


def test_recorded_per_round_thresholds_are_plotted(run: RunView, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run.root, tmp_path / run.run_id))
    lines = []
    for record in run.rounds():
        if record["evaluation"]:
            value = 1.0 + record["round"] / 10
            record["evaluation"]["thresholds"] = {
                "mode": "per_device", "global": value,
                "per_device": {d: value * (i + 1) for i, d in enumerate(DEVICE_IDS)}}
        lines.append(json.dumps(record) + "\n")
    (copy / "metrics.jsonl").write_text("".join(lines))
    page = render_report(RunView(copy))
    figure = re.search(r'<figure data-figure="thresholds".*?</figure>', page, re.DOTALL)
    assert figure is not None and 'data-per-round="yes"' in figure[0]
    assert re.findall(r'class="series" data-series="([^"]+)"', figure[0]) == [
        "global", *DEVICE_IDS]
    assert "Per-round thresholds are absent" not in figure[0]


def test_devices_left_out_are_named_with_the_reason(run: RunView, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run.root, tmp_path / run.run_id))
    results = json.loads((copy / "results.json").read_text())
    results["excluded_devices"] = {DEVICE_IDS[0]: "no reply to its last training round "
                                                  "(round 3)"}
    (copy / "results.json").write_text(json.dumps(results))
    note = re.search(r'<p class="note" data-note="excluded">(.*?)</p>', render_report(
        RunView(copy)))
    assert note is not None
    assert note[1] == html.escape(
        "Left out of the threshold and evaluation (train_args.stale_after_missed_rounds): "
        f"{client_label(DEVICE_IDS[0])}: no reply to its last training round (round 3).")
    assert 'data-note="excluded"' not in render_report(run)


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 500)
    monkeypatch.setattr(err_console, "width", 500)


def test_cli_writes_the_latest_run_report(run: RunView, tmp_path: Path,
                                          wide_console: None) -> None:
    result = CliRunner().invoke(app, ["report", "latest", "--runs-dir", str(run.root.parent)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"report: {run.root / 'report.html'}"
    assert lines[1].startswith(f"run {run.run_id}: finished, {ROUNDS}/{ROUNDS} rounds")
    assert len(lines) == 2
    output = tmp_path / "elsewhere" / "r.html"
    prefix = run.run_id[:10]
    result = CliRunner().invoke(app, ["report", prefix, "--runs-dir", str(run.root.parent),
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text().startswith("<!DOCTYPE html>")


def test_cli_errors_are_one_line(run: RunView, tmp_path: Path, wide_console: None) -> None:
    result = CliRunner().invoke(app, ["report", "no-such-run", "--runs-dir",
                                      str(run.root.parent)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no run 'no-such-run' under {run.root.parent}"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["report", str(run.root), "--output",
                                      str(blocker / "report.html")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {blocker / 'report.html'}: cannot write the report")
