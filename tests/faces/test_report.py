"""``fediot report``: a real run's report, opened in a real headless Chromium."""

from __future__ import annotations

import base64
import json
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
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import local_summary, run_centralised, run_local, simulate
from fediot.faces.cli.app import app, console, err_console
from fediot.faces.report import render_report, report_summary, write_report
from fediot.faces.report.html import system_totals

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
              for kind in ("line", "bars", "roc", "histogram")}
    assert counts["line"] == 3 and counts["roc"] == 1 and counts["histogram"] == 3
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


def test_roc_curves_per_device_and_pooled_match_the_results(
        page: Any, results: dict[str, Any]) -> None:
    curves = page.eval_on_selector_all(
        "svg[data-chart=roc] path.series",
        "els => els.map(e => [e.dataset.series, e.dataset.auc, e.getAttribute('d')])")
    assert [c[0] for c in curves] == [*DEVICE_IDS, "pooled"]
    box = plot_box(page, "svg[data-chart=roc]")
    evaluation = results["evaluation"]
    for name, auc, d in curves:
        expected = (evaluation["pooled"] if name == "pooled" else
                    evaluation["devices"][name])["roc_auc"]
        assert float(auc) == pytest.approx(expected, abs=1e-9)
        # the drawn curve encloses the same area
        points = [((x - box["x"]) / box["width"], (box["y"] + box["height"] - y) / box["height"])
                  for x, y in path_points(d)]
        area = sum((x1 - x0) * (y0 + y1) / 2
                   for (x0, y0), (x1, y1) in pairwise(points))
        assert area == pytest.approx(expected, abs=2e-3)
    assert 0.55 < evaluation["pooled"]["roc_auc"] < 0.99  # a curve worth drawing
    legend = page.eval_on_selector_all(
        "svg[data-chart=roc] .legend-item text", "els => els.map(e => e.textContent)")
    assert f"all devices (AUC {evaluation['pooled']['roc_auc']:.4f})" in legend


def test_bar_heights_match_per_device_rates(page: Any, results: dict[str, Any]) -> None:
    devices = results["evaluation"]["devices"]
    for figure, key in (("bars-tpr", "recall"), ("bars-fpr", "fpr")):
        chart = f"figure[data-figure={figure}] svg"
        box = plot_box(page, chart)
        y_max = float(page.eval_on_selector(chart, "s => s.dataset.yMax"))
        bars = page.eval_on_selector_all(
            f"{chart} rect.bar", "els => els.map(e => [e.dataset.series, e.dataset.group,"
            " Number(e.dataset.value), e.getBBox().height, e.getBBox().y + e.getBBox().height])")
        drawn = {(series, group): (value, height, bottom)
                 for series, group, value, height, bottom in bars}
        for device in DEVICE_IDS:
            for kind in ("rows", "window_vote"):
                value, height, bottom = drawn[(kind, client_label(device))]
                assert value == devices[device][kind][key]
                assert height == pytest.approx(value / y_max * box["height"], abs=0.02)
                assert bottom == pytest.approx(box["y"] + box["height"], abs=0.02)
        pooled = results["evaluation"]["pooled"]["window_vote"][key]
        assert drawn[("window_vote", "all devices")][0] == pooled
    assert any(devices[d]["rows"]["fpr"] > 0 for d in DEVICE_IDS)  # some FPR bar has height


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
            f"{chart} g.axis[data-axis=x] g.tick", "els => els.map(e => e.textContent)")
        assert len(ticks) >= 2


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
    assert cells[0] == f"{100 * pooled['window_vote']['f1']:.2f} %"
    assert page.title() == f"FedIoT run {run.run_id}"


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
